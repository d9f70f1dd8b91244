//! Framing, OPEN, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH on the wire.

use std::net::Ipv4Addr;

use bgpkit_parser::models::capabilities::BgpCapabilityType;
use bgpkit_parser::models::{CapabilityValue, ParamValue};
use bgpkit_parser::parser::bgp::messages::parse_bgp_open_message;
use bytes::Bytes;

use super::super::message::{frame_len, Capabilities, Message, MessageError, Open};
use super::super::notification::Notification;
use super::{decode, encode, notification_of, with_header, NotificationFields, MARKER};

const KEEPALIVE: [u8; 19] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x00, 0x13, 0x04,
];

fn our_open(asn: u32) -> Open {
    Open {
        asn,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities {
            four_octet_as: Some(asn),
            mp_ipv4_unicast: true,
            route_refresh: true,
            ..Capabilities::default()
        },
    }
}

/// An OPEN body: version 4, `asn_field`, `hold`, 10.0.0.1, `parameters`.
fn open_body(asn_field: u16, hold: u16, parameters: &[u8]) -> Vec<u8> {
    let mut body = vec![4];
    body.extend_from_slice(&asn_field.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.push(u8::try_from(parameters.len()).expect("short parameters"));
    body.extend_from_slice(parameters);
    body
}

#[test]
fn keepalive_is_exactly_the_header() {
    assert_eq!(encode(&Message::Keepalive), KEEPALIVE);
    assert_eq!(decode(&KEEPALIVE), Ok(Message::Keepalive));
}

#[test]
fn open_with_two_octet_as_encodes_byte_exact_and_round_trips() {
    let open = Message::Open(our_open(65001));
    let expected = with_header(
        1,
        &[
            0x04, 0xfd, 0xe9, 0x00, 0x5a, 192, 0, 2, 1,  // version, AS, hold, id
            16, // optional parameters length
            0x02, 14, // one Capabilities parameter
            0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP: IPv4 unicast
            0x02, 0x00, // route refresh
            0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9, // 4-octet AS 65001
        ],
    );
    assert_eq!(encode(&open), expected);
    assert_eq!(decode(&expected), Ok(open));
}

#[test]
fn open_with_four_octet_as_sends_as_trans_in_the_header() {
    let open = Message::Open(our_open(4_200_000_001));
    let bytes = encode(&open);
    // RFC 6793 §4.1: AS_TRANS in "My Autonomous System".
    assert_eq!(&bytes[20..22], &[0x5b, 0xa0]);
    assert_eq!(&bytes[bytes.len() - 4..], &4_200_000_001u32.to_be_bytes());
    assert_eq!(decode(&bytes), Ok(open));
}

#[test]
fn bgpkit_parser_reads_our_open_the_same_way() {
    let bytes = encode(&Message::Open(our_open(4_200_000_001)));
    let mut body = Bytes::copy_from_slice(&bytes[19..]);
    let parsed = parse_bgp_open_message(&mut body).expect("bgpkit-parser accepts it");
    assert_eq!(parsed.version, 4);
    assert_eq!(parsed.hold_time, 90);
    assert_eq!(parsed.bgp_identifier, Ipv4Addr::new(192, 0, 2, 1));
    let capabilities: Vec<_> = parsed
        .opt_params
        .iter()
        .flat_map(|parameter| match &parameter.param_value {
            ParamValue::Capacities(capabilities) => capabilities.clone(),
            ParamValue::Raw(_) => Vec::new(),
        })
        .collect();
    assert_eq!(capabilities.len(), 3);
    assert!(capabilities.iter().any(|capability| matches!(
        &capability.value,
        CapabilityValue::FourOctetAs(four) if four.asn == 4_200_000_001
    )));
    assert!(capabilities
        .iter()
        .any(|capability| capability.ty == BgpCapabilityType::ROUTE_REFRESH_CAPABILITY_FOR_BGP_4));
}

// Real FRR OPENs (one capability per parameter, capabilities we ignore)
// are decoded in `fixtures.rs` from captured bytes.

#[test]
fn rfc9072_extended_optional_parameters_decode() {
    let mut body = open_body(0xfde9, 90, &[]);
    body.pop(); // replace the parameters length
    body.extend_from_slice(&[
        0xff, 0xff, 0x00, 0x09, // non-zero length, type 255, extended length 9
        0x02, 0x00, 0x06, 0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9, // 2-octet parameter length
    ]);
    let Ok(Message::Open(open)) = decode(&with_header(1, &body)) else {
        panic!("RFC 9072 OPEN must decode");
    };
    assert_eq!(open.capabilities.four_octet_as, Some(65001));
}

#[test]
fn open_errors_map_to_rfc4271_section_6_2_notifications() {
    let cases: [(Vec<u8>, NotificationFields); 9] = [
        // Version 3: Unsupported Version Number, data = 4 as 2 octets.
        (
            {
                let mut body = open_body(65000, 90, &[]);
                body[0] = 3;
                body
            },
            (2, 1, vec![0, 4]),
        ),
        (open_body(65000, 1, &[]), (2, 6, vec![])),
        (open_body(65000, 2, &[]), (2, 6, vec![])),
        (
            {
                let mut body = open_body(65000, 90, &[]);
                body[5..9].copy_from_slice(&[0, 0, 0, 0]);
                body
            },
            (2, 3, vec![]),
        ),
        // Parameter type 1 (deprecated authentication).
        (open_body(65000, 90, &[0x01, 0x01, 0x00]), (2, 4, vec![])),
        // Parameters length says 3, only 2 present.
        (
            {
                let mut body = open_body(65000, 90, &[0x02, 0x00]);
                body[9] = 3;
                body
            },
            (2, 0, vec![]),
        ),
        // Capability claims 4 octets, has 2.
        (
            open_body(65000, 90, &[0x02, 0x04, 0x41, 0x04, 0x00, 0x01]),
            (2, 0, vec![]),
        ),
        // 4-octet AS capability of the wrong size.
        (
            open_body(65000, 90, &[0x02, 0x04, 0x41, 0x02, 0x00, 0x01]),
            (2, 0, vec![]),
        ),
        // Route refresh capability with a value.
        (
            open_body(65000, 90, &[0x02, 0x03, 0x02, 0x01, 0x00]),
            (2, 0, vec![]),
        ),
    ];
    for (body, expected) in cases {
        let error = decode(&with_header(1, &body)).expect_err("must be rejected");
        assert_eq!(notification_of(&error), expected, "{error}");
    }
    // Hold times 0 and 3 are fine (RFC 4271 §4.2).
    for hold in [0, 3] {
        assert!(decode(&with_header(1, &open_body(65000, hold, &[]))).is_ok());
    }
}

#[test]
fn notification_round_trips_byte_exact() {
    let notification = Message::Notification(Notification::administrative_shutdown("maint"));
    let expected = with_header(3, &[6, 2, 5, b'm', b'a', b'i', b'n', b't']);
    assert_eq!(encode(&notification), expected);
    assert_eq!(decode(&expected), Ok(notification));

    let bare = with_header(3, &[4, 0]);
    assert_eq!(
        decode(&bare),
        Ok(Message::Notification(Notification::hold_timer_expired()))
    );
    // Unknown codes survive bgpkit-parser's catch-all variants.
    let odd = Message::Notification(Notification::new(42, 99, vec![1, 2, 3]));
    assert_eq!(decode(&encode(&odd)), Ok(odd));
}

#[test]
fn route_refresh_round_trips_byte_exact() {
    let refresh = Message::RouteRefresh { afi: 1, safi: 1 };
    let expected = with_header(5, &[0, 1, 0, 1]);
    assert_eq!(encode(&refresh), expected);
    assert_eq!(decode(&expected), Ok(refresh));
}

#[test]
fn frame_len_waits_for_the_whole_message_across_split_reads() {
    let mut stream = encode(&Message::Open(our_open(65001)));
    let open_len = stream.len();
    stream.extend_from_slice(&KEEPALIVE);
    for cut in 0..open_len {
        assert_eq!(frame_len(&stream[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(frame_len(&stream[..open_len]), Ok(Some(open_len)));
    // With more behind it, still only the first message.
    assert_eq!(frame_len(&stream), Ok(Some(open_len)));
    assert_eq!(frame_len(&stream[open_len..]), Ok(Some(19)));
}

#[test]
fn bad_marker_is_caught_from_the_first_wrong_octet() {
    assert_eq!(
        frame_len(&[0xff, 0xfe]),
        Err(MessageError::ConnectionNotSynchronized)
    );
    let mut bytes = KEEPALIVE;
    bytes[15] = 0;
    let error = frame_len(&bytes).expect_err("bad marker");
    assert_eq!(notification_of(&error), (1, 1, vec![]));
}

#[test]
fn bad_lengths_map_to_bad_message_length_with_the_length_as_data() {
    let header = |length: u16, message_type: u8| {
        let mut bytes = MARKER.to_vec();
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.push(message_type);
        bytes
    };
    for (length, message_type) in [
        (18, 4),   // below the header
        (4097, 2), // above the maximum
        (20, 4),   // KEEPALIVE must be 19
        (28, 1),   // OPEN minimum is 29
        (22, 2),   // UPDATE minimum is 23
        (20, 3),   // NOTIFICATION minimum is 21
        (22, 5),   // ROUTE-REFRESH is 23
    ] {
        let error = frame_len(&header(length, message_type)).expect_err("bad length");
        assert_eq!(
            notification_of(&error),
            (1, 2, length.to_be_bytes().to_vec()),
            "length {length} type {message_type}"
        );
    }
}

#[test]
fn unknown_types_map_to_bad_message_type_with_the_type_as_data() {
    for message_type in [0, 6, 255] {
        let mut bytes = KEEPALIVE;
        bytes[18] = message_type;
        let error = frame_len(&bytes).expect_err("bad type");
        assert_eq!(notification_of(&error), (1, 3, vec![message_type]));
    }
}

#[test]
fn decode_rejects_a_frame_that_is_not_exactly_one_message() {
    let mut long = KEEPALIVE.to_vec();
    long.push(0);
    assert_eq!(
        decode(&long),
        Err(MessageError::BadMessageLength { length: 19 })
    );
    assert_eq!(
        decode(&KEEPALIVE[..18]),
        Err(MessageError::BadMessageLength { length: 19 })
    );
}
