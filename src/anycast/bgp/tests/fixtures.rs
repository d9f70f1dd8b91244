//! Messages sent by FRR 8.4.4's bgpd, captured with tcpdump between two FRR
//! speakers in network namespaces (`tests/fixtures/bgp/capture.sh`, see the
//! README there): 198.18.9.1 in AS 4200000001 and 198.18.9.2 in AS 65002.
//! Each must decode to what FRR meant; where we build the same message
//! ourselves, our bytes must be FRR's.

use std::net::{IpAddr, Ipv4Addr};

use bgpkit_parser::models::{AsPath, AsnLength, Community, MetaCommunity, Origin};
use bgpkit_parser::parser::bgp::messages::parse_bgp_update_message;
use bytes::Bytes;

use super::super::message::{frame_len, Capabilities, DecodeContext, Message, MessageError, Open};
use super::super::notification::{cease_subcode, code, Notification};
use super::super::update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateEncoding,
};
use super::super::{AFI_IPV4, AS_TRANS, SAFI_UNICAST};
use super::encode;

const FRR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
const FRR_A_AS: u32 = 4_200_000_001;
const FRR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);
const FRR_B_AS: u32 = 65002;
/// The prefix FRR A announced (pgcast's anycast address).
const ANNOUNCED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 0);
/// `neighbor 198.18.9.2 shutdown message ...` on FRR A.
const SHUTDOWN_MESSAGE: &str = "pgcast fixture: planned maintenance";

const FIXTURES: [&str; 12] = [
    "frr-open-as4200000001.bin",
    "frr-open-as65002.bin",
    "frr-keepalive.bin",
    "frr-update-announce.bin",
    "frr-update-withdraw.bin",
    "frr-end-of-rib.bin",
    "frr-route-refresh.bin",
    "frr-route-refresh-borr.bin",
    "frr-route-refresh-eorr.bin",
    "frr-notification-hold-timer-expired.bin",
    "frr-notification-cease-shutdown.bin",
    "frr-notification-hard-reset-shutdown.bin",
];

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/bgp/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Decodes a fixture in the context of the captured session: both FRR
/// speakers advertised the 4-octet AS capability.
fn decode_fixture(name: &str) -> Message {
    let context = DecodeContext {
        four_octet_as: true,
    };
    Message::decode(fixture(name), context).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The capability codes of an OPEN, in the order they are on the wire.
fn capability_codes(open: &[u8]) -> Vec<u8> {
    let parameters = &open[29..];
    assert_eq!(usize::from(open[28]), parameters.len(), "parameters length");
    let mut codes = Vec::new();
    let mut rest = parameters;
    while let [parameter_type, length, tail @ ..] = rest {
        assert_eq!(*parameter_type, 2, "only Capabilities parameters");
        let (capabilities, after) = tail.split_at(usize::from(*length));
        let mut caps = capabilities;
        while let [code, cap_len, cap_tail @ ..] = caps {
            codes.push(*code);
            caps = &cap_tail[usize::from(*cap_len)..];
        }
        rest = after;
    }
    codes
}

#[test]
fn every_fixture_is_exactly_one_frame() {
    for name in FIXTURES {
        let bytes = fixture(name);
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())), "{name}");
        assert_eq!(frame_len(&bytes[..bytes.len() - 1]), Ok(None), "{name}");
        // Two back to back: the first frame is found alone.
        let doubled = [bytes.as_ref(), bytes.as_ref()].concat();
        assert_eq!(frame_len(&doubled), Ok(Some(bytes.len())), "{name}");
    }
}

#[test]
fn open_of_a_four_octet_as_speaker_carries_as_trans_in_the_header() {
    let bytes = fixture("frr-open-as4200000001.bin");
    assert_eq!(bytes.len(), 95);
    assert_eq!(bytes[19], 4, "version");
    assert_eq!(u16::from_be_bytes([bytes[20], bytes[21]]), AS_TRANS);
    // FRR 8.4 advertises one capability per Capabilities parameter: MP
    // IPv4 unicast, route refresh (old 128 and RFC 2918), enhanced route
    // refresh (70), 4-octet AS (65), extended message (6), ADD-PATH (69),
    // FQDN (73), graceful restart (64), long-lived graceful restart (71).
    assert_eq!(
        capability_codes(&bytes),
        [1, 128, 2, 70, 65, 6, 69, 73, 64, 71]
    );
    let expected = Open {
        asn: FRR_A_AS,
        hold_time: 9,
        router_id: FRR_A,
        capabilities: Capabilities {
            four_octet_as: Some(FRR_A_AS),
            mp_ipv4_unicast: true,
            mp_ipv6_unicast: false,
            route_refresh: true,
            mp_other_families: false,
        },
    };
    assert_eq!(
        decode_fixture("frr-open-as4200000001.bin"),
        Message::Open(expected)
    );
}

#[test]
fn open_of_a_two_octet_as_speaker_repeats_its_as_in_the_capability() {
    let bytes = fixture("frr-open-as65002.bin");
    assert_eq!(u16::from_be_bytes([bytes[20], bytes[21]]), 65002);
    let Message::Open(open) = decode_fixture("frr-open-as65002.bin") else {
        panic!("an OPEN");
    };
    assert_eq!(open.asn, FRR_B_AS);
    assert_eq!(open.capabilities.four_octet_as, Some(FRR_B_AS));
    // `frr defaults traditional`: keepalive 60, hold 180.
    assert_eq!(open.hold_time, 180);
    assert_eq!(open.router_id, FRR_B);
    assert!(open.capabilities.mp_ipv4_unicast && open.capabilities.route_refresh);
    assert!(!open.capabilities.mp_other_families);
}

#[test]
fn keepalive_is_the_bare_header_we_send_too() {
    assert_eq!(decode_fixture("frr-keepalive.bin"), Message::Keepalive);
    assert_eq!(
        encode(&Message::Keepalive),
        fixture("frr-keepalive.bin").as_ref()
    );
}

#[test]
fn announcement_with_communities_passes_our_checks() {
    let Message::Update(update) = decode_fixture("frr-update-announce.bin") else {
        panic!("an UPDATE");
    };
    let summary = update.summary();
    assert_eq!(summary.announced_prefixes, 1);
    assert_eq!(summary.withdrawn_prefixes, 0);
    // ORIGIN, AS_PATH, NEXT_HOP, MED, COMMUNITIES, LARGE_COMMUNITY.
    assert_eq!(summary.path_attributes, 6);
    assert!(!summary.end_of_rib);
    assert_eq!(summary.treat_as_withdraw, None);

    // Read with 2-octet AS numbers, FRR's 6-octet AS_PATH (one 4-octet AS)
    // no longer adds up: RFC 7606 treat-as-withdraw, not a session reset.
    let misread = Message::decode(fixture("frr-update-announce.bin"), DecodeContext::default());
    let Ok(Message::Update(misread)) = misread else {
        panic!("still an UPDATE: {misread:?}");
    };
    assert_eq!(
        misread.summary().treat_as_withdraw,
        Some(MessageError::MalformedAsPath)
    );
}

/// bgpkit-parser's reading of an UPDATE body, as the oracle for content
/// our received-UPDATE check only counts.
struct Route {
    announced: Vec<String>,
    withdrawn: Vec<String>,
    origin: Origin,
    as_path: Option<AsPath>,
    next_hop: Option<IpAddr>,
    med: Option<u32>,
    communities: Vec<u32>,
    large_communities: Vec<(u32, u32, u32)>,
}

fn parse_route(body: &Bytes) -> Route {
    let parsed = parse_bgp_update_message(body.clone(), false, &AsnLength::Bits32).expect("parses");
    assert!(parsed.attributes.validation_warnings().is_empty());
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    for community in parsed.attributes.iter_communities() {
        match community {
            MetaCommunity::Plain(Community::Custom(asn, value)) => {
                communities.push((asn.to_u32() << 16) | u32::from(value));
            }
            MetaCommunity::Large(large) => large_communities.push((
                large.global_admin,
                large.local_data[0],
                large.local_data[1],
            )),
            other => panic!("unexpected community {other:?}"),
        }
    }
    Route {
        announced: parsed
            .announced_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect(),
        withdrawn: parsed
            .withdrawn_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect(),
        origin: parsed.attributes.origin(),
        as_path: parsed.attributes.as_path().cloned(),
        next_hop: parsed.attributes.next_hop(),
        med: parsed.attributes.multi_exit_discriminator(),
        communities,
        large_communities,
    }
}

#[test]
fn announcement_carries_the_prefix_and_both_kinds_of_community() {
    let bytes = fixture("frr-update-announce.bin");
    let route = parse_route(&bytes.slice(19..));
    assert_eq!(route.announced, ["198.18.2.0/32"]);
    assert!(route.withdrawn.is_empty());
    assert_eq!(route.origin, Origin::IGP);
    assert_eq!(route.as_path, Some(AsPath::from_sequence([FRR_A_AS])));
    assert_eq!(route.next_hop, Some(IpAddr::V4(FRR_A)));
    assert_eq!(route.med, Some(0));
    assert_eq!(
        route.communities,
        [
            StandardCommunity::new(64512, 100).0,
            StandardCommunity::GRACEFUL_SHUTDOWN.0
        ]
    );
    assert_eq!(route.large_communities, [(FRR_A_AS, 1, 2)]);
}

#[test]
fn our_announcement_of_the_same_route_reads_like_frrs() {
    let encoding = UpdateEncoding {
        local_as: FRR_A_AS,
        ibgp: false,
        four_octet_as: true,
        next_hop: FRR_A,
        next_hop_ipv6: None,
    };
    let attributes = RouteAttributes {
        med: Some(0),
        local_pref: None,
        communities: vec![
            StandardCommunity::new(64512, 100),
            StandardCommunity::GRACEFUL_SHUTDOWN,
        ],
        large_communities: vec![LargeCommunity {
            global_admin: FRR_A_AS,
            local_data_1: 1,
            local_data_2: 2,
        }],
    };
    let ours = Update::announce(&encoding, &attributes, &[Prefix::host(ANNOUNCED.into())])
        .expect("builds");
    let [ours] = ours.as_slice() else {
        panic!("one UPDATE, got {}", ours.len());
    };
    let frr = fixture("frr-update-announce.bin");
    let (a, b) = (parse_route(ours.body()), parse_route(&frr.slice(19..)));
    assert_eq!(a.announced, b.announced);
    assert_eq!(a.origin, b.origin);
    assert_eq!(a.as_path, b.as_path);
    assert_eq!(a.next_hop, b.next_hop);
    assert_eq!(a.med, b.med);
    assert_eq!(a.communities, b.communities);
    assert_eq!(a.large_communities, b.large_communities);
    // Not byte-identical: FRR sets the Extended Length flag on AS_PATH even
    // for 6 octets (flags 0x50), bgpkit-parser only when it is needed.
    assert_eq!(&frr[23..26], &[0x40, 1, 1], "ORIGIN first");
    assert_eq!(&frr[27..30], &[0x50, 2, 0], "AS_PATH, extended length");
}

#[test]
fn withdrawal_is_byte_identical_to_ours() {
    let Message::Update(update) = decode_fixture("frr-update-withdraw.bin") else {
        panic!("an UPDATE");
    };
    assert_eq!(update.summary().withdrawn_prefixes, 1);
    assert_eq!(update.summary().announced_prefixes, 0);
    assert_eq!(update.summary().path_attributes, 0);
    assert!(!update.summary().end_of_rib);
    assert_eq!(
        parse_route(update.body()).withdrawn,
        ["198.18.2.0/32"],
        "the withdrawn prefix"
    );
    let ours = Update::withdraw(&[Prefix::host(ANNOUNCED.into())]).expect("builds");
    let [ours] = ours.as_slice() else {
        panic!("one UPDATE, got {}", ours.len());
    };
    assert_eq!(
        encode(&Message::Update(ours.clone())),
        fixture("frr-update-withdraw.bin").as_ref()
    );
}

#[test]
fn end_of_rib_is_byte_identical_to_ours() {
    let Message::Update(update) = decode_fixture("frr-end-of-rib.bin") else {
        panic!("an UPDATE");
    };
    assert!(update.summary().end_of_rib);
    assert_eq!(
        encode(&Message::Update(Update::end_of_rib())),
        fixture("frr-end-of-rib.bin").as_ref()
    );
}

#[test]
fn route_refresh_request_is_byte_identical_to_ours() {
    let request = Message::RouteRefresh {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST,
    };
    assert_eq!(decode_fixture("frr-route-refresh.bin"), request);
    assert_eq!(encode(&request), fixture("frr-route-refresh.bin").as_ref());
    // RFC 7313 BoRR / EoRR (subtype 1 / 2): FRR only sends them to a peer
    // that advertised Enhanced Route Refresh, which we never do. Read
    // anyway, the subtype octet is ignored as RFC 2918 §3 says.
    for (name, subtype) in [
        ("frr-route-refresh-borr.bin", 1),
        ("frr-route-refresh-eorr.bin", 2),
    ] {
        assert_eq!(fixture(name)[21], subtype, "{name}");
        assert_eq!(decode_fixture(name), request, "{name}");
    }
}

#[test]
fn hold_timer_expired_is_byte_identical_to_ours() {
    let expected = Notification::hold_timer_expired();
    assert_eq!(
        decode_fixture("frr-notification-hold-timer-expired.bin"),
        Message::Notification(expected.clone())
    );
    assert_eq!(
        encode(&Message::Notification(expected)),
        fixture("frr-notification-hold-timer-expired.bin").as_ref()
    );
}

#[test]
fn administrative_shutdown_carries_the_rfc8203_message() {
    let Message::Notification(notification) = decode_fixture("frr-notification-cease-shutdown.bin")
    else {
        panic!("a NOTIFICATION");
    };
    assert_eq!(notification.code, code::CEASE);
    assert_eq!(notification.subcode, cease_subcode::ADMINISTRATIVE_SHUTDOWN);
    assert_eq!(
        notification.shutdown_communication(),
        Some(Ok(SHUTDOWN_MESSAGE))
    );
    // What pgcast sends on SIGTERM is the same message, octet for octet.
    assert_eq!(
        encode(&Message::Notification(
            Notification::administrative_shutdown(SHUTDOWN_MESSAGE)
        )),
        fixture("frr-notification-cease-shutdown.bin").as_ref()
    );
}

/// With Graceful Restart's N-bit advertised by both sides (FRR's default
/// between FRR speakers), FRR wraps the Cease in a Hard Reset (RFC 8538
/// §3, Cease subcode 9; the data is the inner code, subcode and data).
/// We advertise no Graceful Restart, so FRR never sends us one; if a peer
/// did, it is a Cease without a shutdown communication of ours to read.
#[test]
fn hard_reset_wrapping_a_shutdown_decodes_as_a_plain_cease() {
    let Message::Notification(notification) =
        decode_fixture("frr-notification-hard-reset-shutdown.bin")
    else {
        panic!("a NOTIFICATION");
    };
    assert_eq!((notification.code, notification.subcode), (code::CEASE, 9));
    let inner = Notification::administrative_shutdown(SHUTDOWN_MESSAGE);
    assert_eq!(notification.data[..2], [inner.code, inner.subcode]);
    assert_eq!(notification.data[2..], inner.data[..]);
    assert_eq!(notification.shutdown_communication(), None);
}

/// A whole session replayed from FRR's bytes: pgcast (AS 65001) talking to
/// FRR A. The OPEN negotiates 4-octet AS and a 9 s hold time, FRR's
/// UPDATEs are counted, its Cease ends the session with its message.
#[test]
fn session_with_frr_bytes_comes_up_and_reports_the_shutdown() {
    use std::time::{Duration, Instant};

    use super::super::collision::ConnectionOrigin;
    use super::super::fsm::{Action, DownReason, Input, Session, SessionState};
    use super::super::session_config::SessionConfig;

    let local_id = Ipv4Addr::new(198, 18, 9, 2);
    let mut session =
        Session::new(SessionConfig::new(65001, FRR_A_AS, local_id, local_id)).expect("valid");
    let t0 = Instant::now();
    let receive = |session: &mut Session, name: &str| {
        let input = match Message::decode(fixture(name), session.decode_context()) {
            Ok(message) => Input::Message(message),
            Err(error) => Input::DecodeError(error),
        };
        session.step(t0, input)
    };
    assert_eq!(session.step(t0, Input::ManualStart), [Action::Connect]);
    session.step(
        t0,
        Input::TcpConnected {
            origin: ConnectionOrigin::Local,
        },
    );
    assert_eq!(
        receive(&mut session, "frr-open-as4200000001.bin"),
        [Action::Send(Message::Keepalive)]
    );
    let actions = receive(&mut session, "frr-keepalive.bin");
    let info = actions
        .iter()
        .find_map(|action| match action {
            Action::SessionUp(info) => Some(info.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SessionUp in {actions:?}"));
    assert_eq!(session.state(), SessionState::Established);
    assert_eq!(info.peer_as, FRR_A_AS);
    assert_eq!(info.peer_router_id, FRR_A);
    assert_eq!(info.hold_time, 9);
    assert_eq!(info.keepalive_interval, Duration::from_secs(3));
    assert!(info.four_octet_as && info.route_refresh && info.ipv4_unicast);

    for name in [
        "frr-end-of-rib.bin",
        "frr-update-announce.bin",
        "frr-keepalive.bin",
        "frr-update-withdraw.bin",
    ] {
        let actions = receive(&mut session, name);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::SessionDown { .. } | Action::CloseTcp)),
            "{name}: {actions:?}"
        );
    }
    let updates = session.received_updates();
    assert_eq!(updates.messages, 3);
    assert_eq!(updates.announced_prefixes, 1);
    assert_eq!(updates.withdrawn_prefixes, 1);
    assert_eq!(updates.treat_as_withdraw, 0);

    let actions = receive(&mut session, "frr-notification-cease-shutdown.bin");
    let reason = actions.iter().find_map(|action| match action {
        Action::SessionDown { reason } => Some(reason.clone()),
        _ => None,
    });
    let Some(DownReason::NotificationReceived(notification)) = reason else {
        panic!("session down on FRR's Cease: {actions:?}");
    };
    assert_eq!(
        notification.shutdown_communication(),
        Some(Ok(SHUTDOWN_MESSAGE))
    );
    assert_ne!(session.state(), SessionState::Established);
}
