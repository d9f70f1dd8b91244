//! UPDATE building (byte-exact, cross-checked with bgpkit-parser) and the
//! checks on received UPDATEs.

use std::net::{IpAddr, Ipv4Addr};

use bgpkit_parser::models::{AsPath, AsnLength, AttrType, Community, MetaCommunity};
use bgpkit_parser::parser::bgp::messages::parse_bgp_update_message;
use bytes::Bytes;

use super::super::message::{Message, MessageError};
use super::super::update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateBuildError,
    UpdateEncoding,
};
use super::{decode, decode_four_octet, encode, notification_of, with_header, NotificationFields};

const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn prefix(a: u8, b: u8, c: u8, d: u8, length: u8) -> Prefix {
    Prefix::new(Ipv4Addr::new(a, b, c, d).into(), length).expect("valid prefix")
}

fn ebgp(local_as: u32, four_octet_as: bool) -> UpdateEncoding {
    UpdateEncoding {
        local_as,
        ibgp: false,
        four_octet_as,
        next_hop: NEXT_HOP,
        next_hop_ipv6: None,
    }
}

fn only(updates: Result<Vec<Update>, UpdateBuildError>) -> Update {
    let mut updates = updates.expect("builds");
    assert_eq!(updates.len(), 1);
    updates.remove(0)
}

#[test]
fn prefixes_clear_host_bits_and_reject_long_lengths() {
    assert_eq!(prefix(10, 1, 2, 3, 8), prefix(10, 0, 0, 0, 8));
    assert_eq!(prefix(10, 1, 2, 3, 8).to_string(), "10.0.0.0/8");
    assert_eq!(Prefix::new(Ipv4Addr::new(10, 0, 0, 0).into(), 33), None);
}

#[test]
fn ebgp_announcement_with_every_attribute_is_byte_exact() {
    let attributes = RouteAttributes {
        med: Some(50),
        local_pref: Some(300), // ignored towards an external peer
        communities: vec![
            StandardCommunity::new(65001, 100),
            StandardCommunity::GRACEFUL_SHUTDOWN,
            StandardCommunity::new(65001, 100), // duplicate, dropped
        ],
        large_communities: vec![LargeCommunity {
            global_admin: 65001,
            local_data_1: 1,
            local_data_2: 2,
        }],
    };
    let update = only(Update::announce(
        &ebgp(65001, true),
        &attributes,
        &[prefix(198, 51, 100, 7, 32)],
    ));
    let body: &[u8] = &[
        0x00, 0x00, // no withdrawn routes
        0x00, 0x35, // 53 octets of attributes
        0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
        0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9, // AS_PATH [65001]
        0x40, 0x03, 0x04, 192, 0, 2, 10, // NEXT_HOP
        0x80, 0x04, 0x04, 0x00, 0x00, 0x00, 0x32, // MED 50
        0xc0, 0x08, 0x08, 0xfd, 0xe9, 0x00, 0x64, 0xff, 0xff, 0x00, 0x00, // COMMUNITIES
        0xc0, 0x20, 0x0c, 0x00, 0x00, 0xfd, 0xe9, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x02, // LARGE_COMMUNITIES 65001:1:2
        0x20, 198, 51, 100, 7, // NLRI 198.51.100.7/32
    ];
    let message = Message::Update(update);
    let bytes = encode(&message);
    assert_eq!(bytes, with_header(2, body));
    assert_eq!(decode_four_octet(&bytes), Ok(message));
}

#[test]
fn four_octet_as_towards_a_two_octet_peer_uses_as_trans_and_as4_path() {
    let update = only(Update::announce(
        &ebgp(4_200_000_001, false),
        &RouteAttributes::default(),
        &[prefix(198, 51, 100, 0, 24)],
    ));
    let body: &[u8] = &[
        0x00, 0x00, 0x00, 0x1b, // 27 octets of attributes
        0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
        0x40, 0x02, 0x04, 0x02, 0x01, 0x5b, 0xa0, // AS_PATH [AS_TRANS], 2-octet
        0x40, 0x03, 0x04, 192, 0, 2, 10, // NEXT_HOP
        0xc0, 0x11, 0x06, 0x02, 0x01, 0xfa, 0x56, 0xea, 0x01, // AS4_PATH [4200000001]
        0x18, 198, 51, 100, // NLRI 198.51.100.0/24
    ];
    assert_eq!(update.body().as_ref(), body);

    let parsed = parse_bgp_update_message(update.body().clone(), false, &AsnLength::Bits16)
        .expect("bgpkit-parser accepts it");
    assert_eq!(
        parsed.attributes.as4_path(),
        Some(&AsPath::from_sequence([4_200_000_001]))
    );
    assert_eq!(
        parsed.attributes.effective_as_path(),
        Some(AsPath::from_sequence([4_200_000_001]))
    );
}

#[test]
fn two_octet_as_towards_a_two_octet_peer_needs_no_as4_path() {
    let update = only(Update::announce(
        &ebgp(65001, false),
        &RouteAttributes::default(),
        &[prefix(198, 51, 100, 7, 32)],
    ));
    assert_eq!(
        &update.body()[8..15],
        &[0x40, 0x02, 0x04, 0x02, 0x01, 0xfd, 0xe9]
    );
    let parsed =
        parse_bgp_update_message(update.body().clone(), false, &AsnLength::Bits16).expect("parses");
    assert!(!parsed.attributes.has_attr(AttrType::AS4_PATH));
}

#[test]
fn ibgp_announcement_has_empty_as_path_and_local_pref() {
    let encoding = UpdateEncoding {
        ibgp: true,
        ..ebgp(65001, true)
    };
    let update = only(Update::announce(
        &encoding,
        &RouteAttributes::default(),
        &[prefix(198, 51, 100, 7, 32)],
    ));
    let body: &[u8] = &[
        0x00, 0x00, 0x00, 0x15, // 21 octets of attributes
        0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
        0x40, 0x02, 0x00, // empty AS_PATH
        0x40, 0x03, 0x04, 192, 0, 2, 10, // NEXT_HOP
        0x40, 0x05, 0x04, 0x00, 0x00, 0x00, 0x64, // LOCAL_PREF 100
        0x20, 198, 51, 100, 7,
    ];
    assert_eq!(update.body().as_ref(), body);
}

#[test]
fn withdrawal_and_end_of_rib_are_byte_exact() {
    let update = only(Update::withdraw(&[
        prefix(198, 51, 100, 7, 32),
        prefix(10, 0, 0, 0, 8),
    ]));
    let body: &[u8] = &[0x00, 0x07, 0x20, 198, 51, 100, 7, 0x08, 10, 0x00, 0x00];
    let message = Message::Update(update);
    let bytes = encode(&message);
    assert_eq!(bytes, with_header(2, body));
    let Ok(Message::Update(decoded)) = decode(&bytes) else {
        panic!("withdrawal must decode");
    };
    assert_eq!(decoded.summary().withdrawn_prefixes, 2);
    assert_eq!(Message::Update(decoded), message);

    let end_of_rib = encode(&Message::Update(Update::end_of_rib()));
    assert_eq!(end_of_rib, with_header(2, &[0, 0, 0, 0]));
    let Ok(Message::Update(decoded)) = decode(&end_of_rib) else {
        panic!("End-of-RIB must decode");
    };
    assert!(decoded.summary().end_of_rib);
}

#[test]
fn many_prefixes_split_into_messages_under_4096_octets() {
    let prefixes: Vec<Prefix> = (0..1000u32)
        .map(|n| Prefix::host(Ipv4Addr::from(0x0a00_0000 + n).into()))
        .collect();
    let updates = Update::announce(&ebgp(65001, true), &RouteAttributes::default(), &prefixes)
        .expect("builds");
    assert_eq!(updates.len(), 2);
    let mut announced = 0;
    for update in updates {
        let bytes = encode(&Message::Update(update));
        assert!(bytes.len() <= 4096);
        let Ok(Message::Update(decoded)) = decode_four_octet(&bytes) else {
            panic!("split UPDATE must decode");
        };
        announced += decoded.summary().announced_prefixes;
    }
    assert_eq!(announced, 1000);

    let withdrawals = Update::withdraw(&prefixes).expect("builds");
    assert_eq!(withdrawals.len(), 2);
}

#[test]
fn long_community_lists_use_extended_length_and_oversized_ones_are_refused() {
    let large_communities: Vec<LargeCommunity> = (0..30)
        .map(|n| LargeCommunity {
            global_admin: 65001,
            local_data_1: n,
            local_data_2: 0,
        })
        .collect();
    let attributes = RouteAttributes {
        large_communities,
        ..RouteAttributes::default()
    };
    let update = only(Update::announce(
        &ebgp(65001, true),
        &attributes,
        &[prefix(198, 51, 100, 7, 32)],
    ));
    // Flags 0xd0: optional, transitive, extended length; 360 octets.
    let position = update
        .body()
        .windows(2)
        .position(|pair| pair == [0xd0, 0x20])
        .expect("extended LARGE_COMMUNITIES header");
    assert_eq!(&update.body()[position + 2..position + 4], &[0x01, 0x68]);
    let parsed =
        parse_bgp_update_message(update.body().clone(), false, &AsnLength::Bits32).expect("parses");
    let large = parsed
        .attributes
        .iter_communities()
        .filter(|community| matches!(community, MetaCommunity::Large(_)))
        .count();
    assert_eq!(large, 30);

    let too_many = RouteAttributes {
        communities: (0..1100).map(StandardCommunity).collect(),
        ..RouteAttributes::default()
    };
    assert!(matches!(
        Update::announce(
            &ebgp(65001, true),
            &too_many,
            &[prefix(198, 51, 100, 7, 32)]
        ),
        Err(UpdateBuildError::AttributesTooLarge { .. })
    ));
}

#[test]
fn bgpkit_parser_reads_our_announcement_the_same_way() {
    let attributes = RouteAttributes {
        med: Some(7),
        communities: vec![StandardCommunity::GRACEFUL_SHUTDOWN],
        ..RouteAttributes::default()
    };
    let update = only(Update::announce(
        &ebgp(65001, true),
        &attributes,
        &[prefix(198, 51, 100, 7, 32), prefix(203, 0, 113, 0, 24)],
    ));
    let parsed =
        parse_bgp_update_message(update.body().clone(), false, &AsnLength::Bits32).expect("parses");
    assert!(parsed.attributes.validation_warnings().is_empty());
    let announced: Vec<String> = parsed
        .announced_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(announced, ["198.51.100.7/32", "203.0.113.0/24"]);
    assert_eq!(parsed.attributes.next_hop(), Some(IpAddr::V4(NEXT_HOP)));
    assert_eq!(parsed.attributes.multi_exit_discriminator(), Some(7));
    assert_eq!(
        parsed.attributes.as_path(),
        Some(&AsPath::from_sequence([65001]))
    );
    let has_graceful_shutdown = parsed.attributes.iter_communities().any(|community| {
        matches!(community, MetaCommunity::Plain(Community::Custom(asn, 0)) if asn == 65535u32)
    });
    assert!(has_graceful_shutdown);
}

/// Attributes of a valid announcement: ORIGIN, empty AS_PATH, NEXT_HOP.
const BASE_ATTRIBUTES: [u8; 14] = [
    0x40, 0x01, 0x01, 0x00, 0x40, 0x02, 0x00, 0x40, 0x03, 0x04, 192, 0, 2, 1,
];

/// An UPDATE with no withdrawals, `attributes`, and `nlri`.
fn update_with(attributes: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(
        &u16::try_from(attributes.len())
            .expect("short")
            .to_be_bytes(),
    );
    body.extend_from_slice(attributes);
    body.extend_from_slice(nlri);
    with_header(2, &body)
}

fn with_base(extra: &[u8]) -> Vec<u8> {
    let mut attributes = BASE_ATTRIBUTES.to_vec();
    attributes.extend_from_slice(extra);
    attributes
}

const ONE_PREFIX: [u8; 4] = [0x18, 198, 51, 100];

#[test]
fn session_reset_errors_map_to_rfc4271_section_6_3_notifications() {
    let cases: [(Vec<u8>, NotificationFields); 6] = [
        // Withdrawn routes length runs past the message.
        (with_header(2, &[0x00, 0x10, 0x00, 0x00]), (3, 1, vec![])),
        // Total attribute length runs past the message.
        (with_header(2, &[0x00, 0x00, 0x00, 0x10]), (3, 1, vec![])),
        // NLRI prefix longer than 32 bits.
        (
            update_with(&BASE_ATTRIBUTES, &[33, 1, 2, 3, 4, 5]),
            (3, 10, vec![]),
        ),
        // NLRI prefix cut short.
        (update_with(&BASE_ATTRIBUTES, &[24, 10]), (3, 10, vec![])),
        // Unknown attribute 240 flagged well-known.
        (
            update_with(&with_base(&[0x40, 0xf0, 0x01, 0x07]), &ONE_PREFIX),
            (3, 2, vec![0x40, 0xf0, 0x01, 0x07]),
        ),
        // MP_UNREACH_NLRI twice (RFC 7606 §3(g)).
        (
            update_with(&[0x80, 0x0f, 0x03, 0, 1, 1, 0x80, 0x0f, 0x03, 0, 1, 1], &[]),
            (3, 1, vec![]),
        ),
    ];
    for (bytes, expected) in cases {
        let error = decode(&bytes).expect_err("must reset the session");
        assert_eq!(notification_of(&error), expected, "{error}");
    }
}

fn treat_as_withdraw(bytes: &[u8]) -> MessageError {
    let Ok(Message::Update(update)) = decode(bytes) else {
        panic!("attribute errors must not reset the session");
    };
    update
        .summary()
        .treat_as_withdraw
        .clone()
        .expect("treat-as-withdraw error recorded")
}

#[test]
fn attribute_errors_are_treat_as_withdraw_with_the_right_subcode() {
    let origin_3 = [0x40, 0x01, 0x01, 0x03];
    let bytes = update_with(
        &[&origin_3[..], &BASE_ATTRIBUTES[4..]].concat(),
        &ONE_PREFIX,
    );
    assert_eq!(
        notification_of(&treat_as_withdraw(&bytes)),
        (3, 6, origin_3.to_vec())
    );

    let optional_origin = [0xc0, 0x01, 0x01, 0x00];
    let bytes = update_with(
        &[&optional_origin[..], &BASE_ATTRIBUTES[4..]].concat(),
        &ONE_PREFIX,
    );
    assert_eq!(
        notification_of(&treat_as_withdraw(&bytes)),
        (3, 4, optional_origin.to_vec())
    );

    let short_next_hop = [0x40, 0x03, 0x03, 192, 0, 2];
    let bytes = update_with(
        &[&BASE_ATTRIBUTES[..7], &short_next_hop[..]].concat(),
        &ONE_PREFIX,
    );
    assert_eq!(
        notification_of(&treat_as_withdraw(&bytes)),
        (3, 5, short_next_hop.to_vec())
    );

    let multicast_next_hop = [0x40, 0x03, 0x04, 224, 0, 0, 1];
    let bytes = update_with(
        &[&BASE_ATTRIBUTES[..7], &multicast_next_hop[..]].concat(),
        &ONE_PREFIX,
    );
    assert_eq!(
        notification_of(&treat_as_withdraw(&bytes)),
        (3, 8, multicast_next_hop.to_vec())
    );

    // No NEXT_HOP at all: Missing Well-known Attribute, data = type 3.
    let bytes = update_with(&BASE_ATTRIBUTES[..7], &ONE_PREFIX);
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)), (3, 3, vec![3]));

    // AS_PATH segment claims two ASes, holds one.
    let bad_path = [0x40, 0x02, 0x04, 0x02, 0x02, 0xfd, 0xe9];
    let bytes = update_with(
        &[&BASE_ATTRIBUTES[..4], &bad_path[..], &BASE_ATTRIBUTES[7..]].concat(),
        &ONE_PREFIX,
    );
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)), (3, 11, vec![]));

    // COMMUNITIES not a multiple of 4.
    let bytes = update_with(&with_base(&[0xc0, 0x08, 0x03, 1, 2, 3]), &ONE_PREFIX);
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)).1, 5);

    // An attribute running past the attribute block (RFC 7606 §4).
    let bytes = update_with(&with_base(&[0xc0, 0x08]), &ONE_PREFIX);
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)), (3, 1, vec![]));

    // Malformed MP_REACH_NLRI: Optional Attribute Error.
    let bytes = update_with(&with_base(&[0x80, 0x0e, 0x02, 0, 1]), &ONE_PREFIX);
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)).1, 9);
}

#[test]
fn discard_class_errors_and_unknown_optional_attributes_are_ignored() {
    // Bad ATOMIC_AGGREGATE length, and unknown optional transitive 240.
    let bytes = update_with(
        &with_base(&[0x40, 0x06, 0x01, 0x00, 0xc0, 0xf0, 0x02, 0xaa, 0xbb]),
        &ONE_PREFIX,
    );
    let Ok(Message::Update(update)) = decode(&bytes) else {
        panic!("must decode");
    };
    assert_eq!(update.summary().treat_as_withdraw, None);
    assert_eq!(update.summary().path_attributes, 5);
}

#[test]
fn as_path_width_follows_the_negotiated_as_size() {
    let four_octet_path = [0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9];
    let bytes = update_with(
        &[
            &BASE_ATTRIBUTES[..4],
            &four_octet_path[..],
            &BASE_ATTRIBUTES[7..],
        ]
        .concat(),
        &ONE_PREFIX,
    );
    let Ok(Message::Update(update)) = decode_four_octet(&bytes) else {
        panic!("valid with 4-octet AS");
    };
    assert_eq!(update.summary().treat_as_withdraw, None);
    assert_eq!(notification_of(&treat_as_withdraw(&bytes)), (3, 11, vec![]));
}

#[test]
fn multiprotocol_prefixes_are_counted_and_mp_end_of_rib_recognised() {
    let mut mp_reach = vec![0x80, 0x0e, 0x00, 0x00, 0x02, 0x01, 16];
    mp_reach.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    mp_reach.extend_from_slice(&[0; 12]); // next hop 2001:db8::
    mp_reach.push(0); // reserved
    mp_reach.extend_from_slice(&[
        48, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0,
    ]);
    mp_reach[2] = u8::try_from(mp_reach.len() - 3).expect("short");
    let bytes = update_with(&[&BASE_ATTRIBUTES[..7], &mp_reach[..]].concat(), &[]);
    let Ok(Message::Update(update)) = decode(&bytes) else {
        panic!("MP_REACH_NLRI UPDATE must decode");
    };
    assert_eq!(update.summary().mp_reach_prefixes, 2);
    assert_eq!(update.summary().treat_as_withdraw, None);

    let bytes = update_with(&[0x80, 0x0f, 0x03, 0x00, 0x02, 0x01], &[]);
    let Ok(Message::Update(update)) = decode(&bytes) else {
        panic!("MP End-of-RIB must decode");
    };
    assert!(update.summary().end_of_rib);
}

#[test]
fn received_body_is_kept_so_re_encoding_is_identical() {
    let bytes = update_with(
        &with_base(&[0xc0, 0x08, 0x04, 0xff, 0xff, 0, 0]),
        &ONE_PREFIX,
    );
    let message = decode(&bytes).expect("decodes");
    assert_eq!(encode(&message), bytes);
    let Message::Update(update) = message else {
        panic!("UPDATE");
    };
    assert_eq!(update.body(), &Bytes::copy_from_slice(&bytes[19..]));
    assert_eq!(update.summary().announced_prefixes, 1);
}
