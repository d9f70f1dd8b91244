//! Scripted-input tests of the interface and neighbour state machines: Hello checks, the
//! DR election, the database exchange (ExStart to Full) and how adjacencies go down.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::super::instance::{Input, NetworkType};
use super::super::interface::IfState;
use super::super::lsa::{Lsa, LsaBody, Options, RouterLink, RouterLsa, INITIAL_SEQ};
use super::super::neighbor::NbrState;
use super::super::packet::{PacketBody, ALL_D_ROUTERS, ALL_SPF_ROUTERS};
use super::*;

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

#[test]
fn one_way_drops_back_to_init_and_stub() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    h.now += Duration::from_secs(2);
    let acts = h.hello(false);
    assert_eq!(h.nbr_state(), Some(NbrState::Init));
    let u = lsus(&acts);
    // We lost the adjacency: the new Router-LSA has the stub network again.
    assert_eq!(
        h.inst.lsdb.get(&rkey(ME)).map(|e| router_links(&e.lsa).1),
        Some(vec![link(
            Ipv4Addr::new(192, 0, 2, 0),
            SUBNET_MASK,
            RouterLink::STUB,
            10
        )])
    );
    // ... and nobody is left to flood it to.
    assert!(u.is_empty());
}

#[test]
fn bad_ls_request_restarts_exchange() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    let missing = rkey(Ipv4Addr::new(7, 7, 7, 7));
    let acts = h.recv(MY_ADDR, PacketBody::LsRequest(vec![missing]));
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));
    let d = dds(&acts);
    assert_eq!(d.len(), 1);
    assert!(d[0].1.init);
    assert_eq!(h.dropped("bad_ls_request"), 1);
}

#[test]
fn priority_above_zero_waits_then_elects() {
    // Alone: Waiting until the wait timer (dead interval), then DR.
    let mut cfg = config(NetworkType::Broadcast);
    cfg.interfaces[0].priority = 1;
    let mut h = H::new(cfg.clone(), HIGH_PEER);
    assert_eq!(h.if_state(), IfState::Waiting);
    h.run_for(Duration::from_secs(39));
    assert_eq!(h.if_state(), IfState::Waiting);
    let acts = h.run_for(Duration::from_secs(2));
    assert_eq!(h.if_state(), IfState::DR);
    assert!(hellos(&acts)
        .iter()
        .any(|(_, x)| x.dr == MY_ADDR && x.bdr == Ipv4Addr::UNSPECIFIED));
    // With a DR on the segment: BackupSeen ends Waiting early; we become Backup and form
    // the adjacency with the DR.
    let mut h = H::new(cfg, HIGH_PEER);
    h.hello(false);
    assert_eq!(h.if_state(), IfState::Waiting);
    let acts = h.hello(true);
    assert_eq!(h.if_state(), IfState::Backup);
    let st = h.inst.status(h.now);
    assert_eq!(
        (st.interfaces[0].dr, st.interfaces[0].bdr),
        (PEER_ADDR, MY_ADDR)
    );
    assert_eq!(h.nbr_state(), Some(NbrState::ExStart));
    assert_eq!(dds(&acts).len(), 1);
}

#[test]
fn hello_checks_and_generic_drops() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    let base = h.peer_hello(false);
    type Mutate = Box<dyn Fn(&mut super::super::packet::Hello)>;
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "hello_interval_mismatch",
            Box::new(|x| x.hello_interval = 5),
        ),
        (
            "dead_interval_mismatch",
            Box::new(|x| x.dead_interval = 120),
        ),
        (
            "mask_mismatch",
            Box::new(|x| x.network_mask = Ipv4Addr::new(255, 255, 0, 0)),
        ),
        ("options_mismatch", Box::new(|x| x.options = Options(0))),
    ];
    for (reason, f) in cases {
        let mut x = base.clone();
        f(&mut x);
        h.recv(ALL_SPF_ROUTERS, PacketBody::Hello(x));
        assert_eq!(h.dropped(reason), 1, "{reason}");
    }
    assert_eq!(h.nbr_state(), None);

    // Area mismatch and our own router id.
    let mut p = super::super::packet::Packet {
        router_id: HIGH_PEER,
        area_id: Ipv4Addr::new(0, 0, 0, 1),
        body: PacketBody::Hello(base.clone()),
    };
    let mk = |p: &super::super::packet::Packet| Input::Packet {
        ifindex: IFX,
        src: PEER_ADDR,
        dst: ALL_SPF_ROUTERS,
        received: super::super::auth::Received {
            packet: p.clone(),
            crypto_seq: None,
            key_id: None,
        },
    };
    h.step(mk(&p));
    assert_eq!(h.dropped("area_mismatch"), 1);
    p.area_id = AREA;
    p.router_id = ME;
    h.step(mk(&p));
    assert_eq!(h.dropped("own_router_id"), 1);

    // Packets from unknown neighbours, to AllDRouters while DROther, decode failures.
    h.recv(MY_ADDR, PacketBody::LsRequest(vec![]));
    assert_eq!(h.dropped("unknown_neighbor"), 1);
    h.recv(ALL_D_ROUTERS, PacketBody::Hello(base));
    assert_eq!(h.dropped("not_dr"), 1);
    h.step(Input::DecodeFailed {
        ifindex: IFX,
        reason: "bad_checksum",
    });
    assert_eq!(h.dropped("bad_checksum"), 1);
    let st = h.inst.status(h.now);
    assert_eq!(st.received.get("hello"), Some(&7));
    assert_eq!(st.received.get("ls_request"), Some(&1));
}

#[test]
fn crypto_sequence_replay_is_dropped_per_neighbour() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    let hello = |h: &H| PacketBody::Hello(h.peer_hello(false));
    let b = hello(&h);
    h.recv_seq(ALL_SPF_ROUTERS, b.clone(), Some(100));
    assert_eq!(h.nbr_state(), Some(NbrState::Init));
    h.recv_seq(ALL_SPF_ROUTERS, b.clone(), Some(99));
    assert_eq!(h.dropped("crypto_seq_replay"), 1);
    // Equal is accepted (D.5.2 says "less than"), and so is higher.
    h.recv_seq(ALL_SPF_ROUTERS, b.clone(), Some(100));
    h.recv_seq(ALL_SPF_ROUTERS, b.clone(), Some(101));
    assert_eq!(h.dropped("crypto_seq_replay"), 1);
    // A replayed older Hello listing us must not move the state.
    let b2 = PacketBody::Hello(h.peer_hello(true));
    h.recv_seq(ALL_SPF_ROUTERS, b2, Some(50));
    assert_eq!(h.nbr_state(), Some(NbrState::Init));
    assert_eq!(h.dropped("crypto_seq_replay"), 2);
    // Non-Hello packets are checked too.
    let ack = PacketBody::LsAck(vec![]);
    h.recv_seq(MY_ADDR, ack, Some(10));
    assert_eq!(h.dropped("crypto_seq_replay"), 3);
}
