//! What `pgcast status` shows of the BGP speaker.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::anycast::announce::PrefixVerdict;
use crate::config::BgpNeighborConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BgpStatus {
    pub local_as: u32,
    pub router_id: Option<Ipv4Addr>,
    pub neighbors: Vec<BgpNeighborStatus>,
    /// Connections to the BGP port closed at once, by reason (absent in older documents).
    #[serde(default)]
    pub refused_connections: BgpRefusedCounts,
}

/// Connections the listener closed at once, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BgpRefusedCounts {
    /// From an address that is not a configured neighbour.
    pub not_a_neighbor: u64,
    /// From a neighbour whose actor had no room for another connection.
    pub neighbor_busy: u64,
    /// `accept` failed (out of descriptors, usually).
    pub accept_failed: u64,
}

/// Why the listener closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpRefusal {
    NotANeighbor,
    NeighborBusy,
    AcceptFailed,
}

/// The listener's counters, shared with the status source.
#[derive(Debug, Default)]
pub struct BgpRefusedCounters {
    not_a_neighbor: AtomicU64,
    neighbor_busy: AtomicU64,
    accept_failed: AtomicU64,
}

impl BgpRefusedCounters {
    pub fn count(&self, why: BgpRefusal) {
        let c = match why {
            BgpRefusal::NotANeighbor => &self.not_a_neighbor,
            BgpRefusal::NeighborBusy => &self.neighbor_busy,
            BgpRefusal::AcceptFailed => &self.accept_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BgpRefusedCounts {
        BgpRefusedCounts {
            not_a_neighbor: self.not_a_neighbor.load(Ordering::Relaxed),
            neighbor_busy: self.neighbor_busy.load(Ordering::Relaxed),
            accept_failed: self.accept_failed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpNeighborStatus {
    pub address: Ipv4Addr,
    pub remote_as: u32,
    /// RFC 4271 section 8.2.2 state name.
    pub state: String,
    /// Seconds since the session reached Established.
    pub uptime_s: Option<u64>,
    #[serde(skip)]
    pub established_at: Option<Instant>,
    /// Negotiated hold time while a session is open; otherwise the configured one.
    pub hold_time: u16,
    /// Who opened the current connection: "local" or "remote".
    pub connection: Option<String>,
    pub local_address: Option<Ipv4Addr>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    /// Prefixes the peer has from us now.
    pub sent: Vec<String>,
    /// Every configured prefix: announced to this neighbour or not, and why.
    pub prefixes: Vec<BgpPrefixStatus>,
    /// The routes carry GRACEFUL_SHUTDOWN (draining).
    pub graceful_shutdown: bool,
    pub last_error: Option<String>,
    pub bfd: bool,
    /// The address families the current session negotiated ("ipv4-unicast",
    /// "ipv6-unicast"; RFC 4760 §8); empty without a session (absent in older documents).
    #[serde(default)]
    pub families: Vec<String>,
}

pub const IPV4_UNICAST: &str = "ipv4-unicast";
pub const IPV6_UNICAST: &str = "ipv6-unicast";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpPrefixStatus {
    pub prefix: String,
    pub announced: bool,
    pub reason: String,
}

impl BgpNeighborStatus {
    /// A neighbour with no session yet; the actor overrides what its session knows.
    pub fn idle(n: &BgpNeighborConfig) -> Self {
        BgpNeighborStatus {
            address: n.address,
            remote_as: n.remote_as,
            state: "Idle".into(),
            uptime_s: None,
            established_at: None,
            hold_time: n.hold_time,
            connection: None,
            local_address: None,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            sent: Vec::new(),
            prefixes: Vec::new(),
            graceful_shutdown: false,
            last_error: None,
            bfd: n.bfd,
            families: Vec::new(),
        }
    }

    /// Fills the fields that depend on the time of the query and on the health verdicts.
    pub fn complete(&mut self, now: Instant, verdicts: &[PrefixVerdict]) {
        self.uptime_s = self
            .established_at
            .map(|t| now.saturating_duration_since(t).as_secs());
        self.prefixes = verdicts
            .iter()
            .map(|v| {
                let prefix = format!("{}/{}", v.prefix, v.prefix_len);
                let announced = self.sent.contains(&prefix);
                let reason = if announced && self.graceful_shutdown {
                    format!("draining: sent with GRACEFUL_SHUTDOWN; {}", v.reason)
                } else if announced || !v.announce {
                    v.reason.clone()
                } else if self.state == "Established" {
                    let family = if v.prefix.is_ipv6() {
                        IPV6_UNICAST
                    } else {
                        IPV4_UNICAST
                    };
                    if self.families.iter().any(|f| f == family) {
                        format!("being announced; {}", v.reason)
                    } else {
                        format!(
                            "not sent: the session did not negotiate {family} (RFC 4760); {}",
                            v.reason
                        )
                    }
                } else {
                    format!("session {}; {}", self.state, v.reason)
                };
                BgpPrefixStatus {
                    prefix,
                    announced,
                    reason,
                }
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn verdict(prefix: &str, len: u8) -> PrefixVerdict {
        PrefixVerdict {
            prefix: prefix.parse().expect("address"),
            prefix_len: len,
            announce: true,
            cost: 10,
            reason: "healthy".into(),
        }
    }

    #[test]
    fn a_prefix_of_a_family_the_session_did_not_negotiate_says_so() {
        let text = "[admin]\nsocket = \"/tmp/x.sock\"\n[[listeners]]\nname = \"rw\"\n\
                    address = \"127.0.0.1:6432\"\nrole = \"auto\"\n[[backends]]\nname = \"pg\"\n\
                    host = \"127.0.0.1\"\n[[users]]\nname = \"app\"\npassword = \"x\"\n[bgp]\n\
                    local_as = 65001\nrouter_id = \"198.18.1.94\"\n[[bgp.neighbors]]\n\
                    address = \"198.18.1.90\"\nremote_as = 65000\n";
        let config = Config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        let mut s = BgpNeighborStatus::idle(&config.bgp.expect("bgp").neighbors[0]);
        s.state = "Established".into();
        s.families = vec![IPV4_UNICAST.into()];
        s.complete(
            Instant::now(),
            &[verdict("198.18.2.0", 32), verdict("2001:db8:2::1", 128)],
        );
        assert_eq!(s.prefixes[0].reason, "being announced; healthy");
        assert_eq!(
            s.prefixes[1].reason,
            "not sent: the session did not negotiate ipv6-unicast (RFC 4760); healthy"
        );
    }
}
