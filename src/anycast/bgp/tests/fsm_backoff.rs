//! The back-off after a failure (RFC 4271 §8.1.1 IdleHoldTimer): an Idle session waiting to
//! restart takes the peer's connection after an outage and refuses it after an error.

use std::time::{Duration, Instant};

use super::super::collision::ConnectionOrigin;
use super::super::fsm::{Action, DownReason, Input, Session, SessionState};
use super::super::message::{Message, MessageError};
use super::super::notification::{code, update_subcode, Notification};
use super::fsm::{config, establish, peer_open, receive};

/// The OPEN-wait hold time the session arms when a connection is taken (RFC 4271 §8.2.2).
const OPEN_WAIT: Duration = Duration::from_secs(240);

fn remote_connects() -> Input {
    Input::TcpConnected {
        origin: ConnectionOrigin::Remote,
    }
}

/// One way into Idle with an automatic restart pending, and what must happen to the peer's
/// connection then.
struct Case {
    name: &'static str,
    /// Drives a fresh session from `t0` into Idle; returns when that happened.
    into_idle: fn(&mut Session, Instant) -> Instant,
    reason: fn() -> DownReason,
    accepted: bool,
}

fn connect_refused(s: &mut Session, t0: Instant) -> Instant {
    assert_eq!(s.step(t0, Input::ManualStart), [Action::Connect]);
    s.step(t0, Input::TcpConnectFailed);
    t0
}

fn connection_closed(s: &mut Session, t0: Instant) -> Instant {
    establish(s, t0, peer_open(65000, 90));
    s.step(t0, Input::TcpClosed);
    t0
}

fn hold_timer_expired(s: &mut Session, t0: Instant) -> Instant {
    establish(s, t0, peer_open(65000, 3));
    let at = t0 + Duration::from_secs(3);
    s.step(at, Input::Tick);
    at
}

fn peer_ceased(s: &mut Session, t0: Instant) -> Instant {
    establish(s, t0, peer_open(65000, 90));
    let cease = Notification::administrative_shutdown("restarting");
    receive(s, t0, Message::Notification(cease));
    t0
}

fn peer_found_an_error(s: &mut Session, t0: Instant) -> Instant {
    establish(s, t0, peer_open(65000, 90));
    receive(s, t0, Message::Notification(update_error()));
    t0
}

fn we_found_an_error(s: &mut Session, t0: Instant) -> Instant {
    establish(s, t0, peer_open(65000, 90));
    s.step(t0, Input::DecodeError(bad_type()));
    t0
}

fn message_without_connection(s: &mut Session, t0: Instant) -> Instant {
    s.step(t0, Input::ManualStart);
    receive(s, t0, Message::Keepalive);
    t0
}

fn update_error() -> Notification {
    Notification::new(
        code::UPDATE_MESSAGE_ERROR,
        update_subcode::MALFORMED_ATTRIBUTE_LIST,
        Vec::new(),
    )
}

fn bad_type() -> MessageError {
    let mut garbage = vec![0xff; 16];
    garbage.extend_from_slice(&[0x00, 0x13, 0x09]);
    super::super::message::frame_len(&garbage).expect_err("message type 9 does not exist")
}

fn our_bad_type_notification() -> DownReason {
    let mut s = Session::new(config(65001, 65000)).expect("valid config");
    let t0 = Instant::now();
    we_found_an_error(&mut s, t0);
    s.last_down_reason().cloned().expect("a reason")
}

const CASES: &[Case] = &[
    Case {
        name: "our connects refused (router down)",
        into_idle: connect_refused,
        reason: || DownReason::TcpConnectFailed,
        accepted: true,
    },
    Case {
        name: "connection closed (router process killed)",
        into_idle: connection_closed,
        reason: || DownReason::TcpClosed,
        accepted: true,
    },
    Case {
        name: "hold timer expired (router silent)",
        into_idle: hold_timer_expired,
        reason: || DownReason::HoldTimerExpired,
        accepted: true,
    },
    Case {
        name: "the router's Cease (it went down on purpose)",
        into_idle: peer_ceased,
        reason: || {
            DownReason::NotificationReceived(Notification::administrative_shutdown("restarting"))
        },
        accepted: true,
    },
    Case {
        name: "the router's UPDATE error NOTIFICATION",
        into_idle: peer_found_an_error,
        reason: || DownReason::NotificationReceived(update_error()),
        accepted: false,
    },
    Case {
        name: "our NOTIFICATION for its bad message",
        into_idle: we_found_an_error,
        reason: our_bad_type_notification,
        accepted: false,
    },
    Case {
        name: "a message while no connection was open",
        into_idle: message_without_connection,
        reason: || DownReason::UnexpectedInput,
        accepted: false,
    },
];

#[test]
fn idle_backing_off_takes_the_peers_connection_after_an_outage_not_after_an_error() {
    for case in CASES {
        let t0 = Instant::now();
        let mut s = Session::new(config(65001, 65000)).expect("valid config");
        let down_at = (case.into_idle)(&mut s, t0);
        assert_eq!(s.state(), SessionState::Idle, "{}", case.name);
        assert_eq!(
            s.last_down_reason(),
            Some(&(case.reason)()),
            "{}",
            case.name
        );
        let restart_at = s
            .next_deadline()
            .unwrap_or_else(|| panic!("{}: an automatic restart is pending", case.name));
        assert!(restart_at > down_at, "{}", case.name);

        // The peer connects before our own restart is due.
        let now = down_at + (restart_at - down_at) / 2;
        let actions = s.step(now, remote_connects());
        if case.accepted {
            assert!(
                matches!(actions.as_slice(), [Action::Send(Message::Open(_))]),
                "{}: {actions:?}",
                case.name
            );
            assert_eq!(s.state(), SessionState::OpenSent, "{}", case.name);
            assert_eq!(
                s.next_deadline(),
                Some(now + OPEN_WAIT),
                "{}: the restart timer is cancelled, the OPEN wait runs",
                case.name
            );
            receive(&mut s, now, Message::Open(peer_open(65000, 90)));
            let actions = receive(&mut s, now, Message::Keepalive);
            assert!(
                matches!(actions.first(), Some(Action::SessionUp(info))
                    if info.origin == ConnectionOrigin::Remote),
                "{}: {actions:?}",
                case.name
            );
        } else {
            assert_eq!(actions, [Action::CloseTcp], "{}", case.name);
            assert_eq!(s.state(), SessionState::Idle, "{}", case.name);
            assert_eq!(
                s.next_deadline(),
                Some(restart_at),
                "{}: the damping still runs",
                case.name
            );
        }
    }
}

#[test]
fn idle_after_manual_stop_or_before_start_refuses_the_peer() {
    let t0 = Instant::now();
    let mut s = Session::new(config(65001, 65000)).expect("valid config");
    assert_eq!(s.step(t0, remote_connects()), [Action::CloseTcp]);

    connect_refused(&mut s, t0);
    s.step(
        t0,
        Input::ManualStop {
            reason: String::new(),
        },
    );
    assert_eq!(s.next_deadline(), None, "no restart after ManualStop");
    assert_eq!(s.step(t0, remote_connects()), [Action::CloseTcp]);
    assert_eq!(s.state(), SessionState::Idle);
}
