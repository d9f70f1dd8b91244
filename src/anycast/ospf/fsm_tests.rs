//! Scripted-input tests of the state machines. The peer plays an FRR ospfd: on broadcast the
//! DR of the segment (priority 1, address 192.0.2.1), we are a priority-0 DROther.
//! Every packet we emit is also encoded and decoded with the real codec, so the tests check
//! that what the FSM produces is valid on the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::auth::{decode_packet, encode_packet, AuthConfig, AuthKey, Received};
use super::instance::{
    Action, Announcement, Input, Instance, InstanceConfig, InterfaceConfig, NetworkType,
};
use super::interface::IfState;
use super::lsa::{
    ls_type, Lsa, LsaBody, LsaHeader, LsaKey, NetworkLsa, Options, RouterLink, RouterLsa,
    INITIAL_SEQ,
};
use super::neighbor::NbrState;
use super::packet::{DbDescription, Hello, Packet, PacketBody, ALL_D_ROUTERS, ALL_SPF_ROUTERS};

pub(super) const ME: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
pub(super) const MY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub(super) const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(super) const HIGH_PEER: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);
pub(super) const LOW_PEER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 9);
pub(super) const AREA: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub(super) const IFX: u32 = 2;
pub(super) const HOST_MASK: Ipv4Addr = Ipv4Addr::BROADCAST;
pub(super) const SUBNET_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);

pub(super) fn iface(nt: NetworkType) -> InterfaceConfig {
    InterfaceConfig {
        name: "eth0".into(),
        ifindex: IFX,
        address: MY_ADDR,
        prefix_len: 24,
        network_type: nt,
        hello_interval: 10,
        dead_interval: 40,
        retransmit_interval: 5,
        transmit_delay: 1,
        cost: 10,
        priority: 0,
        mtu: 1500,
        mtu_ignore: false,
        auth: AuthConfig {
            send: AuthKey::Null,
            accept: vec![AuthKey::Null],
        },
    }
}

pub(super) fn config(nt: NetworkType) -> InstanceConfig {
    InstanceConfig {
        router_id: ME,
        area_id: AREA,
        interfaces: vec![iface(nt)],
        lsdb_max_lsas: 100,
        min_ls_interval: Duration::from_secs(1),
        external: None,
    }
}

pub(super) fn vip(cost: u16) -> Announcement {
    Announcement {
        prefix: VIP,
        prefix_len: 32,
        cost,
    }
}

pub(super) fn rkey(rid: Ipv4Addr) -> LsaKey {
    LsaKey {
        ls_type: ls_type::ROUTER,
        ls_id: rid,
        adv_router: rid,
    }
}

pub(super) fn link(id: Ipv4Addr, data: Ipv4Addr, t: u8, metric: u16) -> RouterLink {
    RouterLink {
        link_id: id,
        link_data: data,
        link_type: t,
        metric,
    }
}

/// The peer's Router-LSA: a transit link on the segment.
pub(super) fn peer_router_lsa(rid: Ipv4Addr, seq: i32) -> Lsa {
    let body = LsaBody::Router(RouterLsa {
        flags: 0,
        links: vec![link(PEER_ADDR, PEER_ADDR, RouterLink::TRANSIT, 10)],
    });
    Lsa::originate(5, Options(Options::E), rkey(rid), seq, body)
}

pub(super) fn peer_network_lsa(rid: Ipv4Addr) -> Lsa {
    let key = LsaKey {
        ls_type: ls_type::NETWORK,
        ls_id: PEER_ADDR,
        adv_router: rid,
    };
    let body = LsaBody::Network(NetworkLsa {
        mask: SUBNET_MASK,
        attached: vec![rid, ME],
    });
    Lsa::originate(5, Options(Options::E), key, INITIAL_SEQ + 3, body)
}

/// Encode with the real codec and decode again: what we emit must survive the wire.
fn roundtrip(packet: &Packet) {
    let mut buf = BytesMut::new();
    encode_packet(packet, &AuthKey::Null, 0, &mut buf);
    let auth = AuthConfig {
        send: AuthKey::Null,
        accept: vec![AuthKey::Null],
    };
    let back = decode_packet(&buf, &auth).map(|r| r.packet);
    assert_eq!(
        back.as_ref(),
        Ok(packet),
        "packet does not round-trip through the codec"
    );
}

pub(super) fn sends(acts: &[Action]) -> Vec<(Ipv4Addr, PacketBody)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send {
                ifindex,
                dst,
                packet,
            } => {
                assert_eq!(*ifindex, IFX);
                assert_eq!(packet.router_id, ME);
                assert_eq!(packet.area_id, AREA);
                roundtrip(packet);
                Some((*dst, packet.body.clone()))
            }
            Action::ShutdownComplete => None,
        })
        .collect()
}

pub(super) fn hellos(acts: &[Action]) -> Vec<(Ipv4Addr, Hello)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::Hello(h) => Some((d, h)),
            _ => None,
        })
        .collect()
}

pub(super) fn dds(acts: &[Action]) -> Vec<(Ipv4Addr, DbDescription)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::DbDescription(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

pub(super) fn lsrs(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<LsaKey>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsRequest(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

pub(super) fn lsus(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<Lsa>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsUpdate(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

pub(super) fn acks(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<LsaHeader>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsAck(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

pub(super) fn router_links(lsa: &Lsa) -> (u8, Vec<RouterLink>) {
    match &lsa.body {
        LsaBody::Router(r) => (r.flags, r.links.clone()),
        other => panic!("not a router LSA: {other:?}"),
    }
}

/// Test harness: an instance, a clock, and the peer's identity.
pub(super) struct H {
    pub inst: Instance,
    pub now: Instant,
    pub peer: Ipv4Addr,
    pub peer_addr: Ipv4Addr,
    pub p2p: bool,
}

impl H {
    pub fn new(cfg: InstanceConfig, peer: Ipv4Addr) -> H {
        let now = Instant::now();
        let p2p = cfg
            .interfaces
            .first()
            .is_some_and(|i| i.network_type == NetworkType::PointToPoint);
        H {
            inst: Instance::new(cfg, now),
            now,
            peer,
            peer_addr: PEER_ADDR,
            p2p,
        }
    }

    pub fn step(&mut self, input: Input) -> Vec<Action> {
        let timer = matches!(input, Input::Timer);
        let acts = self.inst.step(self.now, input);
        if timer {
            // After a timer step nothing may be overdue, or the actor would spin.
            let next = self.inst.next_deadline();
            assert!(
                next.is_none_or(|t| t > self.now),
                "deadline not in the future: {next:?}"
            );
        }
        acts
    }

    pub fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.step(Input::Timer)
    }

    /// Advance by `d`, waking at every deadline on the way (as the actor would).
    pub fn run_for(&mut self, d: Duration) -> Vec<Action> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.inst.next_deadline().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            out.extend(self.step(Input::Timer));
        }
        self.now = end;
        out.extend(self.step(Input::Timer));
        out
    }

    pub fn recv_seq(&mut self, dst: Ipv4Addr, body: PacketBody, seq: Option<u32>) -> Vec<Action> {
        let packet = Packet {
            router_id: self.peer,
            area_id: AREA,
            body,
        };
        let received = Received {
            packet,
            crypto_seq: seq,
            key_id: seq.map(|_| 1),
        };
        self.step(Input::Packet {
            ifindex: IFX,
            src: self.peer_addr,
            dst,
            received,
        })
    }

    pub fn recv(&mut self, dst: Ipv4Addr, body: PacketBody) -> Vec<Action> {
        self.recv_seq(dst, body, None)
    }

    pub fn peer_hello(&self, sees_us: bool) -> Hello {
        let (dr, mask) = if self.p2p {
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        } else {
            (self.peer_addr, SUBNET_MASK)
        };
        Hello {
            network_mask: mask,
            hello_interval: 10,
            options: Options(Options::E | Options::O),
            priority: 1,
            dead_interval: 40,
            dr,
            bdr: Ipv4Addr::UNSPECIFIED,
            neighbors: if sees_us { vec![ME] } else { vec![] },
        }
    }

    pub fn hello(&mut self, sees_us: bool) -> Vec<Action> {
        let h = self.peer_hello(sees_us);
        self.recv(ALL_SPF_ROUTERS, PacketBody::Hello(h))
    }

    pub fn dd(
        &mut self,
        init: bool,
        more: bool,
        master: bool,
        seq: u32,
        hdrs: Vec<LsaHeader>,
    ) -> Vec<Action> {
        let dd = DbDescription {
            mtu: 1500,
            options: Options(Options::E | Options::O),
            init,
            more,
            master,
            seq,
            headers: hdrs,
        };
        self.recv(MY_ADDR, PacketBody::DbDescription(dd))
    }

    pub fn nbr_state(&self) -> Option<NbrState> {
        let st = self.inst.status(self.now);
        st.interfaces.first()?.neighbors.first().map(|n| n.state)
    }

    pub fn if_state(&self) -> IfState {
        self.inst.status(self.now).interfaces[0].state
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.inst
            .status(self.now)
            .dropped
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Our Router-LSA as currently in the LSDB.
    pub fn our_router_lsa(&self) -> Lsa {
        match self.inst.lsdb.get(&rkey(ME)) {
            Some(e) => e.lsa.clone(),
            None => panic!("no router LSA of ours"),
        }
    }

    /// Drive the adjacency to Full with a minimal exchange (the peer has only its Router-LSA).
    /// Returns the actions of the step that reached Full.
    pub fn establish(&mut self) -> Vec<Action> {
        self.step(Input::Timer);
        self.hello(false);
        self.advance(Duration::from_secs(10));
        // Stay clear of MinLSInterval after anything originated at the 10 s wake-up.
        self.now += Duration::from_secs(2);
        let acts = self.hello(true);
        let ours = dds(&acts);
        assert_eq!(ours.len(), 1, "ExStart must send one DD: {acts:?}");
        let our_seq = ours[0].1.seq;
        let theirs = peer_router_lsa(self.peer, INITIAL_SEQ + 7);
        if self.peer > ME {
            self.dd(true, true, true, 1000, vec![]);
            self.dd(false, false, true, 1001, vec![theirs.header]);
        } else {
            self.dd(false, true, false, our_seq, vec![theirs.header]);
            self.dd(false, false, false, our_seq.wrapping_add(1), vec![]);
        }
        assert_eq!(self.nbr_state(), Some(NbrState::Loading));
        let acts = self.recv(MY_ADDR, PacketBody::LsUpdate(vec![theirs]));
        assert_eq!(self.nbr_state(), Some(NbrState::Full));
        acts
    }
}

/// The full broadcast scenario against an FRR DR with a higher router id (it is master),
/// including an old instance of our own Router-LSA with a high sequence number (§13.4).
#[test]
fn broadcast_dr_peer_is_master_full_exchange_and_self_originated_recovery() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    // The first Hello is due at once (next_deadline == start) and goes out with the first
    // step, to AllSPFRouters, listing nobody.
    assert_eq!(h.inst.next_deadline(), Some(h.now));
    let acts = h.step(Input::SetAnnouncements(vec![vip(1)]));
    assert_eq!(
        h.if_state(),
        IfState::DROther,
        "priority 0 goes straight to DROther"
    );
    let hs = hellos(&acts);
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].0, ALL_SPF_ROUTERS);
    assert_eq!(hs[0].1.network_mask, SUBNET_MASK);
    assert_eq!(hs[0].1.options, Options(Options::E));
    assert_eq!(hs[0].1.priority, 0);
    assert!(hs[0].1.neighbors.is_empty());

    // Their Hello (not listing us yet): Init, nothing sent.
    assert!(sends(&h.hello(false)).is_empty());
    assert_eq!(h.nbr_state(), Some(NbrState::Init));

    // Our next Hello lists them.
    let acts = h.advance(Duration::from_secs(10));
    let hs = hellos(&acts);
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].1.neighbors, vec![HIGH_PEER]);

    // They list us: 2-Way, election makes them DR, AdjOK? -> ExStart, our I|M|MS DD unicast.
    let acts = h.hello(true);
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));
    let st = h.inst.status(h.now);
    assert_eq!(st.interfaces[0].dr, PEER_ADDR);
    assert_eq!(st.interfaces[0].state, IfState::DROther);
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, PEER_ADDR);
    assert!(d[0].1.init && d[0].1.more && d[0].1.master);
    assert!(d[0].1.headers.is_empty());
    assert_eq!(d[0].1.mtu, 1500);

    // They are master (higher router id): we become slave and answer with their seq and our
    // LSA headers (only our own Router-LSA so far).
    let acts = h.dd(true, true, true, 5000, vec![]);
    assert_eq!(h.nbr_state(), Some(NbrState::Exchange));
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    let r = &d[0].1;
    assert_eq!(
        (r.init, r.master, r.more, r.seq),
        (false, false, false, 5000)
    );
    assert_eq!(r.headers.len(), 1);
    assert_eq!(r.headers[0].key(), rkey(ME));
    // Initial origination at start, then the announcement (held back by MinLSInterval
    // until the timer step at +10 s).
    assert_eq!(r.headers[0].seq, INITIAL_SEQ + 1);

    // Their summary: their Router-LSA, the Network-LSA, and an OLD instance of our own
    // Router-LSA with a much higher sequence number (left from a previous run of ours).
    let theirs = peer_router_lsa(HIGH_PEER, INITIAL_SEQ + 7);
    let net = peer_network_lsa(HIGH_PEER);
    let stale_body = LsaBody::Router(RouterLsa {
        flags: 0,
        links: vec![link(
            Ipv4Addr::new(198, 51, 100, 1),
            HOST_MASK,
            RouterLink::STUB,
            1,
        )],
    });
    let stale = Lsa::originate(
        100,
        Options(Options::E),
        rkey(ME),
        0x8000_0050u32 as i32,
        stale_body,
    );
    let hdrs = vec![theirs.header, net.header, stale.header];
    let acts = h.dd(false, false, true, 5001, hdrs);
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].1.seq, d[0].1.more, d[0].1.master),
        (5001, false, false)
    );
    assert_eq!(h.nbr_state(), Some(NbrState::Loading));
    let r = lsrs(&acts);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, PEER_ADDR);
    let mut want = vec![theirs.key(), net.key(), rkey(ME)];
    want.sort();
    assert_eq!(r[0].1, want);

    // A duplicate of their last DD: the slave answers again with the same packet.
    let acts = h.dd(
        false,
        false,
        true,
        5001,
        vec![theirs.header, net.header, stale.header],
    );
    assert_eq!(dds(&acts).len(), 1);
    assert_eq!(h.nbr_state(), Some(NbrState::Loading));

    // They ask for our Router-LSA; we answer directly.
    let acts = h.recv(MY_ADDR, PacketBody::LsRequest(vec![rkey(ME)]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, PEER_ADDR);
    assert_eq!(u[0].1[0].header.seq, INITIAL_SEQ + 1);

    // The LSU answering our request. The stale instance of ours is newer than ours: we jump
    // to its seq + 1 at once (§13.4), and being Full now it carries the transit link.
    h.now += Duration::from_millis(300);
    let acts = h.recv(
        MY_ADDR,
        PacketBody::LsUpdate(vec![theirs.clone(), net.clone(), stale.clone()]),
    );
    assert_eq!(h.nbr_state(), Some(NbrState::Full));
    let u = lsus(&acts);
    assert_eq!(
        u.len(),
        1,
        "exactly one flood of our new Router-LSA: {acts:?}"
    );
    assert_eq!(u[0].0, ALL_D_ROUTERS, "DROther floods to AllDRouters");
    let lsa = &u[0].1[0];
    assert_eq!(lsa.key(), rkey(ME));
    assert_eq!(lsa.header.seq, 0x8000_0051u32 as i32);
    assert_eq!(lsa.header.age, 1, "age + InfTransDelay");
    let (flags, links) = router_links(lsa);
    assert_eq!(flags, 0);
    assert_eq!(
        links,
        vec![
            link(PEER_ADDR, MY_ADDR, RouterLink::TRANSIT, 10),
            link(VIP, HOST_MASK, RouterLink::STUB, 1),
        ]
    );
    assert_eq!(h.inst.status(h.now).lsdb_size, 3);

    // Delayed acks for the three LSAs go out within a second, to AllDRouters.
    assert!(acks(&acts).is_empty());
    let acts = h.advance(Duration::from_secs(1));
    let a = acks(&acts);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, ALL_D_ROUTERS);
    assert_eq!(a[0].1.len(), 3);
    assert!(a[0]
        .1
        .iter()
        .any(|x| x.key() == rkey(ME) && x.seq == 0x8000_0050u32 as i32));
    let st = h.inst.status(h.now);
    assert_eq!(st.announced, vec![vip(1)]);
    assert_eq!(st.own_lsas[0].seq, "0x80000051");
}

/// Withdrawal 200 ms after an origination is held back until MinLSInterval, not lost.
#[test]
fn withdrawal_respects_min_ls_interval() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.step(Input::SetAnnouncements(vec![vip(1)]));
    let acts = h.establish();
    // Reaching Full re-originates with the transit link at once (last origination was 10 s ago).
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    let first = u[0].1[0].clone();
    // Initial, announcement (+10 s), Full (+12 s).
    assert_eq!(first.header.seq, INITIAL_SEQ + 2);
    let t_orig = h.now;

    h.now += Duration::from_millis(200);
    let acts = h.step(Input::SetAnnouncements(vec![]));
    assert!(
        lsus(&acts).is_empty(),
        "must not originate within MinLSInterval"
    );
    // (the Hello triggered by the election is due now; let the actor send it)
    let acts = h.step(Input::Timer);
    assert!(lsus(&acts).is_empty());
    assert_eq!(
        h.inst.next_deadline(),
        Some(t_orig + Duration::from_secs(1))
    );
    assert_eq!(h.inst.status(h.now).pending_origination_ms, Some(800));

    h.now = t_orig + Duration::from_millis(999);
    assert!(lsus(&h.step(Input::Timer)).is_empty());
    h.now = t_orig + Duration::from_secs(1);
    let acts = h.step(Input::Timer);
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    let lsa = &u[0].1[0];
    assert_eq!(lsa.header.seq, INITIAL_SEQ + 3);
    let (_, links) = router_links(lsa);
    assert_eq!(
        links,
        vec![link(PEER_ADDR, MY_ADDR, RouterLink::TRANSIT, 10)]
    );
    let st = h.inst.status(h.now);
    assert!(st.announced.is_empty());
    assert_eq!(st.pending_origination_ms, None);
}

/// Unacknowledged LSAs are retransmitted directly to the neighbour every RxmtInterval until
/// acknowledged (explicitly or implicitly by a flooded-back duplicate).
#[test]
fn retransmission_until_acked() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.step(Input::SetAnnouncements(vec![vip(1)]));
    let acts = h.establish();
    let ours = lsus(&acts)[0].1[0].clone();

    let acts = h.advance(Duration::from_secs(5));
    let u = lsus(&acts);
    assert_eq!(
        u.len(),
        1,
        "one retransmission after RxmtInterval: {acts:?}"
    );
    assert_eq!(u[0].0, PEER_ADDR, "retransmissions are unicast");
    assert_eq!(u[0].1[0].key(), rkey(ME));
    assert_eq!(u[0].1[0].header.seq, ours.header.seq);

    let acts = h.advance(Duration::from_secs(5));
    assert_eq!(lsus(&acts).len(), 1, "still unacked: again");

    // The DR floods our LSA back to AllSPFRouters: an implied ack.
    let echoed = ours.with_age(2);
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![echoed]));
    assert!(acks(&acts).is_empty(), "implied ack: no direct ack");
    let acts = h.advance(Duration::from_secs(6));
    assert!(
        lsus(&acts).is_empty(),
        "no retransmission after the implied ack"
    );

    // A new origination, acked explicitly.
    let acts = h.step(Input::SetAnnouncements(vec![]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1, "long after the last origination: at once");
    let newer = u[0].1[0].clone();
    assert_eq!(newer.header.seq, ours.header.seq + 1);
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![newer.header]));
    let acts = h.advance(Duration::from_secs(6));
    assert!(lsus(&acts).is_empty(), "acked: no retransmission");
}

/// Silence for the dead interval kills the neighbour; the transit link goes back to a stub.
#[test]
fn inactivity_timer_kills_neighbour() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    h.recv(
        ALL_SPF_ROUTERS,
        PacketBody::LsAck(vec![h.our_router_lsa().header]),
    );
    let acts = h.run_for(Duration::from_secs(39));
    assert_eq!(h.nbr_state(), Some(NbrState::Full));
    assert!(hellos(&acts).len() >= 3);
    let acts = h.run_for(Duration::from_secs(2));
    assert_eq!(h.nbr_state(), None, "neighbour gone");
    let st = h.inst.status(h.now);
    assert_eq!(st.interfaces[0].dr, Ipv4Addr::UNSPECIFIED);
    assert!(hellos(&acts)
        .iter()
        .all(|(_, x)| x.neighbors.is_empty() || x.dr == PEER_ADDR));
    let (_, links) = router_links(&h.our_router_lsa());
    assert_eq!(
        links,
        vec![link(
            Ipv4Addr::new(192, 0, 2, 0),
            SUBNET_MASK,
            RouterLink::STUB,
            10
        )]
    );
}

/// We are master when our router id is higher; the exchange follows §10.8 from our side.
#[test]
fn broadcast_we_are_master() {
    let mut h = H::new(config(NetworkType::Broadcast), LOW_PEER);
    h.step(Input::Timer);
    h.hello(false);
    let acts = h.hello(true);
    let d = dds(&acts);
    let s = d[0].1.seq;
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));

    // Their own I|M|MS is ignored (we have the higher id), nothing answered.
    let acts = h.dd(true, true, true, 7000, vec![]);
    assert!(dds(&acts).is_empty());
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));

    // Our init is retransmitted every RxmtInterval meanwhile.
    let acts = h.advance(Duration::from_secs(5));
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    assert!(d[0].1.init && d[0].1.master && d[0].1.seq == s);

    // They accept us as master, with their header.
    let theirs = peer_router_lsa(LOW_PEER, INITIAL_SEQ + 2);
    let acts = h.dd(false, true, false, s, vec![theirs.header]);
    assert_eq!(h.nbr_state(), Some(NbrState::Exchange));
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    let r = &d[0].1;
    assert_eq!(
        (r.init, r.master, r.more, r.seq),
        (false, true, false, s + 1)
    );
    assert_eq!(
        r.headers.iter().map(|x| x.key()).collect::<Vec<_>>(),
        vec![rkey(ME)]
    );
    // The request goes out while the exchange goes on.
    assert_eq!(lsrs(&acts), vec![(PEER_ADDR, vec![theirs.key()])]);

    // A wrong sequence number restarts negotiation (SeqNumberMismatch).
    // (checked in a separate test; here the slave answers correctly)
    let acts = h.dd(false, false, false, s + 1, vec![]);
    assert!(dds(&acts).is_empty(), "master has nothing more to send");
    assert_eq!(h.nbr_state(), Some(NbrState::Loading));

    // The LSR is retransmitted if unanswered.
    let acts = h.advance(Duration::from_secs(5));
    assert_eq!(lsrs(&acts), vec![(PEER_ADDR, vec![theirs.key()])]);

    h.recv(MY_ADDR, PacketBody::LsUpdate(vec![theirs]));
    assert_eq!(h.nbr_state(), Some(NbrState::Full));
    let acts = h.advance(Duration::from_secs(5));
    assert!(lsrs(&acts).is_empty());
}

#[test]
fn seq_number_mismatch_restarts_exstart() {
    let mut h = H::new(config(NetworkType::Broadcast), LOW_PEER);
    h.step(Input::Timer);
    h.hello(false);
    let s = dds(&h.hello(true))[0].1.seq;
    h.dd(false, true, false, s, vec![]);
    assert_eq!(h.nbr_state(), Some(NbrState::Exchange));
    let acts = h.dd(false, true, false, s + 5, vec![]);
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    assert!(d[0].1.init && d[0].1.master);
    assert_ne!(d[0].1.seq, s);
    assert_eq!(h.dropped("dd_seq_mismatch"), 1);
}

#[test]
fn mtu_mismatch_stalls_in_exstart_unless_ignored() {
    for ignore in [false, true] {
        let mut cfg = config(NetworkType::Broadcast);
        cfg.interfaces[0].mtu_ignore = ignore;
        let mut h = H::new(cfg, HIGH_PEER);
        h.step(Input::Timer);
        h.hello(false);
        h.hello(true);
        let dd = DbDescription {
            mtu: 9000,
            options: Options(Options::E),
            init: true,
            more: true,
            master: true,
            seq: 42,
            headers: vec![],
        };
        let acts = h.recv(MY_ADDR, PacketBody::DbDescription(dd));
        if ignore {
            assert_eq!(h.nbr_state(), Some(NbrState::Exchange));
            assert_eq!(dds(&acts).len(), 1);
            assert_eq!(h.dropped("mtu_mismatch"), 0);
        } else {
            assert_eq!(h.nbr_state(), Some(NbrState::ExStart));
            assert!(dds(&acts).is_empty());
            assert_eq!(h.dropped("mtu_mismatch"), 1);
        }
    }
}
