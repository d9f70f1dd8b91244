//! Scripted sessions: every peer message goes through encode and decode
//! so the wire path is exercised too.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpkit_parser::models::{AsnLength, BgpUpdateMessage, Community, MetaCommunity};
use bgpkit_parser::parser::bgp::messages::parse_bgp_update_message;
use bytes::Bytes;

use super::super::adj_rib_out::ExportedRoute;
use super::super::collision::{resolve_collision, ConnectionOrigin, SpeakerIdentity};
use super::super::fsm::{Action, DownReason, Input, Session, SessionState};
use super::super::message::{Capabilities, Message, Open};
use super::super::session_config::{ConfigError, SessionConfig};
use super::super::update::{Prefix, Update};
use super::encode;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const ANYCAST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

pub(super) fn config(local_as: u32, remote_as: u32) -> SessionConfig {
    SessionConfig {
        connect_retry_time: Duration::from_secs(1),
        connect_retry_max: Duration::from_secs(8),
        ..SessionConfig::new(local_as, remote_as, LOCAL_ID, LOCAL_ID)
    }
}

pub(super) fn peer_open(asn: u32, hold_time: u16) -> Open {
    Open {
        asn,
        hold_time,
        router_id: PEER_ID,
        capabilities: Capabilities {
            four_octet_as: Some(asn),
            mp_ipv4_unicast: true,
            route_refresh: true,
            ..Capabilities::default()
        },
    }
}

/// A peer that offers IPv6 unicast and no other family.
pub(super) fn ipv6_only_open(asn: u32) -> Open {
    Open {
        capabilities: Capabilities {
            four_octet_as: Some(asn),
            mp_ipv6_unicast: true,
            ..Capabilities::default()
        },
        ..peer_open(asn, 90)
    }
}

/// Deliver `message` as the actor would: through the wire format.
pub(super) fn receive(session: &mut Session, now: Instant, message: Message) -> Vec<Action> {
    let bytes = Bytes::from(encode(&message));
    match Message::decode(bytes, session.decode_context()) {
        Ok(decoded) => session.step(now, Input::Message(decoded)),
        Err(error) => session.step(now, Input::DecodeError(error)),
    }
}

/// Drive a fresh session to Established with a peer offering `open`.
pub(super) fn establish(session: &mut Session, t0: Instant, open: Open) -> Vec<Action> {
    assert_eq!(session.step(t0, Input::ManualStart), [Action::Connect]);
    let actions = session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Message::Open(_))]
    ));
    assert_eq!(
        receive(session, t0, Message::Open(open)),
        [Action::Send(Message::Keepalive)]
    );
    assert_eq!(session.state(), SessionState::OpenConfirm);
    let actions = receive(session, t0, Message::Keepalive);
    assert_eq!(session.state(), SessionState::Established);
    actions
}

fn notification_sent(actions: &[Action]) -> Option<(u8, u8, Vec<u8>)> {
    actions.iter().find_map(|action| match action {
        Action::Send(Message::Notification(n)) => Some((n.code, n.subcode, n.data.to_vec())),
        _ => None,
    })
}

fn updates_sent(actions: &[Action]) -> Vec<&Update> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(Message::Update(update)) => Some(update),
            _ => None,
        })
        .collect()
}

fn parsed(update: &Update, asn_len: AsnLength) -> BgpUpdateMessage {
    parse_bgp_update_message(update.body().clone(), false, &asn_len).expect("bgpkit parses it")
}

fn prefixes(list: &[bgpkit_parser::models::NetworkPrefix]) -> Vec<String> {
    list.iter().map(|prefix| prefix.to_string()).collect()
}

fn has_graceful_shutdown(update: &BgpUpdateMessage) -> bool {
    update.attributes.iter_communities().any(|community| {
        matches!(community, MetaCommunity::Plain(Community::Custom(asn, 0)) if asn == 65535u32)
    })
}

fn announce(addresses: &[Ipv4Addr]) -> Input {
    Input::SetAnnouncements(
        addresses
            .iter()
            .map(|&address| ExportedRoute::new(Prefix::host(address.into())))
            .collect(),
    )
}

#[test]
fn happy_path_announces_full_table_then_diffs() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    assert!(session.step(t0, announce(&[ANYCAST])).is_empty());

    let actions = establish(&mut session, t0, peer_open(65000, 30));
    let [Action::SessionUp(info), Action::Send(Message::Update(table)), Action::Send(Message::Update(end_of_rib))] =
        actions.as_slice()
    else {
        panic!("expected SessionUp, the table and End-of-RIB, got {actions:?}");
    };
    assert_eq!((info.peer_as, info.peer_router_id), (65000, PEER_ID));
    assert_eq!(info.hold_time, 30); // min(90, 30)
    assert_eq!(info.keepalive_interval, Duration::from_secs(10));
    assert!(info.four_octet_as && info.route_refresh && info.ipv4_unicast);
    assert!(end_of_rib.summary().end_of_rib);
    let table = parsed(table, AsnLength::Bits32);
    assert_eq!(prefixes(&table.announced_prefixes), ["198.51.100.7/32"]);
    assert!(!has_graceful_shutdown(&table));

    // Adding a prefix announces only that one.
    let actions = session.step(t0, announce(&[ANYCAST, OTHER]));
    let [update] = updates_sent(&actions)[..] else {
        panic!("one UPDATE expected, got {actions:?}");
    };
    let update = parsed(update, AsnLength::Bits32);
    assert_eq!(prefixes(&update.announced_prefixes), ["203.0.113.9/32"]);
    assert!(update.withdrawn_prefixes.is_empty());

    // Dropping one withdraws only that one; repeating changes nothing.
    let actions = session.step(t0, announce(&[OTHER]));
    let [update] = updates_sent(&actions)[..] else {
        panic!("one withdrawal expected, got {actions:?}");
    };
    let update = parsed(update, AsnLength::Bits32);
    assert_eq!(prefixes(&update.withdrawn_prefixes), ["198.51.100.7/32"]);
    assert!(update.announced_prefixes.is_empty());
    assert!(session.step(t0, announce(&[OTHER])).is_empty());

    // ROUTE-REFRESH for IPv4 unicast resends the table; IPv6 is ignored.
    let actions = receive(&mut session, t0, Message::RouteRefresh { afi: 1, safi: 1 });
    assert_eq!(updates_sent(&actions).len(), 1);
    assert!(receive(&mut session, t0, Message::RouteRefresh { afi: 2, safi: 1 }).is_empty());

    // Keepalives every 10 s.
    assert_eq!(session.next_deadline(), Some(t0 + Duration::from_secs(10)));
    let t10 = t0 + Duration::from_secs(10);
    assert_eq!(
        session.step(t10, Input::Tick),
        [Action::Send(Message::Keepalive)]
    );
}

#[test]
fn received_updates_are_counted_and_attribute_errors_keep_the_session() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    establish(&mut session, t0, peer_open(65000, 90));
    // ORIGIN 3 is invalid: RFC 7606 treat-as-withdraw, no NOTIFICATION.
    let body = [
        0, 0, 0, 14, 0x40, 1, 1, 3, 0x40, 2, 0, 0x40, 3, 4, 192, 0, 2, 200, 24, 10, 1, 2,
    ];
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&u16::try_from(19 + body.len()).expect("short").to_be_bytes());
    bytes.push(2);
    bytes.extend_from_slice(&body);
    let message = Message::decode(Bytes::from(bytes), session.decode_context()).expect("decodes");
    assert!(session.step(t0, Input::Message(message)).is_empty());
    assert_eq!(session.state(), SessionState::Established);
    let received = session.received_updates();
    assert_eq!((received.messages, received.announced_prefixes), (1, 1));
    assert_eq!(received.treat_as_withdraw, 1);
}

#[test]
fn hold_timer_expiry_sends_notification_and_schedules_restart() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    establish(&mut session, t0, peer_open(65000, 30));

    // A KEEPALIVE at 20 s pushes expiry to 50 s.
    let t20 = t0 + Duration::from_secs(20);
    assert!(receive(&mut session, t20, Message::Keepalive).is_empty());
    let t30 = t0 + Duration::from_secs(30);
    let actions = session.step(t30, Input::Tick);
    assert_eq!(notification_sent(&actions), None);

    let t50 = t0 + Duration::from_secs(50);
    let actions = session.step(t50, Input::Tick);
    assert_eq!(
        actions,
        [
            Action::Send(Message::Notification(
                super::super::notification::Notification::hold_timer_expired()
            )),
            Action::CloseTcp,
            Action::SessionDown {
                reason: DownReason::HoldTimerExpired
            },
        ]
    );
    assert_eq!(session.state(), SessionState::Idle);
    // Up for 50 s, longer than the 8 s cap: back-off starts over at 1 s.
    assert_eq!(session.next_deadline(), Some(t50 + Duration::from_secs(1)));
    assert_eq!(
        session.step(t50 + Duration::from_secs(1), Input::Tick),
        [Action::Connect]
    );
}

#[test]
fn hold_timer_also_guards_the_wait_for_the_peers_open() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    assert_eq!(session.next_deadline(), Some(t0 + Duration::from_secs(240)));
    let actions = session.step(t0 + Duration::from_secs(240), Input::Tick);
    assert_eq!(notification_sent(&actions), Some((4, 0, vec![])));
    // Not Established yet, so no SessionDown.
    assert!(!actions
        .iter()
        .any(|action| matches!(action, Action::SessionDown { .. })));
}

#[test]
fn bad_peer_as_is_rejected_with_notification() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    let actions = receive(&mut session, t0, Message::Open(peer_open(65099, 90)));
    assert_eq!(notification_sent(&actions), Some((2, 2, vec![])));
    assert_eq!(actions.last(), Some(&Action::CloseTcp));
    assert_eq!(session.state(), SessionState::Idle);
    assert!(matches!(
        session.last_down_reason(),
        Some(DownReason::NotificationSent(_))
    ));
}

#[test]
fn unacceptable_hold_time_and_ibgp_identifier_clash_are_rejected() {
    let t0 = Instant::now();
    let start = |session: &mut Session| {
        session.step(t0, Input::ManualStart);
        session.step(
            t0,
            Input::TcpConnected {
                origin: ConnectionOrigin::Local,
            },
        );
    };
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    start(&mut session);
    let actions = receive(&mut session, t0, Message::Open(peer_open(65000, 2)));
    assert_eq!(notification_sent(&actions), Some((2, 6, vec![])));

    let mut session = Session::new(config(65001, 65001)).expect("valid config");
    start(&mut session);
    let same_id = Open {
        router_id: LOCAL_ID,
        ..peer_open(65001, 90)
    };
    let actions = receive(&mut session, t0, Message::Open(same_id));
    assert_eq!(notification_sent(&actions), Some((2, 3, vec![])));
}

#[test]
fn drain_reannounces_with_graceful_shutdown_then_stop_sends_cease() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65001)).expect("valid config");
    session.step(t0, announce(&[ANYCAST]));
    establish(&mut session, t0, peer_open(65001, 90));

    let actions = session.step(t0, Input::Drain);
    assert!(session.is_draining());
    let [update] = updates_sent(&actions)[..] else {
        panic!("one re-announcement expected, got {actions:?}");
    };
    let update = parsed(update, AsnLength::Bits32);
    assert_eq!(prefixes(&update.announced_prefixes), ["198.51.100.7/32"]);
    assert!(has_graceful_shutdown(&update));
    // iBGP: we set LOCAL_PREF 0 ourselves (RFC 8326).
    assert_eq!(update.attributes.local_preference(), Some(0));
    // Announcements made while draining carry it too.
    let actions = session.step(t0, announce(&[ANYCAST, OTHER]));
    assert!(has_graceful_shutdown(&parsed(
        updates_sent(&actions)[0],
        AsnLength::Bits32
    )));

    let actions = session.step(
        t0,
        Input::ManualStop {
            reason: "pgcast maintenance".into(),
        },
    );
    let [Action::Send(Message::Notification(cease)), Action::CloseTcp, Action::SessionDown { reason }] =
        actions.as_slice()
    else {
        panic!("expected Cease, close, down; got {actions:?}");
    };
    assert_eq!((cease.code, cease.subcode), (6, 2));
    assert_eq!(
        cease.shutdown_communication(),
        Some(Ok("pgcast maintenance"))
    );
    assert_eq!(reason, &DownReason::ManualStop);
    assert_eq!(session.state(), SessionState::Idle);
    assert_eq!(session.next_deadline(), None, "no restart after ManualStop");
}

#[test]
fn undrain_reannounces_without_graceful_shutdown_and_keeps_the_session() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, announce(&[ANYCAST]));
    establish(&mut session, t0, peer_open(65000, 90));
    session.step(t0, Input::Drain);
    // `pgcast drain` withdraws after the grace period; the session stays up.
    let actions = session.step(t0, announce(&[]));
    let [update] = updates_sent(&actions)[..] else {
        panic!("one withdrawal expected, got {actions:?}");
    };
    assert_eq!(
        prefixes(&parsed(update, AsnLength::Bits32).withdrawn_prefixes),
        ["198.51.100.7/32"]
    );

    assert!(
        session.step(t0, Input::Undrain).is_empty(),
        "nothing to re-send"
    );
    assert!(!session.is_draining());
    let actions = session.step(t0, announce(&[ANYCAST]));
    let [update] = updates_sent(&actions)[..] else {
        panic!("one announcement expected, got {actions:?}");
    };
    let update = parsed(update, AsnLength::Bits32);
    assert_eq!(prefixes(&update.announced_prefixes), ["198.51.100.7/32"]);
    assert!(!has_graceful_shutdown(&update));
    assert_eq!(session.state(), SessionState::Established);

    // An undrain while routes still carry GRACEFUL_SHUTDOWN re-sends them without it.
    session.step(t0, Input::Drain);
    let actions = session.step(t0, Input::Undrain);
    let [update] = updates_sent(&actions)[..] else {
        panic!("one re-announcement expected, got {actions:?}");
    };
    assert!(!has_graceful_shutdown(&parsed(update, AsnLength::Bits32)));
}

#[test]
fn connect_retry_backs_off_exponentially_up_to_the_cap() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    assert_eq!(session.step(t0, Input::ManualStart), [Action::Connect]);

    // The ConnectRetryTimer firing in Connect retries right away.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        session.step(t1, Input::Tick),
        [Action::CloseTcp, Action::Connect]
    );
    assert_eq!(session.next_deadline(), Some(t1 + Duration::from_secs(2)));

    // Failed attempts wait 2, 4, 8, 8 s before the next.
    let mut now = t1;
    for expected in [2, 4, 8, 8] {
        now += Duration::from_millis(100);
        assert!(session.step(now, Input::TcpConnectFailed).is_empty());
        assert_eq!(session.state(), SessionState::Idle);
        let retry_at = session.next_deadline().expect("restart scheduled");
        assert_eq!(retry_at - now, Duration::from_secs(expected));
        assert!(session
            .step(retry_at - Duration::from_millis(1), Input::Tick)
            .is_empty());
        assert_eq!(session.step(retry_at, Input::Tick), [Action::Connect]);
        now = retry_at;
    }

    // ManualStop cancels everything; ManualStart begins at 1 s again.
    session.step(now, Input::TcpConnectFailed);
    assert!(session.next_deadline().is_some());
    session.step(
        now,
        Input::ManualStop {
            reason: String::new(),
        },
    );
    assert_eq!(session.next_deadline(), None);
    assert_eq!(session.step(now, Input::ManualStart), [Action::Connect]);
    assert_eq!(session.next_deadline(), Some(now + Duration::from_secs(1)));
}

#[test]
fn a_session_that_flaps_keeps_backing_off() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(t0, Input::TcpConnectFailed); // back-off now at 2 s
    let t1 = t0 + Duration::from_secs(1);
    session.step(t1, Input::Tick);
    session.step(
        t1,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    receive(&mut session, t1, Message::Open(peer_open(65000, 90)));
    receive(&mut session, t1, Message::Keepalive);
    // Down after 1 s, well under the 8 s cap: no reset.
    let t2 = t1 + Duration::from_secs(1);
    let actions = session.step(t2, Input::TcpClosed);
    assert_eq!(
        actions,
        [Action::SessionDown {
            reason: DownReason::TcpClosed
        }]
    );
    assert_eq!(session.next_deadline(), Some(t2 + Duration::from_secs(2)));
}

#[test]
fn collision_keeps_the_connection_of_the_higher_router_id() {
    let t0 = Instant::now();
    let mut outbound = Session::new(config(65001, 65000)).expect("valid config");
    outbound.step(t0, Input::ManualStart);
    outbound.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    receive(&mut outbound, t0, Message::Open(peer_open(65000, 90)));

    let passive = SessionConfig {
        passive: true,
        ..config(65001, 65000)
    };
    let mut inbound = Session::new(passive).expect("valid config");
    assert!(inbound.step(t0, Input::ManualStart).is_empty());
    assert_eq!(inbound.state(), SessionState::Active);
    inbound.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Remote,
        },
    );
    receive(&mut inbound, t0, Message::Open(peer_open(65000, 90)));

    let local = SpeakerIdentity {
        router_id: LOCAL_ID,
        asn: 65001,
    };
    let remote = SpeakerIdentity {
        router_id: inbound.peer_router_id().expect("OPEN received"),
        asn: 65000,
    };
    assert_eq!(resolve_collision(local, remote), ConnectionOrigin::Remote);

    let actions = outbound.step(t0, Input::CollisionDump);
    assert_eq!(notification_sent(&actions), Some((6, 7, vec![])));
    assert_eq!(actions.last(), Some(&Action::CloseTcp));
    assert_eq!(outbound.state(), SessionState::Idle);
    assert_eq!(outbound.next_deadline(), None, "the loser does not restart");

    let actions = receive(&mut inbound, t0, Message::Keepalive);
    assert!(matches!(
        actions.first(),
        Some(Action::SessionUp(info)) if info.origin == ConnectionOrigin::Remote
    ));
}

#[test]
fn unexpected_messages_get_fsm_error_notifications() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    let actions = receive(&mut session, t0, Message::Keepalive);
    assert_eq!(notification_sent(&actions), Some((5, 1, vec![4])));

    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    receive(&mut session, t0, Message::Open(peer_open(65000, 90)));
    let actions = receive(&mut session, t0, Message::Update(Update::end_of_rib()));
    assert_eq!(notification_sent(&actions), Some((5, 2, vec![2])));

    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    establish(&mut session, t0, peer_open(65000, 90));
    let actions = receive(&mut session, t0, Message::Open(peer_open(65000, 90)));
    assert_eq!(notification_sent(&actions), Some((5, 3, vec![1])));
    assert!(matches!(actions.last(), Some(Action::SessionDown { .. })));
}

#[test]
fn decode_errors_and_peer_notifications_end_the_session() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    establish(&mut session, t0, peer_open(65000, 90));
    let mut garbage = vec![0xff; 16];
    garbage.extend_from_slice(&[0x00, 0x13, 0x09]);
    let error = super::super::message::frame_len(&garbage).expect_err("bad type");
    let actions = session.step(t0, Input::DecodeError(error));
    assert_eq!(notification_sent(&actions), Some((1, 3, vec![9])));
    assert!(matches!(actions.last(), Some(Action::SessionDown { .. })));

    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    establish(&mut session, t0, peer_open(65000, 90));
    let cease = super::super::notification::Notification::administrative_shutdown("bye");
    let actions = receive(&mut session, t0, Message::Notification(cease.clone()));
    assert_eq!(
        actions,
        [
            Action::CloseTcp,
            Action::SessionDown {
                reason: DownReason::NotificationReceived(cease)
            }
        ]
    );
    assert!(session.next_deadline().is_some(), "restarts after back-off");
}

#[test]
fn tcp_loss_in_open_sent_returns_to_active_then_reconnects() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, Input::ManualStart);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    assert!(session.step(t0, Input::TcpClosed).is_empty());
    assert_eq!(session.state(), SessionState::Active);
    let retry_at = session.next_deadline().expect("ConnectRetryTimer runs");
    assert_eq!(session.step(retry_at, Input::Tick), [Action::Connect]);
    assert_eq!(session.state(), SessionState::Connect);
}

#[test]
fn zero_hold_time_disables_keepalives_and_hold_timer() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    let actions = establish(&mut session, t0, peer_open(65000, 0));
    assert!(matches!(actions.first(), Some(Action::SessionUp(info)) if info.hold_time == 0));
    assert_eq!(session.next_deadline(), None);
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    let t0 = Instant::now();
    let mut session = Session::new(config(4_200_000_001, 65000)).expect("valid config");
    session.step(t0, announce(&[ANYCAST]));
    let old_speaker = Open {
        capabilities: Capabilities {
            four_octet_as: None,
            ..Capabilities::default()
        },
        ..peer_open(65000, 90)
    };
    let actions = establish(&mut session, t0, old_speaker);
    assert!(!session.decode_context().four_octet_as);
    // No Multiprotocol capability at all still means IPv4 unicast.
    let update = parsed(updates_sent(&actions)[0], AsnLength::Bits16);
    assert_eq!(
        update
            .attributes
            .effective_as_path()
            .map(|path| path.to_string()),
        Some("4200000001".to_string())
    );
}

#[test]
fn nothing_is_announced_when_ipv4_unicast_was_not_negotiated() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    session.step(t0, announce(&[ANYCAST]));
    let actions = establish(&mut session, t0, ipv6_only_open(65000));
    assert!(matches!(actions.as_slice(), [Action::SessionUp(info)] if !info.ipv4_unicast));
}

#[test]
fn idle_refuses_connections_and_ignores_stale_events() {
    let t0 = Instant::now();
    let mut session = Session::new(config(65001, 65000)).expect("valid config");
    assert_eq!(
        session.step(
            t0,
            Input::TcpConnected {
                origin: ConnectionOrigin::Remote
            }
        ),
        [Action::CloseTcp]
    );
    for input in [
        Input::TcpClosed,
        Input::TcpConnectFailed,
        Input::Tick,
        Input::Message(Message::Keepalive),
        Input::CollisionDump,
        Input::ManualStop {
            reason: String::new(),
        },
    ] {
        assert!(session.step(t0, input).is_empty());
        assert_eq!(session.state(), SessionState::Idle);
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        (config(0, 65000), ConfigError::ReservedAsNumber { asn: 0 }),
        (
            config(65001, 23456),
            ConfigError::ReservedAsNumber { asn: 23456 },
        ),
        (
            SessionConfig {
                hold_time: 2,
                ..config(65001, 65000)
            },
            ConfigError::InvalidHoldTime { hold_time: 2 },
        ),
        (
            SessionConfig {
                router_id: Ipv4Addr::UNSPECIFIED,
                ..config(65001, 65000)
            },
            ConfigError::UnspecifiedRouterId,
        ),
        (
            SessionConfig {
                connect_retry_max: Duration::ZERO,
                ..config(65001, 65000)
            },
            ConfigError::InvalidConnectRetry,
        ),
    ];
    for (config, expected) in bad {
        assert_eq!(Session::new(config).map(|_| ()), Err(expected));
    }
}
