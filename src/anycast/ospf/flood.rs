//! Flooding (RFC 2328 §13): receiving Link State Updates (§13 steps 1-8), flooding out
//! (§13.3), acknowledgements (§13.5, §13.7) and the hand-off of our own LSAs coming back to
//! us (§13.4, implemented in origin.rs).

use std::cmp::Ordering;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::instance::Instance;
use super::interface::{IfState, ACK_DELAY};
use super::lsa::{compare_instances, ls_type, Lsa, LsaHeader, LsaKey, MAX_AGE, MAX_SEQ};
use super::neighbor::{NbrEvent, NbrState};
use super::packet::PacketBody;

/// MinLSArrival (RFC 2328 Appendix B): a new instance of an LSA received by flooding less than
/// this after the previous one is discarded (§13 step 5a).
pub const MIN_LS_ARRIVAL: Duration = Duration::from_secs(1);

/// How soon an unacknowledged LSA of our own is first retransmitted: just past MinLSArrival,
/// not RxmtInterval. A neighbour discards without acknowledging an instance that arrives
/// within MinLSArrival of the copy it installed last (§13 step 5a), for example right after
/// it installed our retransmission of the previous instance. Waiting RxmtInterval (5 s) for
/// the next try would keep a withdrawn prefix routed that long; a copy sent after
/// MinLSArrival is installed. A neighbour that already has it takes the duplicate as an
/// implied acknowledgement (§13 step 7), so the early try costs one packet.
pub const OWN_RETRANSMIT: Duration = Duration::from_millis(1100);

/// Flooding errors, used as drop reasons.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum FloodError {
    #[error("LSU from a neighbour below Exchange")]
    LsuWrongState,
    #[error("LSAck from a neighbour below Exchange")]
    AckWrongState,
    #[error("unknown LS type")]
    UnknownLsType,
    #[error("instance arrived within MinLSArrival")]
    MinLsArrival,
    #[error("LSDB full")]
    LsdbFull,
}

impl FloodError {
    pub fn reason(&self) -> &'static str {
        match self {
            FloodError::LsuWrongState => "lsu_wrong_state",
            FloodError::AckWrongState => "ack_wrong_state",
            FloodError::UnknownLsType => "unknown_ls_type",
            FloodError::MinLsArrival => "min_ls_arrival",
            FloodError::LsdbFull => "lsdb_full",
        }
    }
}

enum AckKind {
    None,
    Delayed,
    Direct,
}

impl Instance {
    /// Send LSAs as one or more Link State Updates that fit the interface MTU.
    pub(crate) fn send_lsus(&mut self, ifi: usize, dst: Ipv4Addr, lsas: Vec<Lsa>) {
        let room = usize::from(self.interfaces[ifi].cfg.mtu).saturating_sub(20 + 24 + 32 + 4);
        let mut chunk: Vec<Lsa> = Vec::new();
        let mut size = 0usize;
        for l in lsas {
            let len = usize::from(l.header.length);
            if !chunk.is_empty() && size + len > room {
                self.send(ifi, dst, PacketBody::LsUpdate(std::mem::take(&mut chunk)));
                size = 0;
            }
            size += len;
            chunk.push(l);
        }
        if !chunk.is_empty() {
            self.send(ifi, dst, PacketBody::LsUpdate(chunk));
        }
    }

    fn is_self_originated(&self, h: &LsaHeader) -> bool {
        h.adv_router == self.router_id
            || (h.ls_type == ls_type::NETWORK
                && self.interfaces.iter().any(|i| i.cfg.address == h.ls_id))
    }

    /// Received Link State Update (§13).
    pub(crate) fn recv_lsu(&mut self, now: Instant, ifi: usize, rid: Ipv4Addr, lsas: Vec<Lsa>) {
        let Some(n) = self.interfaces[ifi].neighbors.get(&rid) else {
            return;
        };
        if n.state < NbrState::Exchange {
            self.counters.drop(FloodError::LsuWrongState.reason());
            return;
        }
        let nbr_addr = n.addr;
        let mut direct: Vec<LsaHeader> = Vec::new();
        for lsa in lsas {
            let h = lsa.header;
            let key = lsa.key();
            // Steps 1-3: checksum was verified by the codec; unknown types are discarded.
            if !(ls_type::ROUTER..=ls_type::AS_EXTERNAL).contains(&h.ls_type) {
                self.counters.drop(FloodError::UnknownLsType.reason());
                continue;
            }
            let db = self
                .lsdb
                .get(&key)
                .map(|e| (e.header(now), e.via_flooding, e.installed));
            let exchanging = self.interfaces.iter().any(|i| i.any_exchanging());
            // Step 4: a MaxAge LSA we do not have: just acknowledge it.
            if h.age >= MAX_AGE && db.is_none() && !exchanging {
                direct.push(h);
                continue;
            }
            let cmp = db.map(|(dh, _, _)| compare_instances(&h, &dh));
            if matches!(cmp, None | Some(Ordering::Greater)) {
                // Step 5a: MinLSArrival, only for copies that themselves came by flooding.
                if let Some((_, true, installed)) = db {
                    if now.saturating_duration_since(installed) < MIN_LS_ARRIVAL {
                        self.counters.drop(FloodError::MinLsArrival.reason());
                        continue;
                    }
                }
                let own = self.is_self_originated(&h);
                if !own && self.lsdb.would_overflow(&key) {
                    // Bounded LSDB: count and acknowledge (so the neighbour does not retransmit
                    // it forever), but neither install nor flood it.
                    self.counters.drop(FloodError::LsdbFull.reason());
                    self.satisfy_request(ifi, rid, &h);
                    self.delayed_ack(now, ifi, h);
                    continue;
                }
                // Step 5b-d: flood, drop the old instance from retransmission lists, install.
                let back = self.flood_out(now, &lsa, Some((ifi, rid)));
                self.remove_from_retransmit_lists(&key);
                if self.lsdb.install(now, lsa.clone(), true, own).is_err() {
                    self.counters.drop(FloodError::LsdbFull.reason());
                }
                self.satisfy_request(ifi, rid, &h);
                // Step 5e (§13.5 table).
                let state = self.interfaces[ifi].state;
                let from_dr = nbr_addr == self.interfaces[ifi].dr;
                if !back && (state != IfState::Backup || from_dr) {
                    self.delayed_ack(now, ifi, h);
                }
                // Step 5f: our own LSA came back newer than what we have (§13.4).
                if own {
                    self.self_originated_received(now, &lsa);
                }
                continue;
            }
            // Step 6: the neighbour sent something older than what it told us it had.
            let on_request = self.interfaces[ifi]
                .neighbors
                .get(&rid)
                .is_some_and(|n| n.ls_request.contains_key(&key));
            if on_request {
                self.counters.drop("bad_ls_request");
                self.nbr_event(now, ifi, rid, NbrEvent::BadLsReq);
                return;
            }
            if cmp == Some(Ordering::Equal) {
                // Step 7: a duplicate. On our retransmission list it is an implied ack.
                let implied = self.interfaces[ifi]
                    .neighbors
                    .get_mut(&rid)
                    .is_some_and(|n| n.ls_retransmit.remove(&key).is_some());
                let ifc = &self.interfaces[ifi];
                let ack = if !implied {
                    AckKind::Direct
                } else if ifc.state == IfState::Backup && nbr_addr == ifc.dr {
                    AckKind::Delayed
                } else {
                    AckKind::None
                };
                match ack {
                    AckKind::Delayed => self.delayed_ack(now, ifi, h),
                    AckKind::Direct => direct.push(h),
                    AckKind::None => {}
                }
                continue;
            }
            // Step 8: our copy is newer; send it back (at most once per MinLSArrival), unless
            // it is a MaxAge/MaxSequenceNumber copy being flushed.
            let Some(e) = self.lsdb.get(&key) else {
                continue;
            };
            if e.age(now) >= MAX_AGE && e.lsa.header.seq == MAX_SEQ {
                continue;
            }
            let copy = e.lsa_for_sending(now, self.interfaces[ifi].cfg.transmit_delay);
            let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
                continue;
            };
            let recent = n
                .recent_direct
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < MIN_LS_ARRIVAL);
            if !recent {
                n.recent_direct.insert(key, now);
                self.send_lsus(ifi, nbr_addr, vec![copy]);
            }
        }
        if !direct.is_empty() {
            // Direct acks go to the neighbour's own address (§13.5).
            let per = super::neighbor::capacity(self.interfaces[ifi].cfg.mtu, 0, 20);
            for chunk in direct.chunks(per) {
                self.send(ifi, nbr_addr, PacketBody::LsAck(chunk.to_vec()));
            }
        }
    }

    fn delayed_ack(&mut self, now: Instant, ifi: usize, h: LsaHeader) {
        let ifc = &mut self.interfaces[ifi];
        if !ifc
            .delayed_acks
            .iter()
            .any(|x| x.key() == h.key() && x.seq == h.seq)
        {
            ifc.delayed_acks.push(h);
        }
        if ifc.ack_due.is_none() {
            ifc.ack_due = Some(now + ACK_DELAY);
        }
    }

    /// Drop a satisfied request from the sending neighbour's request list (§10.9): satisfied
    /// when the received instance is at least as recent as the one asked for.
    fn satisfy_request(&mut self, ifi: usize, rid: Ipv4Addr, h: &LsaHeader) {
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        let key = h.key();
        if let Some(req) = n.ls_request.get(&key) {
            if compare_instances(h, req) != Ordering::Less {
                n.ls_request.remove(&key);
                n.lsr_outstanding.remove(&key);
            }
        }
    }

    pub(crate) fn remove_from_retransmit_lists(&mut self, key: &LsaKey) {
        for ifc in &mut self.interfaces {
            for n in ifc.neighbors.values_mut() {
                n.ls_retransmit.remove(key);
                if n.ls_retransmit.is_empty() {
                    n.lsu_retx_due = None;
                }
            }
        }
    }

    /// After LSUs (or flooding) changed request lists: ask for more, or finish Loading (§10.9).
    pub(crate) fn progress_loading(&mut self, now: Instant) {
        for ifi in 0..self.interfaces.len() {
            let rids: Vec<Ipv4Addr> = self.interfaces[ifi].neighbors.keys().copied().collect();
            for rid in rids {
                let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
                    continue;
                };
                if n.ls_request.is_empty() {
                    n.lsr_outstanding.clear();
                    n.lsr_retx_due = None;
                    if n.state == NbrState::Loading {
                        self.nbr_event(now, ifi, rid, NbrEvent::LoadingDone);
                    }
                } else if n.lsr_outstanding.is_empty() {
                    self.maybe_send_lsr(now, ifi, rid);
                }
            }
        }
    }

    /// Flood an LSA out of every interface (§13.3). `from` is the (interface, neighbour) it was
    /// received from, None for our own. Returns whether it went back out the receiving
    /// interface (which then counts as the acknowledgement, §13.5).
    pub(crate) fn flood_out(
        &mut self,
        now: Instant,
        lsa: &Lsa,
        from: Option<(usize, Ipv4Addr)>,
    ) -> bool {
        let key = lsa.key();
        let mut back = false;
        for ifi in 0..self.interfaces.len() {
            let ifc = &mut self.interfaces[ifi];
            let first_retransmit = match from {
                None => ifc.retransmit().min(OWN_RETRANSMIT),
                Some(_) => ifc.retransmit(),
            };
            let mut added = false;
            for n in ifc.neighbors.values_mut() {
                // Step 1a: only neighbours taking part in flooding.
                if n.state < NbrState::Exchange {
                    continue;
                }
                // Step 1b: a neighbour still loading may already be asking for it.
                if n.state < NbrState::Full {
                    if let Some(req) = n.ls_request.get(&key) {
                        match compare_instances(&lsa.header, req) {
                            Ordering::Less => continue,
                            Ordering::Equal => {
                                n.ls_request.remove(&key);
                                n.lsr_outstanding.remove(&key);
                                continue;
                            }
                            Ordering::Greater => {
                                n.ls_request.remove(&key);
                                n.lsr_outstanding.remove(&key);
                            }
                        }
                    }
                }
                // Step 1c: not back to the neighbour it came from.
                if from == Some((ifi, n.router_id)) {
                    continue;
                }
                // Step 1d: onto the retransmission list until acknowledged.
                n.ls_retransmit.insert(key, lsa.clone());
                let due = now + first_retransmit;
                n.lsu_retx_due = Some(n.lsu_retx_due.map_or(due, |t| t.min(due)));
                added = true;
            }
            // Step 2.
            if !added {
                continue;
            }
            if let Some((fi, frid)) = from {
                if fi == ifi {
                    // Steps 3-4: the DR/BDR that sent it floods it on this segment itself, and
                    // a Backup leaves flooding to the DR.
                    let sender = ifc.neighbors.get(&frid).map(|n| n.addr);
                    if ifc.is_broadcast() && sender.is_some_and(|a| a == ifc.dr || a == ifc.bdr) {
                        continue;
                    }
                    if ifc.state == IfState::Backup {
                        continue;
                    }
                    back = true;
                }
            }
            // Step 5: multicast, age incremented by InfTransDelay.
            let dst = ifc.flood_dst();
            let age = lsa
                .header
                .age
                .saturating_add(ifc.cfg.transmit_delay)
                .min(MAX_AGE);
            self.send_lsus(ifi, dst, vec![lsa.with_age(age)]);
        }
        back
    }

    /// Received Link State Acknowledgment (§13.7).
    pub(crate) fn recv_ack(
        &mut self,
        _now: Instant,
        ifi: usize,
        rid: Ipv4Addr,
        headers: &[LsaHeader],
    ) {
        let Some(n) = self.interfaces[ifi].neighbors.get_mut(&rid) else {
            return;
        };
        if n.state < NbrState::Exchange {
            self.counters.drop(FloodError::AckWrongState.reason());
            return;
        }
        for h in headers {
            let key = h.key();
            let same = n
                .ls_retransmit
                .get(&key)
                .is_some_and(|l| compare_instances(h, &l.header) == Ordering::Equal);
            if same {
                n.ls_retransmit.remove(&key);
            }
        }
        if n.ls_retransmit.is_empty() {
            n.lsu_retx_due = None;
        }
    }
}
