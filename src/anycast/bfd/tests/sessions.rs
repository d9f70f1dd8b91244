//! The session set: owners sharing a peer, removal with AdminDown, demultiplexing.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::super::fsm::{Action, BfdTimers};
use super::super::packet::{ControlPacket, Diag, Flags, State};
use super::super::sessions::{BfdPeer, Demux, Plan, Sessions};

const A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn peer(addr: Ipv4Addr, owner: &str) -> BfdPeer {
    BfdPeer {
        peer: addr,
        local: None,
        interface: None,
        owner: owner.into(),
    }
}

fn timers() -> BfdTimers {
    BfdTimers {
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        detect_multiplier: 3,
    }
}

fn packet(state: State, my: u32, your: u32) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        flags: Flags::default(),
        detect_mult: 3,
        my_discr: my,
        your_discr: your,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    }
}

/// Applies a plan the way the actor does, with every socket opening fine.
fn apply(s: &mut Sessions, plan: &Plan, now: Instant) {
    for a in &plan.remove {
        s.remove(*a, now);
    }
    for p in &plan.create {
        s.insert(p, LOCAL, now);
    }
}

#[test]
fn owners_share_a_session_until_the_last_leaves() {
    let now = Instant::now();
    let mut s = Sessions::new(timers(), 1);
    let plan = s.set_owner("bgp 10.99.0.1", vec![peer(A, "bgp 10.99.0.1")]);
    assert_eq!(
        plan.create.iter().map(|p| p.peer).collect::<Vec<_>>(),
        vec![A]
    );
    apply(&mut s, &plan, now);
    let plan = s.set_owner(
        "ospf eth0",
        vec![peer(A, "ospf eth0"), peer(B, "ospf eth0")],
    );
    assert_eq!(
        plan.create.iter().map(|p| p.peer).collect::<Vec<_>>(),
        vec![B]
    );
    assert!(plan.remove.is_empty());
    apply(&mut s, &plan, now);
    let owners: Vec<Vec<String>> = s
        .entries()
        .map(|e| e.owners.iter().cloned().collect())
        .collect();
    assert_eq!(
        owners,
        vec![
            vec!["bgp 10.99.0.1".to_string(), "ospf eth0".to_string()],
            vec!["ospf eth0".to_string()]
        ]
    );
    // BGP lets go: A stays for OSPF.
    let plan = s.set_owner("bgp 10.99.0.1", vec![]);
    assert_eq!(plan, Plan::default());
    // OSPF lets go of everything: both go.
    let plan = s.set_owner("ospf eth0", vec![]);
    assert_eq!(plan.remove, vec![A, B]);
    apply(&mut s, &plan, now);
    assert_eq!(s.entries().count(), 0);
}

#[test]
fn removal_says_admin_down_first() {
    let now = Instant::now();
    let mut s = Sessions::new(timers(), 1);
    let plan = s.set_owner("o", vec![peer(A, "o")]);
    apply(&mut s, &plan, now);
    let a = s.remove(A, now);
    assert!(a.iter().any(|a| matches!(a, Action::Send(p)
        if p.state == State::AdminDown && p.diag == Diag::AdministrativelyDown)));
}

#[test]
fn discriminators_are_nonzero_and_unique() {
    let now = Instant::now();
    let mut s = Sessions::new(timers(), 0);
    let peers: Vec<BfdPeer> = (1..=200u8)
        .map(|i| peer(Ipv4Addr::new(10, 0, 0, i), "o"))
        .collect();
    let plan = s.set_owner("o", peers);
    apply(&mut s, &plan, now);
    let mut d: Vec<u32> = s.entries().map(|e| e.session.local_discr()).collect();
    assert!(d.iter().all(|x| *x != 0));
    d.sort_unstable();
    d.dedup();
    assert_eq!(d.len(), 200);
}

#[test]
fn demultiplexes_by_discriminator_then_source() {
    let now = Instant::now();
    let mut s = Sessions::new(timers(), 1);
    let plan = s.set_owner("o", vec![peer(A, "o"), peer(B, "o")]);
    apply(&mut s, &plan, now);
    let discr_b = s
        .entries()
        .find(|e| e.peer == B)
        .map(|e| e.session.local_discr())
        .expect("B");
    // Your Discriminator wins over the source address (§6.3).
    assert_eq!(
        s.demux(&packet(State::Up, 9, discr_b), A),
        Demux::Session(B)
    );
    assert_eq!(
        s.demux(&packet(State::Up, 9, discr_b.wrapping_add(1)), A),
        Demux::Drop("unknown_discriminator")
    );
    // Zero Your Discriminator: only Down/AdminDown, matched by source (§6.8.6).
    assert_eq!(s.demux(&packet(State::Down, 9, 0), A), Demux::Session(A));
    assert_eq!(
        s.demux(&packet(State::AdminDown, 9, 0), B),
        Demux::Session(B)
    );
    assert_eq!(
        s.demux(&packet(State::Init, 9, 0), A),
        Demux::Drop("zero_your_discriminator")
    );
    assert_eq!(
        s.demux(&packet(State::Down, 9, 0), LOCAL),
        Demux::Drop("unknown_peer")
    );
}

#[test]
fn admin_down_covers_new_sessions_until_enabled() {
    let now = Instant::now();
    let mut s = Sessions::new(timers(), 1);
    let plan = s.set_owner("o", vec![peer(A, "o")]);
    apply(&mut s, &plan, now);
    let out = s.set_admin_down(true, now);
    assert_eq!(out.len(), 1);
    let plan = s.set_owner("o", vec![peer(A, "o"), peer(B, "o")]);
    let first = s.insert(&plan.create[0], LOCAL, now);
    assert!(first
        .iter()
        .any(|a| matches!(a, Action::Send(p) if p.state == State::AdminDown)));
    assert!(s.entries().all(|e| e.session.state() == State::AdminDown));
    s.set_admin_down(false, now);
    assert!(s.entries().all(|e| e.session.state() == State::Down));
}
