//! Serializable snapshot of the BFD sessions for the admin API and for the owners (BGP,
//! OSPF) that watch a peer's state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::packet::{Diag, State};
use super::sessions::{Entry, Sessions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BfdSessionStatus {
    pub peer: Ipv4Addr,
    pub local: Ipv4Addr,
    pub interface: Option<String>,
    pub owners: BTreeSet<String>,
    pub state: State,
    pub remote_state: State,
    pub local_diag: Diag,
    pub remote_diag: Diag,
    pub local_discr: u32,
    pub remote_discr: u32,
    /// The negotiated transmit interval before jitter.
    pub tx_interval_ms: u64,
    /// None before the first packet from the peer.
    pub detect_time_ms: Option<u64>,
    /// Milliseconds since the Unix epoch when the session last came Up; None unless Up.
    pub up_since_unix_ms: Option<u64>,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets from this peer that were discarded, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Packets the kernel refused to send.
    pub send_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BfdStatus {
    pub sessions: Vec<BfdSessionStatus>,
    /// Held administratively down (drain or shutdown).
    pub admin_down: bool,
    /// Discarded packets that could not be attributed to a session, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl BfdStatus {
    /// The same status with every counter cleared: what changes only on events.
    pub fn without_counters(&self) -> BfdStatus {
        let mut s = self.clone();
        s.dropped.clear();
        for x in &mut s.sessions {
            x.packets_in = 0;
            x.packets_out = 0;
            x.send_errors = 0;
            x.dropped.clear();
        }
        s
    }

    /// The session with `peer`, if any.
    pub fn session(&self, peer: Ipv4Addr) -> Option<&BfdSessionStatus> {
        self.sessions.iter().find(|s| s.peer == peer)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn session_status(e: &Entry) -> BfdSessionStatus {
    let s = &e.session;
    BfdSessionStatus {
        peer: e.peer,
        local: e.local,
        interface: e.interface.clone(),
        owners: e.owners.clone(),
        state: s.state(),
        remote_state: s.remote_state(),
        local_diag: s.local_diag(),
        remote_diag: s.remote_diag(),
        local_discr: s.local_discr(),
        remote_discr: s.remote_discr(),
        tx_interval_ms: u64::from(s.negotiated_tx_us()) / 1000,
        detect_time_ms: s.detection_time().map(ms),
        up_since_unix_ms: e
            .up_since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(ms),
        packets_in: e.packets_in,
        packets_out: e.packets_out,
        dropped: e.dropped.clone(),
        send_errors: e.send_errors,
    }
}

pub(crate) fn build(sessions: &Sessions, dropped: &BTreeMap<String, u64>) -> BfdStatus {
    BfdStatus {
        sessions: sessions.entries().map(session_status).collect(),
        admin_down: sessions.admin_down(),
        dropped: dropped.clone(),
    }
}
