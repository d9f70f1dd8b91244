//! Scripted session tests: inputs at chosen instants, outputs compared exactly.

use std::time::{Duration, Instant};

use super::super::fsm::{Action, BfdTimers, ConfigError, Input, Session};
use super::super::packet::{ControlPacket, Diag, Flags, State};

const LOCAL: u32 = 0x1111;
const REMOTE: u32 = 0x2222;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timers(tx: u64, rx: u64, mult: u8) -> BfdTimers {
    BfdTimers {
        desired_min_tx: ms(tx),
        required_min_rx: ms(rx),
        detect_multiplier: mult,
    }
}

/// What FRR sends: 3 × 100 ms once Up, one second in slow start.
fn remote(state: State, your: u32, flags: Flags) -> ControlPacket {
    let slow = state != State::Up;
    let us = if slow { 1_000_000 } else { 100_000 };
    ControlPacket {
        diag: Diag::None,
        state,
        flags,
        detect_mult: 3,
        my_discr: REMOTE,
        your_discr: your,
        desired_min_tx: us,
        required_min_rx: us,
        required_min_echo_rx: 50_000,
    }
}

fn plain() -> Flags {
    Flags::default()
}
fn poll() -> Flags {
    Flags {
        poll: true,
        ..Flags::default()
    }
}
fn fin() -> Flags {
    Flags {
        final_: true,
        ..Flags::default()
    }
}

fn sent(actions: &[Action]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<(State, State, Diag)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
            _ => None,
        })
        .collect()
}

/// A session at 100 ms × 3 brought Up through Down → Init → Up, its Poll answered.
fn up_session(t0: Instant) -> Session {
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    s.step(t0, Input::Tick);
    s.step(t0, Input::Received(remote(State::Down, 0, plain())));
    s.step(t0, Input::Received(remote(State::Up, LOCAL, plain())));
    s.step(t0, Input::Received(remote(State::Up, LOCAL, fin())));
    assert_eq!(s.state(), State::Up);
    assert!(!s.polling());
    s
}

#[test]
fn refuses_bad_configuration() {
    let t0 = Instant::now();
    let t = timers(100, 100, 3);
    assert_eq!(
        Session::new(0, t, 1, t0).err(),
        Some(ConfigError::ZeroDiscriminator)
    );
    assert_eq!(
        Session::new(1, timers(100, 100, 0), 1, t0).err(),
        Some(ConfigError::ZeroDetectMult)
    );
    assert!(matches!(
        Session::new(1, timers(0, 100, 3), 1, t0),
        Err(ConfigError::IntervalOutOfRange("desired_min_tx"))
    ));
}

#[test]
fn three_way_handshake_down_init_up() {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    // First packet: Down, no Your Discriminator yet, slow-start TX (§6.8.3).
    let a = s.step(t0, Input::Tick);
    let first = sent(&a);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].state, first[0].your_discr), (State::Down, 0));
    assert_eq!(
        (first[0].desired_min_tx, first[0].required_min_rx),
        (1_000_000, 100_000)
    );
    assert_eq!((first[0].my_discr, first[0].detect_mult), (LOCAL, 3));
    assert_eq!(first[0].required_min_echo_rx, 0);

    let a = s.step(
        t0 + ms(10),
        Input::Received(remote(State::Down, 0, plain())),
    );
    assert_eq!(changes(&a), vec![(State::Down, State::Init, Diag::None)]);
    let p = sent(&a);
    assert_eq!(
        (p.len(), p[0].state, p[0].your_discr),
        (1, State::Init, REMOTE)
    );
    assert_eq!(p[0].desired_min_tx, 1_000_000, "still slow start in Init");

    let a = s.step(
        t0 + ms(20),
        Input::Received(remote(State::Up, LOCAL, plain())),
    );
    assert_eq!(changes(&a), vec![(State::Init, State::Up, Diag::None)]);
    // Up: the configured 100 ms is announced with a Poll (§6.8.3, §6.5).
    let p = sent(&a);
    assert_eq!((p.len(), p[0].state), (1, State::Up));
    assert_eq!(p[0].desired_min_tx, 100_000);
    assert!(p[0].flags.poll && !p[0].flags.final_);
    assert_eq!(s.up_since(), Some(t0 + ms(20)));
}

#[test]
fn down_goes_straight_up_on_init() {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    let a = s.step(t0, Input::Received(remote(State::Init, LOCAL, plain())));
    assert_eq!(changes(&a), vec![(State::Down, State::Up, Diag::None)]);
    // An Up packet from a peer we are Down with changes nothing (§6.8.6 table).
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    let a = s.step(t0, Input::Received(remote(State::Up, LOCAL, plain())));
    assert_eq!(changes(&a), vec![]);
    assert_eq!(s.state(), State::Down);
}

#[test]
fn slow_start_keeps_at_least_one_second_before_up() {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    let mut now = t0;
    for _ in 0..20 {
        let p = sent(&s.step(now, Input::Tick));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].desired_min_tx, 1_000_000);
        let next = s.next_deadline().expect("transmitting");
        // 75..=100 % of one second (§6.8.7 jitter on the slow-start interval).
        assert!(
            next - now >= ms(750) && next - now <= ms(1000),
            "{:?}",
            next - now
        );
        now = next;
    }
    assert_eq!(s.negotiated_tx_us(), 1_000_000);
}

#[test]
fn poll_bit_until_final_then_configured_rate() {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(100, 100, 3), 7, t0).expect("valid");
    s.step(t0, Input::Received(remote(State::Down, 0, plain())));
    s.step(t0, Input::Received(remote(State::Up, LOCAL, plain())));
    assert!(s.polling());
    // Periodic packets keep P while the peer has not answered.
    let next = s.next_deadline().expect("transmitting");
    let p = sent(&s.step(next, Input::Tick));
    assert!(p[0].flags.poll);
    let a = s.step(next, Input::Received(remote(State::Up, LOCAL, fin())));
    assert_eq!(sent(&a), vec![], "a Final needs no answer");
    assert!(!s.polling());
    let next = s.next_deadline().expect("transmitting");
    let p = sent(&s.step(next, Input::Tick));
    assert!(!p[0].flags.poll);
    assert_eq!(s.negotiated_tx_us(), 100_000);
}

#[test]
fn poll_is_answered_at_once_with_final() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    let a = s.step(
        t0 + ms(5),
        Input::Received(remote(State::Up, LOCAL, poll())),
    );
    let p = sent(&a);
    assert_eq!(p.len(), 1, "immediate, not waiting for the transmit timer");
    assert!(p[0].flags.final_ && !p[0].flags.poll);
    // A Final that answers nothing we asked is ignored.
    let a = s.step(t0 + ms(6), Input::Received(remote(State::Up, LOCAL, fin())));
    assert_eq!(a, vec![]);
}

#[test]
fn detection_time_expiry_goes_down_with_diag_1() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    // 3 × max(our 100 ms, their 100 ms).
    assert_eq!(s.detection_time(), Some(ms(300)));
    let a = s.step(t0 + ms(299), Input::Tick);
    assert_eq!(changes(&a), vec![]);
    let a = s.step(t0 + ms(300), Input::Tick);
    assert_eq!(
        changes(&a),
        vec![(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    let p = sent(&a);
    assert_eq!((p[0].state, p[0].diag.code()), (State::Down, 1));
    // §6.8.1: the remote discriminator is forgotten after a Detection Time of silence.
    assert_eq!((p[0].your_discr, s.remote_discr()), (0, 0));
    assert_eq!(p[0].desired_min_tx, 1_000_000, "back to slow start");
}

#[test]
fn received_packets_restart_detection() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    for i in 1..10u64 {
        s.step(
            t0 + ms(i * 250),
            Input::Received(remote(State::Up, LOCAL, plain())),
        );
        let a = s.step(t0 + ms(i * 250 + 1), Input::Tick);
        assert_eq!(changes(&a), vec![]);
    }
    assert_eq!(s.state(), State::Up);
}

#[test]
fn detection_uses_the_slower_side() {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(100, 200, 5), 7, t0).expect("valid");
    // Remote in slow start: 3 × max(our 200 ms, their 1 s).
    s.step(t0, Input::Received(remote(State::Down, 0, plain())));
    assert_eq!(s.detection_time(), Some(ms(3000)));
    let mut p = remote(State::Up, LOCAL, plain());
    p.desired_min_tx = 50_000;
    p.detect_mult = 4;
    s.step(t0, Input::Received(p));
    assert_eq!(s.detection_time(), Some(ms(800)), "4 × our 200 ms");
    // Transmit at the larger of our 100 ms and their Required Min RX.
    p.required_min_rx = 400_000;
    s.step(t0, Input::Received(p));
    s.step(t0, Input::Received(ControlPacket { flags: fin(), ..p }));
    assert_eq!(s.negotiated_tx_us(), 400_000);
}

#[test]
fn remote_admin_down_takes_us_down_with_diag_3() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    let mut p = remote(State::AdminDown, LOCAL, plain());
    p.diag = Diag::AdministrativelyDown;
    let a = s.step(t0 + ms(1), Input::Received(p));
    assert_eq!(
        changes(&a),
        vec![(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
    assert_eq!(sent(&a)[0].diag.code(), 3);
    assert_eq!(s.remote_diag(), Diag::AdministrativelyDown);
    // Still AdminDown: we stay Down rather than Init.
    let a = s.step(t0 + ms(2), Input::Received(p));
    assert_eq!(changes(&a), vec![]);
    assert_eq!(s.state(), State::Down);
}

#[test]
fn remote_down_while_up_is_diag_3() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    let a = s.step(t0, Input::Received(remote(State::Down, 0, plain())));
    assert_eq!(
        changes(&a),
        vec![(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
}

#[test]
fn our_admin_down_is_sent_at_once_and_holds() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    let a = s.step(t0 + ms(1), Input::AdminDown);
    assert_eq!(
        changes(&a),
        vec![(State::Up, State::AdminDown, Diag::AdministrativelyDown)]
    );
    let p = sent(&a);
    assert_eq!(
        (p.len(), p[0].state, p[0].diag.code()),
        (1, State::AdminDown, 7)
    );
    assert_eq!(s.step(t0 + ms(2), Input::AdminDown), vec![], "idempotent");
    // Packets from the peer are discarded (§6.8.6) and no detection runs.
    let a = s.step(
        t0 + ms(3),
        Input::Received(remote(State::Up, LOCAL, plain())),
    );
    assert_eq!(
        a,
        vec![Action::Dropped {
            reason: "local_admin_down"
        }]
    );
    let a = s.step(t0 + ms(5000), Input::Tick);
    assert_eq!(changes(&a), vec![]);
    assert!(sent(&a)
        .iter()
        .all(|p| p.state == State::AdminDown && p.diag.code() == 7));
    // Enable starts over from Down.
    let a = s.step(t0 + ms(5001), Input::Enable);
    assert_eq!(
        changes(&a),
        vec![(State::AdminDown, State::Down, Diag::None)]
    );
    assert_eq!(sent(&a)[0].state, State::Down);
}

#[test]
fn slower_tx_waits_for_final_faster_rx_detection_too() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    // §6.8.3: a larger Desired Min TX is advertised with P but used only after F; a smaller
    // Required Min RX enters the detection time only after F.
    let a = s.step(t0, Input::SetTimers(timers(500, 50, 3)));
    assert_eq!(a, vec![]);
    assert!(s.polling());
    let next = s.next_deadline().expect("transmitting");
    let p = sent(&s.step(next, Input::Tick));
    assert_eq!(
        (p[0].desired_min_tx, p[0].required_min_rx),
        (500_000, 50_000)
    );
    assert!(p[0].flags.poll);
    assert_eq!(s.negotiated_tx_us(), 100_000);
    assert_eq!(s.detection_time(), Some(ms(300)));
    s.step(next, Input::Received(remote(State::Up, LOCAL, fin())));
    assert!(!s.polling());
    assert_eq!(s.negotiated_tx_us(), 500_000);
    assert_eq!(
        s.detection_time(),
        Some(ms(300)),
        "their TX 100 ms now dominates"
    );
}

#[test]
fn faster_tx_applies_at_once() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    s.step(t0, Input::SetTimers(timers(10, 100, 3)));
    assert!(s.polling());
    // Their Required Min RX (100 ms) still bounds us.
    assert_eq!(s.negotiated_tx_us(), 100_000);
    let mut p = remote(State::Up, LOCAL, fin());
    p.required_min_rx = 10_000;
    s.step(t0, Input::Received(p));
    assert_eq!(s.negotiated_tx_us(), 10_000);
}

fn intervals(mult: u8, seed: u64) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut s = Session::new(LOCAL, timers(1000, 1000, mult), seed, t0).expect("valid");
    let mut now = t0;
    let mut out = Vec::new();
    for _ in 0..200 {
        s.step(now, Input::Tick);
        let next = s.next_deadline().expect("transmitting");
        out.push(next - now);
        now = next;
    }
    out
}

#[test]
fn jitter_stays_in_range_and_follows_the_seed() {
    let v = intervals(3, 42);
    assert!(v.iter().all(|d| *d >= ms(750) && *d <= ms(1000)));
    assert!(v.iter().any(|d| *d > ms(900)), "uses the upper part too");
    assert!(v.iter().any(|d| *d < ms(800)));
    // §6.8.7: at most 90 % when Detect Mult is 1.
    let v1 = intervals(1, 42);
    assert!(v1.iter().all(|d| *d >= ms(750) && *d <= ms(900)));
    assert_eq!(intervals(3, 42), v, "same seed, same schedule");
    assert_ne!(intervals(3, 43), v);
}

#[test]
fn no_periodic_packets_when_peer_wants_none() {
    let t0 = Instant::now();
    let mut s = up_session(t0);
    let mut p = remote(State::Up, LOCAL, plain());
    p.required_min_rx = 0;
    s.step(t0, Input::Received(p));
    s.step(t0, Input::Tick);
    // §6.8.7: only the detection timer is left.
    assert_eq!(s.next_deadline(), Some(t0 + ms(300)));
    let a = s.step(
        t0 + ms(1),
        Input::Received(ControlPacket { flags: poll(), ..p }),
    );
    assert_eq!(sent(&a).len(), 1, "a Poll is still answered");
}
