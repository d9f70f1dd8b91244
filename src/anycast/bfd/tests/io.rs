//! The actor over real UDP on loopback: two actors bring a session Up, drain, and the TTL
//! gate. Waits are bounded by generous limits; nothing asserts on how long things took.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::watch;

use super::super::io::{spawn_with_ports, BfdPorts};
use super::super::packet::{ControlPacket, Diag, Flags, State};
use super::super::{BfdPeer, BfdStatus, BfdTimers};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    UdpSocket::bind((LO, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn timers() -> BfdTimers {
    BfdTimers {
        desired_min_tx: Duration::from_millis(50),
        required_min_rx: Duration::from_millis(50),
        detect_multiplier: 3,
    }
}

fn lo_peer(owner: &str) -> Vec<BfdPeer> {
    vec![BfdPeer {
        peer: LO,
        local: None,
        interface: None,
        owner: owner.into(),
    }]
}

async fn wait(rx: &mut watch::Receiver<BfdStatus>, what: &str, f: impl Fn(&BfdStatus) -> bool) {
    let ok = matches!(
        tokio::time::timeout(LIMIT, rx.wait_for(|s| f(s))).await,
        Ok(Ok(_))
    );
    assert!(ok, "{what}: last status {:#?}", *rx.borrow());
}

fn state_of(s: &BfdStatus) -> Option<State> {
    s.session(LO).map(|x| x.state)
}

#[tokio::test]
async fn two_actors_come_up_drain_and_part() {
    let (pa, pb) = (free_port(), free_port());
    let a = spawn_with_ports(
        timers(),
        BfdPorts {
            listen: pa,
            peer: pb,
        },
    )
    .expect("actor a");
    let b = spawn_with_ports(
        timers(),
        BfdPorts {
            listen: pb,
            peer: pa,
        },
    )
    .expect("actor b");
    a.set_peers("bgp test", lo_peer("bgp test")).await;
    b.set_peers("ospf lo", lo_peer("ospf lo")).await;
    let (mut sa, mut sb) = (a.status_receiver(), b.status_receiver());
    wait(&mut sa, "a up", |s| state_of(s) == Some(State::Up)).await;
    wait(&mut sb, "b up", |s| state_of(s) == Some(State::Up)).await;
    {
        let st = sa.borrow();
        let x = st.session(LO).expect("session");
        assert_eq!(x.local, LO, "local address learned from the route");
        assert_ne!(x.remote_discr, 0);
        assert!(x.packets_in > 0 && x.packets_out > 0);
        assert!(x.up_since_unix_ms.is_some());
        assert_eq!(x.owners.iter().collect::<Vec<_>>(), vec!["bgp test"]);
    }
    // a asks for packets every 200 ms at most: b slows down once a's Poll is answered,
    // and a's detection time follows (3 × max(200, b's 50)).
    a.set_timers(BfdTimers {
        required_min_rx: Duration::from_millis(200),
        ..timers()
    })
    .await;
    wait(&mut sb, "b slows down", |s| {
        s.session(LO).is_some_and(|x| x.tx_interval_ms == 200)
    })
    .await;
    wait(&mut sa, "a detects slower", |s| {
        s.session(LO).is_some_and(|x| x.detect_time_ms == Some(600))
    })
    .await;
    // Drain a: b hears AdminDown and goes Down with diag 3.
    a.admin_down().await;
    wait(&mut sb, "b down", |s| {
        s.session(LO).is_some_and(|x| {
            x.state == State::Down
                && x.remote_state == State::AdminDown
                && x.local_diag == Diag::NeighborSignaledSessionDown
                && x.remote_diag == Diag::AdministrativelyDown
        })
    })
    .await;
    assert_eq!(state_of(&sa.borrow()), Some(State::AdminDown));
    assert!(sa.borrow().admin_down);
    // Undrain: up again.
    a.enable().await;
    wait(&mut sb, "b up again", |s| state_of(s) == Some(State::Up)).await;
    // a stops: b detects AdminDown once more, then lets the session go.
    a.shutdown().await;
    wait(&mut sb, "b down after shutdown", |s| {
        s.session(LO)
            .is_some_and(|x| x.remote_state == State::AdminDown)
    })
    .await;
    b.set_peers("ospf lo", vec![]).await;
    assert!(sb.borrow().sessions.is_empty());
    b.shutdown().await;
}

fn raw_packet() -> Vec<u8> {
    let mut out = BytesMut::new();
    ControlPacket {
        diag: Diag::None,
        state: State::Down,
        flags: Flags::default(),
        detect_mult: 3,
        my_discr: 77,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    }
    .encode(&mut out);
    out.to_vec()
}

#[tokio::test]
async fn packets_without_ttl_255_are_dropped_and_counted() {
    let port = free_port();
    let h = spawn_with_ports(
        timers(),
        BfdPorts {
            listen: port,
            peer: port,
        },
    )
    .expect("actor");
    let mut st = h.status_receiver();
    let to = SocketAddrV4::new(LO, port);
    let s = UdpSocket::bind((LO, 0)).expect("socket");
    s.set_ttl(64).expect("ttl");
    s.send_to(&raw_packet(), to).expect("send");
    wait(&mut st, "ttl drop", |s| {
        s.dropped.get("ttl_not_255") == Some(&1)
    })
    .await;
    // The same packet with TTL 255 passes the gate and is dropped later, for no session.
    s.set_ttl(255).expect("ttl");
    s.send_to(&raw_packet(), to).expect("send");
    wait(&mut st, "unknown peer", |s| {
        s.dropped.get("unknown_peer") == Some(&1)
    })
    .await;
    // And a broken one is counted under its decode reason.
    s.send_to(&raw_packet()[..20], to).expect("send");
    wait(&mut st, "truncated", |s| {
        s.dropped.get("truncated") == Some(&1)
    })
    .await;
    assert_eq!(st.borrow().dropped.get("ttl_not_255"), Some(&1));
    h.shutdown().await;
}
