//! Neighbour state machine (RFC 2328 §10.1-10.4), database exchange (§10.6-10.8) and
//! link state requests (§10.7, §10.9), with their retransmission timers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::flood::OWN_RETRANSMIT;
use super::instance::{Instance, OUR_OPTIONS};
use super::interface::IfState;
use super::lsa::{compare_instances, ls_type, Lsa, LsaHeader, LsaKey, Options, MAX_AGE};
use super::packet::{DbDescription, PacketBody};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum NbrState {
    Down,
    Attempt,
    Init,
    TwoWay,
    ExStart,
    Exchange,
    Loading,
    Full,
}

/// Neighbour events (§10.2). The event names double as error/drop descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NbrEvent {
    #[error("HelloReceived")]
    HelloReceived,
    #[error("2-WayReceived")]
    TwoWayReceived,
    #[error("1-WayReceived")]
    OneWayReceived,
    #[error("AdjOK?")]
    AdjOk,
    #[error("NegotiationDone")]
    NegotiationDone,
    #[error("ExchangeDone")]
    ExchangeDone,
    #[error("LoadingDone")]
    LoadingDone,
    #[error("SeqNumberMismatch")]
    SeqNumberMismatch,
    #[error("BadLSReq")]
    BadLsReq,
    #[error("KillNbr")]
    KillNbr,
    #[error("InactivityTimer")]
    InactivityTimer,
}

/// The flags of a DD packet that identify it for duplicate detection (§10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdFlags {
    pub init: bool,
    pub more: bool,
    pub master: bool,
    pub seq: u32,
}

impl DdFlags {
    fn of(dd: &DbDescription) -> DdFlags {
        DdFlags {
            init: dd.init,
            more: dd.more,
            master: dd.master,
            seq: dd.seq,
        }
    }
}

#[derive(Debug)]
pub struct Neighbor {
    pub router_id: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub priority: u8,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub options: Options,
    pub state: NbrState,
    pub inactivity_due: Instant,
    /// Master/slave (§10.1): true while we are master (also during ExStart).
    pub we_are_master: bool,
    pub dd_seq: u32,
    pub last_sent_dd: Option<DbDescription>,
    pub last_recv_dd: Option<DdFlags>,
    pub dd_options: Option<Options>,
    pub dd_retx_due: Option<Instant>,
    pub db_summary: VecDeque<LsaHeader>,
    pub ls_request: BTreeMap<LsaKey, LsaHeader>,
    /// Keys of the LS Request in flight; the next one goes when these are satisfied (§10.9).
    pub lsr_outstanding: BTreeSet<LsaKey>,
    pub lsr_retx_due: Option<Instant>,
    pub ls_retransmit: BTreeMap<LsaKey, Lsa>,
    pub lsu_retx_due: Option<Instant>,
    /// Last accepted cryptographic sequence number (RFC 2328 D.5.2).
    pub crypto_seq: Option<u32>,
    /// When we last sent a newer database copy directly to this neighbour (§13 step 8, at most
    /// once per MinLSArrival).
    pub recent_direct: BTreeMap<LsaKey, Instant>,
}

/// How many entries of `per` bytes fit in a packet after `fixed` body bytes: IP header (20),
/// OSPF header (24) and room for a cryptographic digest (32) are reserved.
pub(crate) fn capacity(mtu: u16, fixed: usize, per: usize) -> usize {
    let room = usize::from(mtu).saturating_sub(20 + 24 + 32 + fixed);
    (room / per.max(1)).max(1)
}

impl Neighbor {
    pub fn new(router_id: Ipv4Addr, addr: Ipv4Addr, inactivity_due: Instant) -> Neighbor {
        Neighbor {
            router_id,
            addr,
            priority: 0,
            dr: Ipv4Addr::UNSPECIFIED,
            bdr: Ipv4Addr::UNSPECIFIED,
            options: Options(0),
            state: NbrState::Down,
            inactivity_due,
            we_are_master: true,
            dd_seq: 0,
            last_sent_dd: None,
            last_recv_dd: None,
            dd_options: None,
            dd_retx_due: None,
            db_summary: VecDeque::new(),
            ls_request: BTreeMap::new(),
            lsr_outstanding: BTreeSet::new(),
            lsr_retx_due: None,
            ls_retransmit: BTreeMap::new(),
            lsu_retx_due: None,
            crypto_seq: None,
            recent_direct: BTreeMap::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            Some(self.inactivity_due),
            self.dd_retx_due,
            self.lsr_retx_due,
            self.lsu_retx_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The lists are cleared whenever the adjacency is torn down or restarted (§10.3).
    fn clear_lists(&mut self) {
        self.db_summary.clear();
        self.ls_request.clear();
        self.lsr_outstanding.clear();
        self.lsr_retx_due = None;
        self.ls_retransmit.clear();
        self.lsu_retx_due = None;
        self.dd_retx_due = None;
        self.last_recv_dd = None;
        self.recent_direct.clear();
    }

    /// Next DD of the exchange: as many summary headers as fit, M set if any remain.
    fn next_dd(&mut self, mtu: u16) -> DbDescription {
        let n = capacity(mtu, 8, 20).min(self.db_summary.len());
        let headers: Vec<LsaHeader> = self.db_summary.drain(..n).collect();
        DbDescription {
            mtu,
            options: OUR_OPTIONS,
            init: false,
            more: !self.db_summary.is_empty(),
            master: self.we_are_master,
            seq: self.dd_seq,
            headers,
        }
    }
}

impl Instance {
    fn should_be_adjacent(&self, ifi: usize, rid: Ipv4Addr) -> bool {
        let ifc = &self.interfaces[ifi];
        if !ifc.is_broadcast() {
            return true;
        }
        // §10.4: on broadcast, only the DR and BDR form adjacencies with everybody.
        if matches!(ifc.state, IfState::DR | IfState::Backup) {
            return true;
        }
        ifc.neighbors
            .get(&rid)
            .is_some_and(|n| !n.addr.is_unspecified() && (n.addr == ifc.dr || n.addr == ifc.bdr))
    }

    pub(crate) fn next_dd_seq(&mut self) -> u32 {
        self.dd_seq_seed = self.dd_seq_seed.wrapping_add(0x0001_0003);
        self.dd_seq_seed
    }

    /// Execute one neighbour event (§10.3).
    pub(crate) fn nbr_event(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, ev: NbrEvent) {
        use NbrState::*;
        let adj = self.should_be_adjacent(ifi, rid);
        let dead = Duration::from_secs(u64::from(self.interfaces[ifi].cfg.dead_interval));
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        let old = n.state;
        let mut exstart = false;
        let new = match (ev, old) {
            (NbrEvent::HelloReceived, s) => {
                n.inactivity_due = now + dead;
                if s <= Attempt {
                    Init
                } else {
                    s
                }
            }
            (NbrEvent::TwoWayReceived, Init) => {
                exstart = adj;
                if adj {
                    ExStart
                } else {
                    TwoWay
                }
            }
            (NbrEvent::OneWayReceived, s) if s >= TwoWay => {
                n.clear_lists();
                Init
            }
            (NbrEvent::AdjOk, TwoWay) if adj => {
                exstart = true;
                ExStart
            }
            (NbrEvent::AdjOk, s) if s >= ExStart && !adj => {
                n.clear_lists();
                TwoWay
            }
            (NbrEvent::NegotiationDone, ExStart) => {
                // §10.3: the summary list gets every LSA in the database; MaxAge ones go on
                // the retransmission list instead.
                n.dd_retx_due = None;
                for (key, e) in self.lsdb.iter() {
                    if e.age(now) >= MAX_AGE {
                        n.ls_retransmit.insert(*key, e.lsa.with_age(MAX_AGE));
                    } else {
                        n.db_summary.push_back(e.header(now));
                    }
                }
                if !n.ls_retransmit.is_empty() && n.lsu_retx_due.is_none() {
                    n.lsu_retx_due = Some(now);
                }
                Exchange
            }
            (NbrEvent::ExchangeDone, Exchange) => {
                n.dd_retx_due = None;
                if n.ls_request.is_empty() {
                    Full
                } else {
                    Loading
                }
            }
            (NbrEvent::LoadingDone, Loading) => Full,
            (NbrEvent::SeqNumberMismatch | NbrEvent::BadLsReq, s) if s >= Exchange => {
                n.clear_lists();
                exstart = true;
                ExStart
            }
            (NbrEvent::KillNbr | NbrEvent::InactivityTimer, _) => {
                tracing::info!(%rid, event = %ev, "ospf: neighbour down");
                self.interfaces[ifi].neighbors.remove(&rid);
                if old >= TwoWay {
                    self.pending_nbr_change.insert(ifi);
                }
                return;
            }
            (_, s) => s,
        };
        n.state = new;
        if new != old && old == NbrState::Down {
            // The first step of a new neighbour, made by the same single Hello that created
            // it: limited like "ospf: new neighbour". Later steps need an exchange with us.
            crate::log_limited!(info, %rid, from = ?old, to = ?new, event = %ev, "ospf: neighbour state");
        } else if new != old {
            tracing::info!(%rid, from = ?old, to = ?new, event = %ev, "ospf: neighbour state");
        }
        // §9.2 NeighborChange: bidirectional communication gained or lost.
        if (old >= TwoWay) != (new >= TwoWay) {
            self.pending_nbr_change.insert(ifi);
        }
        if exstart {
            self.start_exstart(now, ifi, rid);
        }
        if new == Loading && old == Exchange {
            self.maybe_send_lsr(now, ifi, rid);
        }
    }

    /// Entering ExStart (§10.3): new DD sequence number, claim master, send the empty
    /// I|M|MS packet and retransmit it until the negotiation ends.
    fn start_exstart(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr) {
        let seq = self.next_dd_seq();
        let mtu = self.interfaces[ifi].cfg.mtu;
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        n.clear_lists();
        n.dd_seq = seq;
        n.we_are_master = true;
        n.dd_options = None;
        let dd = DbDescription {
            mtu,
            options: OUR_OPTIONS,
            init: true,
            more: true,
            master: true,
            seq,
            headers: Vec::new(),
        };
        self.send_dd(now, ifi, rid, dd);
    }

    fn send_dd(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, dd: DbDescription) {
        let rxmt = self.interfaces[ifi].retransmit();
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        n.last_sent_dd = Some(dd.clone());
        // Only the master (or anyone in ExStart) retransmits; the slave just answers (§10.8).
        if n.we_are_master || n.state == NbrState::ExStart {
            n.dd_retx_due = Some(now + rxmt);
        }
        let dst = n.addr;
        self.send(ifi, dst, PacketBody::DbDescription(dd));
    }

    fn resend_last_dd(&mut self, ifi: usize, rid: Ipv4Addr) {
        let Some(n) = self.interfaces[ifi].neighbors.get(&rid) else {
            return;
        };
        if let Some(dd) = n.last_sent_dd.clone() {
            let dst = n.addr;
            self.send(ifi, dst, PacketBody::DbDescription(dd));
        }
    }

    /// Received Database Description (§10.6).
    pub(crate) fn recv_dd(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, dd: DbDescription) {
        let ifc = &self.interfaces[ifi];
        if !ifc.cfg.mtu_ignore && dd.mtu > ifc.cfg.mtu {
            // The neighbour could send us packets we cannot receive unfragmented: reject, which
            // keeps the adjacency in ExStart (the classic MTU-mismatch symptom).
            self.counters.drop("mtu_mismatch");
            return;
        }
        let Some(n) = ifc.neighbors.get(&rid) else {
            return;
        };
        let mut state = n.state;
        if state == NbrState::Init {
            self.nbr_event(now, ifi, rid, NbrEvent::TwoWayReceived);
            state = self.interfaces[ifi]
                .neighbors
                .get(&rid)
                .map_or(NbrState::Down, |n| n.state);
        }
        match state {
            NbrState::Down | NbrState::Attempt | NbrState::Init | NbrState::TwoWay => {
                self.counters.drop("dd_wrong_state");
            }
            NbrState::ExStart => self.dd_exstart(now, ifi, rid, dd),
            NbrState::Exchange => self.dd_exchange(now, ifi, rid, dd),
            NbrState::Loading | NbrState::Full => {
                let Some(n) = self.interfaces[ifi].neighbors.get(&rid) else {
                    return;
                };
                if n.last_recv_dd == Some(DdFlags::of(&dd)) {
                    // Duplicate: the slave answers again, the master ignores it (§10.6).
                    if !n.we_are_master {
                        self.resend_last_dd(ifi, rid);
                    }
                } else {
                    self.nbr_event(now, ifi, rid, NbrEvent::SeqNumberMismatch);
                }
            }
        }
    }

    /// ExStart: master/slave negotiation (§10.6, §10.8).
    fn dd_exstart(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, dd: DbDescription) {
        let me = self.router_id;
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        if dd.init && dd.more && dd.master && dd.headers.is_empty() && rid > me {
            // They are master: adopt their sequence number.
            n.we_are_master = false;
            n.dd_seq = dd.seq;
        } else if !dd.init && !dd.master && dd.seq == n.dd_seq && rid < me {
            // They accepted us as master.
            n.we_are_master = true;
        } else {
            // Not (yet) a negotiation answer, e.g. their own I|M|MS while we have the higher
            // router id: ignored, our own init is retransmitted.
            return;
        }
        n.dd_options = Some(dd.options);
        self.nbr_event(now, ifi, rid, NbrEvent::NegotiationDone);
        self.dd_accept(now, ifi, rid, &dd);
    }

    /// Exchange: sequence checks, then accept (§10.6).
    fn dd_exchange(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, dd: DbDescription) {
        let Some(n) = self.interfaces[ifi].neighbors.get(&rid) else {
            return;
        };
        if n.last_recv_dd == Some(DdFlags::of(&dd)) {
            if !n.we_are_master {
                self.resend_last_dd(ifi, rid);
            }
            return;
        }
        let expected_seq = if n.we_are_master {
            n.dd_seq
        } else {
            n.dd_seq.wrapping_add(1)
        };
        let mismatch = dd.master == n.we_are_master
            || dd.init
            || n.dd_options.is_some_and(|o| o != dd.options)
            || dd.seq != expected_seq;
        if mismatch {
            self.counters.drop("dd_seq_mismatch");
            self.nbr_event(now, ifi, rid, NbrEvent::SeqNumberMismatch);
            return;
        }
        self.dd_accept(now, ifi, rid, &dd);
    }

    /// A DD accepted as next in sequence: note wanted LSAs, then continue the exchange.
    fn dd_accept(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, dd: &DbDescription) {
        let mtu = self.interfaces[ifi].cfg.mtu;
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        n.last_recv_dd = Some(DdFlags::of(dd));
        for h in &dd.headers {
            if !(ls_type::ROUTER..=ls_type::AS_EXTERNAL).contains(&h.ls_type) {
                // §10.6: an unknown LS type is a database exchange error.
                self.counters.drop("dd_bad_ls_type");
                self.nbr_event(now, ifi, rid, NbrEvent::SeqNumberMismatch);
                return;
            }
            let newer = match self.lsdb.get(&h.key()) {
                None => true,
                Some(e) => compare_instances(h, &e.header(now)) == std::cmp::Ordering::Greater,
            };
            if newer {
                n.ls_request.insert(h.key(), *h);
            }
        }
        let done = if n.we_are_master {
            n.dd_seq = n.dd_seq.wrapping_add(1);
            let we_had_more = n.last_sent_dd.as_ref().is_none_or(|d| d.more);
            if !we_had_more && !dd.more {
                true
            } else {
                let next = n.next_dd(mtu);
                self.send_dd(now, ifi, rid, next);
                false
            }
        } else {
            n.dd_seq = dd.seq;
            let next = n.next_dd(mtu);
            let our_more = next.more;
            self.send_dd(now, ifi, rid, next);
            !dd.more && !our_more
        };
        if done {
            self.nbr_event(now, ifi, rid, NbrEvent::ExchangeDone);
        } else {
            // §10.9: requests may already go out while the exchange continues.
            self.maybe_send_lsr(now, ifi, rid);
        }
    }

    /// Send the next LS Request if something is wanted and nothing is in flight (§10.9).
    pub(crate) fn maybe_send_lsr(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr) {
        let Some(n) = self.interfaces[ifi].neighbors.get(&rid) else {
            return;
        };
        if n.lsr_outstanding.is_empty()
            && !n.ls_request.is_empty()
            && matches!(n.state, NbrState::Exchange | NbrState::Loading)
        {
            self.send_lsr(now, ifi, rid);
        }
    }

    fn send_lsr(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr) {
        let ifc = &mut self.interfaces[ifi];
        let per = capacity(ifc.cfg.mtu, 0, 12);
        let rxmt = ifc.retransmit();
        let Some(n) = ifc.neighbors.get_mut(&rid) else {
            return;
        };
        let keys: Vec<LsaKey> = n.ls_request.keys().take(per).copied().collect();
        if keys.is_empty() {
            n.lsr_retx_due = None;
            return;
        }
        n.lsr_outstanding = keys.iter().copied().collect();
        n.lsr_retx_due = Some(now + rxmt);
        let dst = n.addr;
        self.send(ifi, dst, PacketBody::LsRequest(keys));
    }

    /// Received Link State Request (§10.7): answer from the database, or BadLSReq.
    pub(crate) fn recv_lsr(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, keys: &[LsaKey]) {
        let ifc = &self.interfaces[ifi];
        let Some(n) = ifc.neighbors.get(&rid) else {
            return;
        };
        if !matches!(
            n.state,
            NbrState::Exchange | NbrState::Loading | NbrState::Full
        ) {
            self.counters.drop("lsr_wrong_state");
            return;
        }
        let delay = ifc.cfg.transmit_delay;
        let mut lsas = Vec::with_capacity(keys.len());
        for key in keys {
            match self.lsdb.get(key) {
                Some(e) => lsas.push(e.lsa_for_sending(now, delay)),
                None => {
                    self.counters.drop("bad_ls_request");
                    self.nbr_event(now, ifi, rid, NbrEvent::BadLsReq);
                    return;
                }
            }
        }
        let dst = n.addr;
        // A neighbour installs what it requested now; FRR discards a newer instance of the same
        // LSA arriving within MinLSArrival (1 s) of that, until the 5 s retransmission. So the
        // next origination of our own LSAs waits MinLSInterval from this answer, exactly as
        // from an origination: typically our Router-LSA gains its transit link right after
        // the neighbour asked for the old one during the database exchange.
        for key in keys.iter().filter(|k| k.adv_router == self.router_id) {
            self.origin.last_orig.insert(*key, now);
        }
        // Answers to requests go directly to the neighbour (§13.3 end: not flooding).
        self.send_lsus(ifi, dst, lsas);
    }

    /// Per-neighbour timers: inactivity, DD/LSR/LSU retransmission (§10.3, §10.8, §10.9, §13.6).
    pub(crate) fn neighbor_timers(&mut self, now: Instant, ifi: usize) {
        let rids: Vec<Ipv4Addr> = self.interfaces[ifi].neighbors.keys().copied().collect();
        let rxmt = self.interfaces[ifi].retransmit();
        // While flushing on the way out, every try counts before the exit (origin.rs).
        let lsu_rxmt = match self.shutdown {
            Some(_) => rxmt.min(OWN_RETRANSMIT),
            None => rxmt,
        };
        let delay = self.interfaces[ifi].cfg.transmit_delay;
        for rid in rids {
            let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
                continue;
            };
            if n.inactivity_due <= now {
                self.nbr_event(now, ifi, rid, NbrEvent::InactivityTimer);
                continue;
            }
            if n.dd_retx_due.is_some_and(|t| t <= now) {
                if matches!(n.state, NbrState::ExStart | NbrState::Exchange) && n.we_are_master
                    || n.state == NbrState::ExStart
                {
                    n.dd_retx_due = Some(now + rxmt);
                    self.resend_last_dd(ifi, rid);
                } else {
                    n.dd_retx_due = None;
                }
            }
            let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
                continue;
            };
            if n.lsr_retx_due.is_some_and(|t| t <= now) {
                n.lsr_outstanding.clear();
                n.lsr_retx_due = None;
                self.maybe_send_lsr(now, ifi, rid);
            }
            let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
                continue;
            };
            if n.lsu_retx_due.is_some_and(|t| t <= now) {
                if n.ls_retransmit.is_empty() || n.state < NbrState::Exchange {
                    n.lsu_retx_due = None;
                } else {
                    n.lsu_retx_due = Some(now + lsu_rxmt);
                    let lsas: Vec<Lsa> = n
                        .ls_retransmit
                        .values()
                        .map(|l| l.with_age(l.header.age.saturating_add(delay).min(MAX_AGE)))
                        .collect();
                    let dst = n.addr;
                    // The neighbour may install this copy now: pace our next origination
                    // from it, as from an answer to a request (recv_lsr).
                    for l in lsas
                        .iter()
                        .filter(|l| l.header.adv_router == self.router_id)
                    {
                        self.origin.last_orig.insert(l.key(), now);
                    }
                    // Retransmissions always go directly to the neighbour (§13.6).
                    self.send_lsus(ifi, dst, lsas);
                }
            }
        }
    }
}
