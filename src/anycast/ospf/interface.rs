//! Interface state machine (RFC 2328 §9.1-9.4), Hello sending and receiving (§9.5, §10.5) and
//! the DR/BDR election as a pure function (§9.4).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::instance::{Instance, InterfaceConfig, NetworkType, OUR_OPTIONS};
use super::lsa::{LsaHeader, LsaKey, Options};
use super::neighbor::{NbrEvent, NbrState, Neighbor};
use super::packet::{Hello, PacketBody, ALL_SPF_ROUTERS};

/// Interface-level errors (reported as drop reasons for received Hellos).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum HelloError {
    #[error("network mask mismatch")]
    Mask,
    #[error("hello interval mismatch")]
    HelloInterval,
    #[error("dead interval mismatch")]
    DeadInterval,
    #[error("E bit mismatch")]
    EBit,
}

impl HelloError {
    pub fn reason(&self) -> &'static str {
        match self {
            HelloError::Mask => "mask_mismatch",
            HelloError::HelloInterval => "hello_interval_mismatch",
            HelloError::DeadInterval => "dead_interval_mismatch",
            HelloError::EBit => "options_mismatch",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum IfState {
    Down,
    PointToPoint,
    Waiting,
    DROther,
    Backup,
    DR,
}

#[derive(Debug)]
pub struct Interface {
    pub cfg: InterfaceConfig,
    pub state: IfState,
    /// DR and BDR as interface addresses (that is what Hellos carry on broadcast, §9.1).
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    /// Neighbours keyed by router id.
    pub neighbors: BTreeMap<Ipv4Addr, Neighbor>,
    pub hello_due: Option<Instant>,
    pub wait_due: Option<Instant>,
    /// Delayed acknowledgements (§13.5), sent in one LSAck when `ack_due` passes.
    pub delayed_acks: Vec<LsaHeader>,
    pub ack_due: Option<Instant>,
}

/// How long delayed acks are held: "within ~1 s", well under RxmtInterval (§13.5).
pub(crate) const ACK_DELAY: Duration = Duration::from_secs(1);

pub(crate) fn mask_of(len: u8) -> Ipv4Addr {
    let len = u32::from(len.min(32));
    let bits = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(bits)
}

pub(crate) fn network_of(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & u32::from(mask_of(len)))
}

impl Interface {
    pub fn new(cfg: InterfaceConfig, _now: Instant) -> Interface {
        Interface {
            cfg,
            state: IfState::Down,
            dr: Ipv4Addr::UNSPECIFIED,
            bdr: Ipv4Addr::UNSPECIFIED,
            neighbors: BTreeMap::new(),
            hello_due: None,
            wait_due: None,
            delayed_acks: Vec::new(),
            ack_due: None,
        }
    }

    pub fn mask(&self) -> Ipv4Addr {
        mask_of(self.cfg.prefix_len)
    }

    pub fn is_broadcast(&self) -> bool {
        self.cfg.network_type == NetworkType::Broadcast
    }

    pub fn retransmit(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.retransmit_interval.max(1)))
    }

    /// §10.5/§8.2: on broadcast networks neighbours are identified by source address, on
    /// point-to-point by router id.
    pub fn find_neighbor(&self, src: Ipv4Addr, rid: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.is_broadcast() {
            self.neighbors
                .values()
                .find(|n| n.addr == src)
                .map(|n| n.router_id)
        } else {
            self.neighbors.contains_key(&rid).then_some(rid)
        }
    }

    pub fn any_exchanging(&self) -> bool {
        self.neighbors
            .values()
            .any(|n| matches!(n.state, NbrState::Exchange | NbrState::Loading))
    }

    pub fn on_retransmit_list(&self, key: &LsaKey) -> bool {
        self.neighbors
            .values()
            .any(|n| n.ls_retransmit.contains_key(key))
    }

    /// Where flooded LSUs and delayed LSAcks go (§13.3 step 5, §13.5): AllDRouters when we are
    /// DROther on a broadcast network, AllSPFRouters otherwise.
    pub fn flood_dst(&self) -> Ipv4Addr {
        if self.is_broadcast() && !matches!(self.state, IfState::DR | IfState::Backup) {
            super::packet::ALL_D_ROUTERS
        } else {
            ALL_SPF_ROUTERS
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let mut all: Vec<Instant> = Vec::new();
        all.extend(self.hello_due);
        all.extend(self.wait_due);
        all.extend(self.ack_due);
        for n in self.neighbors.values() {
            all.extend(n.next_deadline());
        }
        all.into_iter().min()
    }

    fn hello(&self) -> Hello {
        Hello {
            network_mask: self.mask(),
            hello_interval: self.cfg.hello_interval,
            options: OUR_OPTIONS,
            priority: self.cfg.priority,
            dead_interval: self.cfg.dead_interval,
            dr: self.dr,
            bdr: self.bdr,
            // §9.5: every router from which we recently received a Hello (state >= Init).
            neighbors: self
                .neighbors
                .values()
                .filter(|n| n.state >= NbrState::Init)
                .map(|n| n.router_id)
                .collect(),
        }
    }

    /// Our view of ourselves as an election candidate.
    fn me(&self, router_id: Ipv4Addr) -> Candidate {
        Candidate {
            router_id,
            addr: self.cfg.address,
            priority: self.cfg.priority,
            dr: self.dr,
            bdr: self.bdr,
        }
    }
}

/// One router as seen by the DR election (§9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub router_id: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub priority: u8,
    /// What it declares in its Hello (interface addresses).
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
}

/// DR/BDR election, RFC 2328 §9.4 steps 1-4. `me` is the calculating router, `others` the
/// neighbours in state 2-Way or higher. Returns (DR, BDR) as interface addresses.
pub fn elect(me: &Candidate, others: &[Candidate]) -> (Ipv4Addr, Ipv4Addr) {
    let mut me = *me;
    let (dr, bdr) = elect_once(&me, others);
    let was_dr = me.dr == me.addr;
    let was_bdr = me.bdr == me.addr;
    let is_dr = dr == me.addr;
    let is_bdr = bdr == me.addr;
    if was_dr != is_dr || was_bdr != is_bdr {
        // Step 4: our own role changed, so our Hello declarations change; run steps 2-3 again.
        me.dr = dr;
        me.bdr = bdr;
        return elect_once(&me, others);
    }
    (dr, bdr)
}

fn elect_once(me: &Candidate, others: &[Candidate]) -> (Ipv4Addr, Ipv4Addr) {
    let all: Vec<&Candidate> = std::iter::once(me)
        .chain(others.iter())
        .filter(|c| c.priority > 0)
        .collect();
    let best = |set: &mut dyn Iterator<Item = &&Candidate>| -> Option<Ipv4Addr> {
        set.max_by_key(|c| (c.priority, c.router_id))
            .map(|c| c.addr)
    };
    // Step 2: BDR among those not declaring themselves DR, preferring self-declared BDRs.
    let not_dr: Vec<&&Candidate> = all.iter().filter(|c| c.dr != c.addr).collect();
    let declared_bdr: Vec<&&Candidate> =
        not_dr.iter().copied().filter(|c| c.bdr == c.addr).collect();
    let bdr = if declared_bdr.is_empty() {
        best(&mut not_dr.iter().copied())
    } else {
        best(&mut declared_bdr.iter().copied())
    }
    .unwrap_or(Ipv4Addr::UNSPECIFIED);
    // Step 3: DR among those declaring themselves DR; none => the new BDR.
    let dr = best(&mut all.iter().filter(|c| c.dr == c.addr)).unwrap_or(bdr);
    (dr, bdr)
}

impl Instance {
    /// InterfaceUp (§9.3): point-to-point goes to PointToPoint; a router that cannot become DR
    /// (priority 0) goes straight to DROther; otherwise Waiting with the wait timer running.
    pub(crate) fn interface_up(&mut self, now: Instant, ifi: usize) {
        let ifc = &mut self.interfaces[ifi];
        ifc.state = if ifc.cfg.network_type == NetworkType::PointToPoint {
            IfState::PointToPoint
        } else if ifc.cfg.priority == 0 {
            IfState::DROther
        } else {
            ifc.wait_due = Some(now + Duration::from_secs(u64::from(ifc.cfg.dead_interval)));
            IfState::Waiting
        };
        // First Hello at once (collected by the next step), then every HelloInterval.
        ifc.hello_due = Some(now);
        tracing::info!(iface = %ifc.cfg.name, state = ?ifc.state, "ospf: interface up");
    }

    pub(crate) fn interface_timers(&mut self, now: Instant, ifi: usize) {
        let ifc = &mut self.interfaces[ifi];
        if ifc.wait_due.is_some_and(|t| t <= now) {
            ifc.wait_due = None;
            // WaitTimer (§9.3): leave Waiting through the election.
            self.run_election(now, ifi);
        }
        self.send_hello_if_due(now, ifi);
    }

    pub(crate) fn send_hello_if_due(&mut self, now: Instant, ifi: usize) {
        let ifc = &mut self.interfaces[ifi];
        if ifc.hello_due.is_some_and(|t| t <= now) {
            ifc.hello_due =
                Some(now + Duration::from_secs(u64::from(ifc.cfg.hello_interval.max(1))));
            let hello = ifc.hello();
            self.send(ifi, ALL_SPF_ROUTERS, PacketBody::Hello(hello));
        }
    }

    /// Received Hello (§10.5).
    pub(crate) fn recv_hello(
        &mut self,
        now: Instant,
        ifi: usize,
        src: Ipv4Addr,
        rid: Ipv4Addr,
        crypto_seq: Option<u32>,
        hello: Hello,
    ) {
        if let Err(e) = self.check_hello(ifi, &hello) {
            self.counters.drop(e.reason());
            return;
        }
        let ifc = &mut self.interfaces[ifi];
        let broadcast = ifc.is_broadcast();
        let existing = ifc.find_neighbor(src, rid);
        // On broadcast a neighbour is its address: a new router id behind the same address is
        // a different router, so the old one goes.
        if let Some(old) = existing.filter(|old| *old != rid) {
            ifc.neighbors.remove(&old);
            self.pending_nbr_change.insert(ifi);
        }
        let ifc = &mut self.interfaces[ifi];
        let dead = Duration::from_secs(u64::from(ifc.cfg.dead_interval));
        ifc.neighbors.entry(rid).or_insert_with(|| {
            // One Hello with a new router id makes one (without authentication, anyone on
            // the segment can send it): a line per interval, not per Hello.
            crate::log_limited!(info, %rid, %src, "ospf: new neighbour");
            Neighbor::new(rid, src, now + dead)
        });
        if !self.check_crypto_seq(ifi, rid, crypto_seq) {
            return;
        }
        let ifc = &mut self.interfaces[ifi];
        let Some(n) = ifc.neighbors.get_mut(&rid) else {
            return;
        };
        if !broadcast {
            // On point-to-point the address may change (e.g. unnumbered, renumbering).
            n.addr = src;
        }
        let (old_prio, old_dr, old_bdr) = (n.priority, n.dr, n.bdr);
        n.priority = hello.priority;
        n.dr = hello.dr;
        n.bdr = hello.bdr;
        n.options = hello.options;
        let addr = n.addr;
        self.nbr_event(now, ifi, rid, NbrEvent::HelloReceived);
        if !hello.neighbors.contains(&self.router_id) {
            // 1-WayReceived: the neighbour does not (or no longer) see us; stop here (§10.5).
            self.nbr_event(now, ifi, rid, NbrEvent::OneWayReceived);
            return;
        }
        self.nbr_event(now, ifi, rid, NbrEvent::TwoWayReceived);
        if !broadcast {
            return;
        }
        let waiting = self.interfaces[ifi].state == IfState::Waiting;
        let declares_dr = hello.dr == addr;
        let declares_bdr = hello.bdr == addr;
        let mut change = old_prio != hello.priority;
        if declares_dr && hello.bdr.is_unspecified() && waiting {
            self.backup_seen(now, ifi);
        } else if declares_dr != (old_dr == addr) {
            change = true;
        }
        if declares_bdr && waiting {
            self.backup_seen(now, ifi);
        } else if declares_bdr != (old_bdr == addr) {
            change = true;
        }
        if change {
            self.pending_nbr_change.insert(ifi);
        }
    }

    fn check_hello(&self, ifi: usize, hello: &Hello) -> Result<(), HelloError> {
        let ifc = &self.interfaces[ifi];
        // The mask is only checked on broadcast (§10.5: not on point-to-point/virtual links).
        if ifc.is_broadcast() && hello.network_mask != ifc.mask() {
            return Err(HelloError::Mask);
        }
        if hello.hello_interval != ifc.cfg.hello_interval {
            return Err(HelloError::HelloInterval);
        }
        if hello.dead_interval != ifc.cfg.dead_interval {
            return Err(HelloError::DeadInterval);
        }
        // §10.5: the E bit must match our area's setting (we are in a normal area).
        if (hello.options.0 & Options::E) != (OUR_OPTIONS.0 & Options::E) {
            return Err(HelloError::EBit);
        }
        Ok(())
    }

    /// BackupSeen (§9.3): only meaningful in Waiting; ends it through the election.
    fn backup_seen(&mut self, now: Instant, ifi: usize) {
        if self.interfaces[ifi].state == IfState::Waiting {
            self.interfaces[ifi].wait_due = None;
            self.run_election(now, ifi);
        }
    }

    /// Handle pending NeighborChange events (§9.3): only DR/Backup/DROther rerun the election.
    pub(crate) fn process_neighbor_changes(&mut self, now: Instant) {
        while let Some(ifi) = self.pending_nbr_change.pop_first() {
            let Some(ifc) = self.interfaces.get(ifi) else {
                continue;
            };
            if matches!(ifc.state, IfState::DR | IfState::Backup | IfState::DROther) {
                self.run_election(now, ifi);
            }
        }
    }

    /// §9.4: elect, set the interface state from the result, and send AdjOK? to every
    /// neighbour in 2-Way or higher when the DR or BDR changed (step 7).
    pub(crate) fn run_election(&mut self, now: Instant, ifi: usize) {
        let ifc = &self.interfaces[ifi];
        if !ifc.is_broadcast() {
            return;
        }
        let me = ifc.me(self.router_id);
        let others: Vec<Candidate> = ifc
            .neighbors
            .values()
            .filter(|n| n.state >= NbrState::TwoWay)
            .map(|n| Candidate {
                router_id: n.router_id,
                addr: n.addr,
                priority: n.priority,
                dr: n.dr,
                bdr: n.bdr,
            })
            .collect();
        let (dr, bdr) = elect(&me, &others);
        let ifc = &mut self.interfaces[ifi];
        let changed = dr != ifc.dr || bdr != ifc.bdr;
        ifc.dr = dr;
        ifc.bdr = bdr;
        let old = ifc.state;
        ifc.state = if dr == ifc.cfg.address {
            IfState::DR
        } else if bdr == ifc.cfg.address {
            IfState::Backup
        } else {
            IfState::DROther
        };
        if old != ifc.state || changed {
            tracing::info!(iface = %ifc.cfg.name, state = ?ifc.state, %dr, %bdr, "ospf: election");
            // A state change alters where we flood and what we advertise; tell neighbours now.
            ifc.hello_due = Some(now);
        }
        if changed || old != ifc.state {
            let rids: Vec<Ipv4Addr> = ifc
                .neighbors
                .values()
                .filter(|n| n.state >= NbrState::TwoWay)
                .map(|n| n.router_id)
                .collect();
            for rid in rids {
                self.nbr_event(now, ifi, rid, NbrEvent::AdjOk);
            }
        }
    }

    /// Send the delayed acks of an interface when due (or at once when `force`) (§13.5).
    pub(crate) fn send_delayed_acks(&mut self, now: Instant, ifi: usize, force: bool) {
        let ifc = &mut self.interfaces[ifi];
        let due = ifc.ack_due.is_some_and(|t| t <= now);
        if !(due || force) || ifc.delayed_acks.is_empty() {
            if due {
                ifc.ack_due = None;
            }
            return;
        }
        ifc.ack_due = None;
        let headers = std::mem::take(&mut ifc.delayed_acks);
        let dst = ifc.flood_dst();
        let per = super::neighbor::capacity(ifc.cfg.mtu, 4, 20);
        for chunk in headers.chunks(per) {
            self.send(ifi, dst, PacketBody::LsAck(chunk.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(last: u8, prio: u8, dr: u8, bdr: u8) -> Candidate {
        let a = |x: u8| {
            if x == 0 {
                Ipv4Addr::UNSPECIFIED
            } else {
                Ipv4Addr::new(10, 0, 0, x)
            }
        };
        Candidate {
            router_id: Ipv4Addr::new(1, 1, 1, last),
            addr: a(last),
            priority: prio,
            dr: a(dr),
            bdr: a(bdr),
        }
    }

    #[test]
    fn priority_zero_never_elected_and_follows_declared_dr() {
        let me = c(9, 0, 0, 0);
        let (dr, bdr) = elect(&me, &[c(1, 1, 1, 0)]);
        assert_eq!(dr, Ipv4Addr::new(10, 0, 0, 1));
        // Nobody else is eligible for BDR.
        assert_eq!(bdr, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn fresh_segment_elects_highest_priority_then_router_id() {
        // Nobody declares anything: BDR = best, DR = BDR, then step 4 for "me" (who becomes
        // DR) reruns and the next best becomes BDR.
        let me = c(5, 1, 0, 0);
        let (dr, bdr) = elect(&me, &[c(3, 1, 0, 0)]);
        assert_eq!(dr, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(bdr, Ipv4Addr::new(10, 0, 0, 3));
        // Higher priority wins over higher router id.
        let (dr, _) = elect(&me, &[c(3, 7, 0, 0)]);
        assert_eq!(dr, Ipv4Addr::new(10, 0, 0, 3));
    }

    #[test]
    fn existing_dr_is_not_preempted() {
        let me = c(9, 200, 0, 0);
        let (dr, bdr) = elect(&me, &[c(1, 1, 1, 0)]);
        assert_eq!(dr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(bdr, Ipv4Addr::new(10, 0, 0, 9));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask_of(32), Ipv4Addr::BROADCAST);
        assert_eq!(mask_of(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            network_of(Ipv4Addr::new(10, 1, 2, 3), 16),
            Ipv4Addr::new(10, 1, 0, 0)
        );
    }
}
