//! The OSPFv2 instance: configuration, inputs/actions, dispatch of received packets to
//! interfaces and neighbours, timers, and ownership of the LSDB (RFC 2328 §8.2, §9, §10).
//!
//! Sans-IO: time only enters as `now` arguments; everything we want sent is returned as
//! `Action::Send`. The actor encodes with the interface's authentication and wakes us at
//! `next_deadline()`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::auth::{AuthConfig, Received};
use super::interface::{IfState, Interface};
use super::lsa::{LsaKey, Options};
use super::lsdb::Lsdb;
use super::origin::Origin;
use super::packet::{Packet, PacketBody, ALL_D_ROUTERS};

pub use super::status::OspfStatus;

/// Errors of the instance layer (configuration problems; packets never produce errors, they are
/// dropped and counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstanceError {
    #[error("duplicate ifindex {0} in configuration")]
    DuplicateInterface(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NetworkType {
    Broadcast,
    PointToPoint,
}

#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    pub name: String,
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub network_type: NetworkType,
    /// Seconds, RFC 2328 Appendix C.3.
    pub hello_interval: u16,
    pub dead_interval: u32,
    pub retransmit_interval: u16,
    pub transmit_delay: u16,
    pub cost: u16,
    /// Router priority; 0 = never DR/BDR (our default).
    pub priority: u8,
    pub mtu: u16,
    pub mtu_ignore: bool,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone)]
pub struct ExternalConfig {
    pub type2: bool,
    pub metric: u32,
    pub tag: u32,
}

#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub router_id: Ipv4Addr,
    pub area_id: Ipv4Addr,
    pub interfaces: Vec<InterfaceConfig>,
    /// Bound on the LSDB size; beyond it new LSAs are dropped and counted.
    pub lsdb_max_lsas: usize,
    /// Minimum time between two originations of the same LSA (RFC 2328 MinLSInterval).
    pub min_ls_interval: Duration,
    /// Some => announce prefixes as AS-External LSAs (and set the E bit), else as stub links.
    pub external: Option<ExternalConfig>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Announcement {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub cost: u16,
}

#[derive(Debug)]
pub enum Input {
    Packet {
        ifindex: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        received: Received,
    },
    /// Only counted, per reason.
    DecodeFailed {
        ifindex: u32,
        reason: &'static str,
    },
    Timer,
    /// The full desired set; re-originate if it changed.
    SetAnnouncements(Vec<Announcement>),
    /// Flush our LSAs (premature aging, MaxAge), then ShutdownComplete.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        ifindex: u32,
        dst: Ipv4Addr,
        packet: Packet,
    },
    ShutdownComplete,
}

/// Packet counters: drops per reason, sent/received per packet type.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub dropped: BTreeMap<String, u64>,
    pub sent: BTreeMap<String, u64>,
    pub received: BTreeMap<String, u64>,
}

impl Counters {
    pub(crate) fn drop(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_insert(0) += 1;
        // Any host on the segment can make us drop a packet: the counters keep every drop by
        // reason, the log a line per interval.
        crate::log_limited!(debug, reason, "ospf: packet dropped");
    }
    fn bump(map: &mut BTreeMap<String, u64>, name: &str) {
        *map.entry(name.to_string()).or_insert(0) += 1;
    }
}

/// State kept while shutting down (flushing our LSAs).
#[derive(Debug, Clone)]
pub(crate) struct ShutdownState {
    /// Keys we flushed; done when no neighbour still has one on its retransmission list.
    pub keys: BTreeSet<LsaKey>,
    /// One retransmit interval after the flush: give up waiting for acks.
    pub deadline: Instant,
    pub completed: bool,
}

pub struct Instance {
    pub(crate) router_id: Ipv4Addr,
    pub(crate) area_id: Ipv4Addr,
    pub(crate) min_ls_interval: Duration,
    pub(crate) external: Option<ExternalConfig>,
    pub(crate) interfaces: Vec<Interface>,
    pub(crate) lsdb: Lsdb,
    pub(crate) origin: Origin,
    pub(crate) counters: Counters,
    /// Actions produced while handling the current input.
    pub(crate) out: Vec<Action>,
    /// Interfaces on which a NeighborChange event is pending (§9.2), handled after the input.
    pub(crate) pending_nbr_change: BTreeSet<usize>,
    pub(crate) shutdown: Option<ShutdownState>,
    /// Source of initial DD sequence numbers (§10.8 wants them unique per adjacency attempt).
    pub(crate) dd_seq_seed: u32,
}

/// The options we advertise: only the E bit (§A.2: we are in a normal, non-stub area).
pub(crate) const OUR_OPTIONS: Options = Options(Options::E);

impl Instance {
    /// Build the instance; every configured interface comes up at once (InterfaceUp, §9.3).
    pub fn new(config: InstanceConfig, now: Instant) -> Instance {
        let mut inst = Instance {
            router_id: config.router_id,
            area_id: config.area_id,
            min_ls_interval: config.min_ls_interval,
            external: config.external,
            interfaces: Vec::new(),
            lsdb: Lsdb::new(config.lsdb_max_lsas),
            origin: Origin::default(),
            counters: Counters::default(),
            out: Vec::new(),
            pending_nbr_change: BTreeSet::new(),
            shutdown: None,
            dd_seq_seed: u32::from(config.router_id).rotate_left(16) ^ 0x5a5a_0000,
        };
        let mut seen = BTreeSet::new();
        for ic in config.interfaces {
            if !seen.insert(ic.ifindex) {
                tracing::warn!(
                    "ospf: {}",
                    InstanceError::DuplicateInterface(ic.ifindex).to_string()
                );
                continue;
            }
            inst.interfaces.push(Interface::new(ic, now));
        }
        for ifi in 0..inst.interfaces.len() {
            inst.interface_up(now, ifi);
        }
        inst.finish(now);
        // Hellos sent by interface_up are part of construction; the actor collects them with
        // the first Timer step (they are kept in `out`).
        inst
    }

    /// Feed one input; returns what must be sent.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        match input {
            Input::Packet {
                ifindex,
                src,
                dst,
                received,
            } => self.recv_packet(now, ifindex, src, dst, received),
            // Logged (within limits) and counted by `drop`, with its reason.
            Input::DecodeFailed { ifindex: _, reason } => self.counters.drop(reason),
            Input::Timer => self.timers(now),
            Input::SetAnnouncements(list) => self.origin.set_desired(list),
            Input::Shutdown => self.start_shutdown(now),
        }
        self.finish(now);
        // Hellos made due by this very input (election result, §9.4) go out with it rather
        // than one wake-up later.
        for ifi in 0..self.interfaces.len() {
            self.send_hello_if_due(now, ifi);
        }
        std::mem::take(&mut self.out)
    }

    /// Earliest instant at which `step(now, Input::Timer)` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        for ifc in &self.interfaces {
            add(ifc.next_deadline());
        }
        add(self.origin.next_deadline(self.min_ls_interval));
        add(self.lsdb.next_maxage());
        if let Some(s) = &self.shutdown {
            if !s.completed {
                add(Some(s.deadline));
            }
        }
        d
    }

    /// Work done after every input: pending interface events, LSA origination, MaxAge sweep.
    fn finish(&mut self, now: Instant) {
        self.process_neighbor_changes(now);
        self.progress_loading(now);
        self.reconcile_origination(now);
        self.age_lsdb(now);
        self.check_shutdown(now);
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queue a packet for sending, counting it by type.
    pub(crate) fn send(&mut self, ifi: usize, dst: Ipv4Addr, body: PacketBody) {
        let Some(ifc) = self.interfaces.get(ifi) else {
            return;
        };
        let ifindex = ifc.cfg.ifindex;
        Counters::bump(&mut self.counters.sent, body.name());
        self.out.push(Action::Send {
            ifindex,
            dst,
            packet: Packet {
                router_id: self.router_id,
                area_id: self.area_id,
                body,
            },
        });
    }

    /// §8.2: checks common to all packet types, then dispatch by type.
    fn recv_packet(
        &mut self,
        now: Instant,
        ifindex: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        received: Received,
    ) {
        let Some(ifi) = self
            .interfaces
            .iter()
            .position(|i| i.cfg.ifindex == ifindex)
        else {
            self.counters.drop("unknown_interface");
            return;
        };
        let Received {
            packet, crypto_seq, ..
        } = received;
        Counters::bump(&mut self.counters.received, packet.body.name());
        if packet.router_id == self.router_id {
            // Our own multicast looped back, or a router-id clash (§8.2).
            self.counters.drop("own_router_id");
            return;
        }
        if packet.area_id != self.area_id {
            self.counters.drop("area_mismatch");
            return;
        }
        let ifc = &self.interfaces[ifi];
        if ifc.state == IfState::Down {
            self.counters.drop("interface_down");
            return;
        }
        // §8.2: packets to AllDRouters are only for the DR and the Backup.
        if dst == ALL_D_ROUTERS && !matches!(ifc.state, IfState::DR | IfState::Backup) {
            self.counters.drop("not_dr");
            return;
        }
        if let PacketBody::Hello(hello) = packet.body {
            self.recv_hello(now, ifi, src, packet.router_id, crypto_seq, hello);
            return;
        }
        // Other packets must come from a known neighbour: by source address on broadcast,
        // by router id on point-to-point (§10.5, §8.2).
        let Some(rid) = ifc.find_neighbor(src, packet.router_id) else {
            self.counters.drop("unknown_neighbor");
            return;
        };
        if !self.check_crypto_seq(ifi, rid, crypto_seq) {
            return;
        }
        match packet.body {
            PacketBody::Hello(_) => {}
            PacketBody::DbDescription(dd) => self.recv_dd(now, ifi, rid, dd),
            PacketBody::LsRequest(keys) => self.recv_lsr(now, ifi, rid, &keys),
            PacketBody::LsUpdate(lsas) => self.recv_lsu(now, ifi, rid, lsas),
            PacketBody::LsAck(headers) => self.recv_ack(now, ifi, rid, &headers),
        }
    }

    /// RFC 2328 D.5.2 (replay protection): a crypto sequence number lower than the last one
    /// accepted from this neighbour is dropped. Equal is allowed (the RFC says "less than").
    pub(crate) fn check_crypto_seq(&mut self, ifi: usize, rid: Ipv4Addr, seq: Option<u32>) -> bool {
        let Some(seq) = seq else { return true };
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return true;
        };
        if let Some(last) = n.crypto_seq {
            if seq < last {
                self.counters.drop("crypto_seq_replay");
                return false;
            }
        }
        n.crypto_seq = Some(seq);
        true
    }

    /// All timer-driven work (§9, §10, §13, §14).
    fn timers(&mut self, now: Instant) {
        for ifi in 0..self.interfaces.len() {
            self.interface_timers(now, ifi);
            self.neighbor_timers(now, ifi);
            self.send_delayed_acks(now, ifi, false);
        }
        self.origin_timers(now);
    }

    /// MaxAge handling (§14): an LSA that reached MaxAge by aging is flooded once; any MaxAge
    /// LSA is removed once it is on no retransmission list and no neighbour is in
    /// Exchange/Loading (§14 conditions).
    fn age_lsdb(&mut self, now: Instant) {
        let keys = self.lsdb.maxage_keys(now);
        if keys.is_empty() {
            return;
        }
        let exchanging = self.interfaces.iter().any(|i| i.any_exchanging());
        for key in keys {
            let Some(e) = self.lsdb.get(&key) else {
                continue;
            };
            if !e.maxage_flooded && e.lsa.header.age < super::lsa::MAX_AGE {
                // Reached MaxAge by aging in our database: re-flood it (§14).
                let lsa = e.lsa.with_age(super::lsa::MAX_AGE);
                self.lsdb.mark_maxage_flooded(&key);
                self.flood_out(now, &lsa, None);
            }
            let on_list = self.interfaces.iter().any(|i| i.on_retransmit_list(&key));
            if !on_list && !exchanging && !self.origin.holds(&key) {
                self.lsdb.remove(&key);
                self.origin.forget(&key);
            }
        }
    }

    pub fn status(&self, now: Instant) -> OspfStatus {
        super::status::build(self, now)
    }
}
