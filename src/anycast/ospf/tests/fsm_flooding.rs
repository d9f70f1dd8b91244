//! Scripted-input tests of origination, flooding and the LSDB: MinLSInterval and
//! MinLSArrival, retransmission, point-to-point and external origination, the LSDB bound,
//! refresh and MaxAge, and the flush at shutdown.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::super::instance::{Action, ExternalConfig, Input, NetworkType};
use super::super::interface::IfState;
use super::super::lsa::{
    ls_type, AsExternalLsa, Lsa, LsaBody, LsaKey, NetworkLsa, Options, RouterLink, RouterLsa,
    INITIAL_SEQ, MAX_AGE,
};
use super::super::neighbor::NbrState;
use super::super::packet::{PacketBody, ALL_D_ROUTERS, ALL_SPF_ROUTERS};
use super::*;

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

#[test]
fn point_to_point_type1_link_and_flooding_to_allspf() {
    let mut h = H::new(config(NetworkType::PointToPoint), HIGH_PEER);
    h.peer_addr = Ipv4Addr::new(192, 0, 2, 77);
    h.step(Input::SetAnnouncements(vec![vip(3)]));
    assert_eq!(h.if_state(), IfState::PointToPoint);
    let acts = h.establish();
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].0, ALL_SPF_ROUTERS,
        "point-to-point floods to AllSPFRouters"
    );
    let (_, links) = router_links(&u[0].1[0]);
    assert_eq!(
        links,
        vec![
            link(HIGH_PEER, MY_ADDR, RouterLink::POINT_TO_POINT, 10),
            link(
                Ipv4Addr::new(192, 0, 2, 0),
                SUBNET_MASK,
                RouterLink::STUB,
                10
            ),
            link(VIP, HOST_MASK, RouterLink::STUB, 3),
        ]
    );
    // DD and LSR went to the neighbour's unicast address (checked in establish via state);
    // its Hello without a mask was accepted (no mask check on point-to-point).
    assert_eq!(h.dropped("mask_mismatch"), 0);
    // A neighbour on p2p is identified by router id, whatever the source address.
    h.peer_addr = Ipv4Addr::new(192, 0, 2, 78);
    h.hello(true);
    let st = h.inst.status(h.now);
    assert_eq!(st.interfaces[0].neighbors.len(), 1);
    assert_eq!(
        st.interfaces[0].neighbors[0].address,
        Ipv4Addr::new(192, 0, 2, 78)
    );
    assert_eq!(h.nbr_state(), Some(NbrState::Full));
}

fn ext_key(prefix: Ipv4Addr) -> LsaKey {
    LsaKey {
        ls_type: ls_type::AS_EXTERNAL,
        ls_id: prefix,
        adv_router: ME,
    }
}

#[test]
fn external_mode_originates_as_external_with_e_bit_and_flushes_withdrawn() {
    let mut cfg = config(NetworkType::Broadcast);
    cfg.external = Some(ExternalConfig {
        type2: true,
        metric: 20,
        tag: 77,
    });
    let mut h = H::new(cfg, HIGH_PEER);
    let other = Ipv4Addr::new(203, 0, 113, 8);
    h.step(Input::SetAnnouncements(vec![
        vip(1),
        Announcement2::of(other),
    ]));
    let acts = h.establish();
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    let (flags, links) = router_links(&u[0].1[0]);
    assert_eq!(flags, RouterLsa::E, "ASBR: E bit");
    assert_eq!(
        links,
        vec![link(PEER_ADDR, MY_ADDR, RouterLink::TRANSIT, 10)],
        "no stubs"
    );

    // The externals are in the LSDB and were in our DD summary.
    for p in [VIP, other] {
        let e = h.inst.lsdb.get(&ext_key(p));
        let Some(e) = e else {
            panic!("no external for {p}")
        };
        assert_eq!(
            e.lsa.body,
            LsaBody::AsExternal(AsExternalLsa {
                mask: HOST_MASK,
                type2: true,
                metric: 20,
                forwarding: Ipv4Addr::UNSPECIFIED,
                tag: 77,
            })
        );
        assert_eq!(e.lsa.header.options, Options(Options::E));
    }
    let st = h.inst.status(h.now);
    assert_eq!(st.announced.len(), 2);

    // Withdraw one: it is flushed with MaxAge at once (premature aging), not re-originated.
    h.now += Duration::from_secs(3);
    let acts = h.step(Input::SetAnnouncements(vec![vip(1)]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1, "{acts:?}");
    assert_eq!(u[0].0, ALL_D_ROUTERS);
    assert_eq!(u[0].1[0].key(), ext_key(other));
    assert_eq!(u[0].1[0].header.age, MAX_AGE);
    // Acked: removed from the LSDB.
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![u[0].1[0].header]));
    assert!(h.inst.lsdb.get(&ext_key(other)).is_none());
    assert!(h.inst.lsdb.get(&ext_key(VIP)).is_some());
    assert_eq!(h.inst.status(h.now).announced, vec![vip(20)]);
}

/// Helper for a second announcement.
struct Announcement2;
impl Announcement2 {
    fn of(p: Ipv4Addr) -> super::super::instance::Announcement {
        super::super::instance::Announcement {
            prefix: p,
            prefix_len: 32,
            cost: 1,
        }
    }
}

#[test]
fn shutdown_flushes_with_maxage_and_completes_on_ack() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.step(Input::SetAnnouncements(vec![vip(1)]));
    h.establish();
    let ours = h.our_router_lsa();
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![ours.header]));
    h.now += Duration::from_millis(100);
    let acts = h.step(Input::Shutdown);
    assert!(
        !acts.contains(&Action::ShutdownComplete),
        "waits for the ack"
    );
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].0, ALL_D_ROUTERS);
    let flushed = &u[0].1[0];
    assert_eq!(flushed.key(), rkey(ME));
    assert_eq!(flushed.header.age, MAX_AGE);
    assert_eq!(
        flushed.header.seq, ours.header.seq,
        "premature aging keeps the sequence"
    );
    // Nothing is re-originated during shutdown, even when content would change.
    let acts = h.step(Input::SetAnnouncements(vec![]));
    assert!(lsus(&acts).is_empty());
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![flushed.header]));
    assert_eq!(
        acts.iter()
            .filter(|a| **a == Action::ShutdownComplete)
            .count(),
        1
    );
    let acts = h.advance(Duration::from_secs(10));
    assert!(!acts.contains(&Action::ShutdownComplete), "only once");
}

/// The flush on the way out usually follows the withdrawal within a millisecond, so the
/// router discards it (MinLSArrival, §13 step 5a) and only a retransmission gets through:
/// while shutting down the flush goes again every OWN_RETRANSMIT, and the shutdown gives up
/// waiting for its ack after SHUTDOWN_ACK_WAIT, whatever RxmtInterval says.
#[test]
fn shutdown_retransmits_its_flush_until_acked_or_the_wait_ends() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    let acts = h.step(Input::Shutdown);
    assert!(!acts.contains(&Action::ShutdownComplete));
    let flushed = lsus(&acts)[0].1[0].clone();
    assert_eq!(flushed.header.age, MAX_AGE);
    for try_no in 1..=3 {
        let acts = h.advance(Duration::from_millis(1099));
        assert!(
            lsus(&acts).is_empty(),
            "not before OWN_RETRANSMIT: {acts:?}"
        );
        let acts = h.advance(Duration::from_millis(1));
        let u = lsus(&acts);
        assert_eq!(u.len(), 1, "retransmission {try_no} of the flush: {acts:?}");
        assert_eq!((u[0].0, u[0].1[0].header.age), (PEER_ADDR, MAX_AGE));
        assert!(!acts.contains(&Action::ShutdownComplete));
    }
    let acts = h.advance(Duration::from_millis(199));
    assert!(!acts.contains(&Action::ShutdownComplete), "at 3.499 s");
    let acts = h.advance(Duration::from_millis(1));
    assert!(
        acts.contains(&Action::ShutdownComplete),
        "at SHUTDOWN_ACK_WAIT"
    );

    // The ack of a retransmission completes it at once.
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    let acts = h.step(Input::Shutdown);
    let flushed = lsus(&acts)[0].1[0].clone();
    h.advance(Duration::from_millis(1100));
    h.now += Duration::from_millis(900);
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![flushed.header]));
    assert!(acts.contains(&Action::ShutdownComplete));

    // Without any neighbour: complete at once.
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    let acts = h.step(Input::Shutdown);
    assert!(lsus(&acts).is_empty());
    assert!(acts.contains(&Action::ShutdownComplete));
}

/// A new instance of our own LSA that the router discards (it installed the previous one
/// less than MinLSArrival before, §13 step 5a, so it sends no ack) goes again just past
/// MinLSArrival, not after RxmtInterval: a withdrawal must not stay unheard for 5 s. Later
/// retransmissions keep RxmtInterval.
#[test]
fn own_lsa_first_retransmitted_just_past_min_ls_arrival() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.step(Input::SetAnnouncements(vec![vip(1)]));
    h.establish();
    let ours = h.our_router_lsa();
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsAck(vec![ours.header]));
    h.now += Duration::from_secs(2);
    let acts = h.step(Input::SetAnnouncements(vec![]));
    let withdrawal = lsus(&acts)[0].1[0].clone();
    assert!(withdrawal.header.seq > ours.header.seq);
    let acts = h.advance(Duration::from_millis(1099));
    assert!(lsus(&acts).is_empty(), "{acts:?}");
    let acts = h.advance(Duration::from_millis(1));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1, "first retransmission: {acts:?}");
    assert_eq!(u[0].0, PEER_ADDR, "retransmissions are unicast");
    assert_eq!(u[0].1[0].header.seq, withdrawal.header.seq);
    let acts = h.advance(Duration::from_millis(4999));
    assert!(lsus(&acts).is_empty(), "then every RxmtInterval: {acts:?}");
    let acts = h.advance(Duration::from_millis(1));
    assert_eq!(lsus(&acts).len(), 1);

    // The router may install that retransmission now: the next origination waits
    // MinLSInterval from it, so it is not discarded in turn.
    h.now += Duration::from_millis(300);
    let acts = h.step(Input::SetAnnouncements(vec![vip(1)]));
    assert!(lsus(&acts).is_empty(), "held back: {acts:?}");
    let acts = h.advance(Duration::from_millis(700));
    let u = lsus(&acts);
    assert_eq!(
        u.len(),
        1,
        "originated MinLSInterval after the retransmission"
    );
    assert!(u[0].1[0].header.seq > withdrawal.header.seq);
}

#[test]
fn lsdb_bound_drops_new_lsas_and_counts() {
    let mut cfg = config(NetworkType::Broadcast);
    cfg.lsdb_max_lsas = 3;
    let mut h = H::new(cfg, HIGH_PEER);
    h.establish(); // ours + theirs = 2
    let mk = |i: u8| {
        let key = LsaKey {
            ls_type: ls_type::AS_EXTERNAL,
            ls_id: Ipv4Addr::new(10, 9, 0, i),
            adv_router: HIGH_PEER,
        };
        let body = LsaBody::AsExternal(AsExternalLsa {
            mask: HOST_MASK,
            type2: true,
            metric: 1,
            forwarding: Ipv4Addr::UNSPECIFIED,
            tag: 0,
        });
        Lsa::originate(1, Options(Options::E), key, INITIAL_SEQ, body)
    };
    h.recv(
        ALL_SPF_ROUTERS,
        PacketBody::LsUpdate(vec![mk(1), mk(2), mk(3)]),
    );
    let st = h.inst.status(h.now);
    assert_eq!(st.lsdb_size, 3);
    assert_eq!(st.dropped.get("lsdb_full"), Some(&2));
    // A newer instance of one we hold still replaces it.
    let newer = {
        let l = mk(1);
        Lsa::originate(
            1,
            Options(Options::E),
            l.key(),
            INITIAL_SEQ + 1,
            l.body.clone(),
        )
    };
    h.now += Duration::from_secs(2);
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![newer]));
    let k = mk(1).key();
    assert_eq!(
        h.inst.lsdb.get(&k).map(|e| e.lsa.header.seq),
        Some(INITIAL_SEQ + 1)
    );
    assert_eq!(h.dropped("lsdb_full"), 2);
    // The dropped ones were still acknowledged (no endless retransmission from the DR).
    let acts = h.advance(Duration::from_secs(1));
    let a = acks(&acts);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1.len(), 5, "theirs, 1, 2, 3, newer 1");
    assert!(a[0].1.iter().any(|x| x.key() == mk(3).key()));
}

#[test]
fn foreign_claims_of_our_router_id_are_flushed() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    h.now += Duration::from_secs(2);
    // A Network-LSA claiming our router id (we are not DR): flushed with MaxAge.
    let key = LsaKey {
        ls_type: ls_type::NETWORK,
        ls_id: Ipv4Addr::new(192, 0, 2, 99),
        adv_router: ME,
    };
    let body = LsaBody::Network(NetworkLsa {
        mask: SUBNET_MASK,
        attached: vec![ME],
    });
    let bogus = Lsa::originate(10, Options(Options::E), key, INITIAL_SEQ + 4, body);
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![bogus]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].1[0].key(), key);
    assert_eq!(u[0].1[0].header.age, MAX_AGE);
    assert_eq!(u[0].1[0].header.seq, INITIAL_SEQ + 4);
    // An AS-External of ours that we do not announce: flushed as well.
    let ek = ext_key(Ipv4Addr::new(198, 51, 100, 5));
    let body = LsaBody::AsExternal(AsExternalLsa {
        mask: HOST_MASK,
        type2: true,
        metric: 1,
        forwarding: Ipv4Addr::UNSPECIFIED,
        tag: 0,
    });
    let stale = Lsa::originate(10, Options(Options::E), ek, INITIAL_SEQ + 9, body);
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![stale]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].1[0].key(), u[0].1[0].header.age), (ek, MAX_AGE));
    // Our Router-LSA flooded back with a higher seq: jump past it at once.
    let body = LsaBody::Router(RouterLsa {
        flags: 0,
        links: vec![],
    });
    let ghost = Lsa::originate(10, Options(Options::E), rkey(ME), INITIAL_SEQ + 40, body);
    let acts = h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![ghost]));
    let u = lsus(&acts);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].1[0].header.seq, INITIAL_SEQ + 41);
    assert_eq!(
        router_links(&u[0].1[0]).1,
        vec![link(PEER_ADDR, MY_ADDR, RouterLink::TRANSIT, 10)]
    );
}

#[test]
fn min_ls_arrival_discards_rapid_instances() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    let l1 = peer_router_lsa(HIGH_PEER, INITIAL_SEQ + 20);
    let l2 = peer_router_lsa(HIGH_PEER, INITIAL_SEQ + 21);
    h.now += Duration::from_secs(2);
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![l1]));
    h.now += Duration::from_millis(500);
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![l2.clone()]));
    assert_eq!(h.dropped("min_ls_arrival"), 1);
    let k = rkey(HIGH_PEER);
    assert_eq!(
        h.inst.lsdb.get(&k).map(|e| e.lsa.header.seq),
        Some(INITIAL_SEQ + 20)
    );
    h.now += Duration::from_millis(600);
    h.recv(ALL_SPF_ROUTERS, PacketBody::LsUpdate(vec![l2]));
    assert_eq!(
        h.inst.lsdb.get(&k).map(|e| e.lsa.header.seq),
        Some(INITIAL_SEQ + 21)
    );
    // A duplicate not on our retransmission list gets a direct ack.
    let acts = h.recv(
        ALL_SPF_ROUTERS,
        PacketBody::LsUpdate(vec![peer_router_lsa(HIGH_PEER, INITIAL_SEQ + 21)]),
    );
    let a = acks(&acts);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, PEER_ADDR);
}

/// LSRefreshTime re-origination (§12.4) and MaxAge removal of a dead peer's LSA (§14).
#[test]
fn refresh_and_maxage_removal() {
    let mut h = H::new(config(NetworkType::Broadcast), HIGH_PEER);
    h.establish();
    let seq0 = h.our_router_lsa().header.seq;
    let peer_key = rkey(HIGH_PEER);
    assert!(h.inst.lsdb.get(&peer_key).is_some());
    // The peer goes silent; after 30 minutes we refresh our own LSA with seq + 2 (one for
    // losing the transit link when the neighbour died, one for the refresh).
    h.run_for(Duration::from_secs(1900));
    assert_eq!(h.nbr_state(), None);
    let seq1 = h.our_router_lsa().header.seq;
    assert_eq!(seq1, seq0 + 2);
    assert!(h
        .inst
        .lsdb
        .get(&rkey(ME))
        .is_some_and(|e| e.age(h.now) < 200));
    // The peer's LSA (installed with age 5) reaches MaxAge at ~3595 s and, being on nobody's
    // retransmission list, leaves the database.
    h.run_for(Duration::from_secs(1600));
    assert!(h.inst.lsdb.get(&peer_key).is_some());
    h.run_for(Duration::from_secs(200));
    assert!(h.inst.lsdb.get(&peer_key).is_none());
    assert_eq!(h.inst.status(h.now).lsdb_size, 1);
    assert_eq!(
        h.our_router_lsa().header.seq,
        seq0 + 3,
        "second refresh at 3600 s"
    );
}
