//! Packets sent by FRR 8.4's bfdd, captured with tcpdump on a veth between two network
//! namespaces (see tests/fixtures/bfd/README.md). Each must decode to what FRR meant,
//! re-encode to the same bytes, and drive our session the way FRR's peer went.

use std::time::Instant;

use bytes::BytesMut;

use super::super::fsm::{Action, BfdTimers, Input, Session};
use super::super::packet::{ControlPacket, Diag, State};

const FRR_DISCR: u32 = 295_576_777;
const PEER_DISCR: u32 = 3_750_263_800;

const DOWN: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-down.bin");
const INIT: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-init.bin");
const UP_POLL: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-up-poll.bin");
const UP_FINAL: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-up-final.bin");
const UP: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-up.bin");
const POLL_TX200: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-poll-tx200.bin");
const ADMIN_DOWN: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-admindown.bin");
const DOWN_DIAG3: &[u8] = include_bytes!("../../../../tests/fixtures/bfd/frr-down-diag3.bin");

fn decode_roundtrip(name: &str, bytes: &[u8]) -> ControlPacket {
    let p = ControlPacket::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = BytesMut::new();
    p.encode(&mut out);
    assert_eq!(out.as_ref(), bytes, "{name}: re-encoding differs");
    // FRR 8.4 advertises a 50 ms Echo RX even with echo-mode off, and Detect Mult 3.
    assert_eq!(
        (p.detect_mult, p.required_min_echo_rx),
        (3, 50_000),
        "{name}"
    );
    p
}

#[test]
fn frr_down_in_slow_start() {
    let p = decode_roundtrip("frr-down", DOWN);
    assert_eq!(
        (p.state, p.diag, p.my_discr, p.your_discr),
        (State::Down, Diag::None, FRR_DISCR, 0)
    );
    assert_eq!(
        (p.desired_min_tx, p.required_min_rx),
        (1_000_000, 1_000_000)
    );
    assert!(!p.flags.poll && !p.flags.final_);
}

#[test]
fn frr_init() {
    let p = decode_roundtrip("frr-init", INIT);
    assert_eq!(
        (p.state, p.my_discr, p.your_discr),
        (State::Init, PEER_DISCR, FRR_DISCR)
    );
}

#[test]
fn frr_up_with_poll_final_and_plain() {
    let p = decode_roundtrip("frr-up-poll", UP_POLL);
    assert_eq!(
        (p.state, p.flags.poll, p.flags.final_),
        (State::Up, true, false)
    );
    assert_eq!((p.desired_min_tx, p.required_min_rx), (100_000, 100_000));
    let p = decode_roundtrip("frr-up-final", UP_FINAL);
    assert_eq!(
        (p.state, p.flags.poll, p.flags.final_),
        (State::Up, false, true)
    );
    let p = decode_roundtrip("frr-up", UP);
    assert_eq!(
        (p.state, p.flags.poll, p.flags.final_),
        (State::Up, false, false)
    );
    assert_eq!(p.your_discr, PEER_DISCR);
}

#[test]
fn frr_poll_after_timer_change() {
    let p = decode_roundtrip("frr-poll-tx200", POLL_TX200);
    assert!(p.flags.poll);
    assert_eq!((p.desired_min_tx, p.required_min_rx), (200_000, 100_000));
}

#[test]
fn frr_admin_down_carries_diag_0() {
    // FRR 8.4 sends AdminDown with diag 0, not 7 (Administratively Down).
    let p = decode_roundtrip("frr-admindown", ADMIN_DOWN);
    assert_eq!((p.state, p.diag), (State::AdminDown, Diag::None));
    let p = decode_roundtrip("frr-down-diag3", DOWN_DIAG3);
    assert_eq!(
        (p.state, p.diag, p.your_discr),
        (State::Down, Diag::NeighborSignaledSessionDown, 0)
    );
}

/// Our session, in FRR's peer's seat (discriminator PEER_DISCR), fed FRR's packets.
#[test]
fn frr_packets_drive_our_session() {
    let t0 = Instant::now();
    let timers = BfdTimers {
        desired_min_tx: std::time::Duration::from_millis(100),
        required_min_rx: std::time::Duration::from_millis(100),
        detect_multiplier: 3,
    };
    let mut s = Session::new(PEER_DISCR, timers, 1, t0).expect("valid");
    let mut feed = |bytes: &[u8]| {
        let p = ControlPacket::decode(bytes).expect("fixture decodes");
        s.step(t0, Input::Received(p))
    };
    feed(DOWN);
    let a = feed(UP_POLL);
    assert!(a.contains(&Action::StateChanged {
        from: State::Init,
        to: State::Up,
        diag: Diag::None
    }));
    // FRR's Poll is answered with a Final at once.
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Send(p) if p.flags.final_ && p.state == State::Up)));
    feed(UP_FINAL);
    let a = feed(ADMIN_DOWN);
    assert!(a.contains(&Action::StateChanged {
        from: State::Up,
        to: State::Down,
        diag: Diag::NeighborSignaledSessionDown
    }));
}
