//! Property tests: decoding never panics on anything the network sends,
//! and what we build always decodes back cleanly.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use proptest::prelude::*;

use super::super::message::{frame_len, DecodeContext, Message};
use super::super::update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateEncoding,
};
use super::{encode, with_header};

fn any_context() -> impl Strategy<Value = DecodeContext> {
    any::<bool>().prop_map(|four_octet_as| DecodeContext { four_octet_as })
}

/// A path attribute with a known or random type and a consistent length
/// field, so the checks past the attribute header get exercised.
fn attribute() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop_oneof![
            prop::sample::select(vec![
                1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32
            ]),
            any::<u8>()
        ],
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(flags, type_code, value)| {
            let mut attribute = vec![flags & !0x10, type_code];
            attribute.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            attribute.extend_from_slice(&value);
            attribute
        })
}

/// An UPDATE body whose two length fields are right but whose contents
/// are arbitrary.
fn plausible_update_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..30),
        prop::collection::vec(attribute(), 0..8),
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(|(withdrawn, attributes, nlri)| {
            let attributes = attributes.concat();
            let mut body = Vec::new();
            body.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(&withdrawn);
            body.extend_from_slice(&u16::try_from(attributes.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(&attributes);
            body.extend_from_slice(&nlri);
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..5000),
        context in any_context(),
    ) {
        let _ = frame_len(&bytes);
        let _ = Message::decode(Bytes::from(bytes), context);
    }

    #[test]
    fn decode_never_panics_behind_a_valid_header(
        message_type in 1u8..=5,
        body in prop::collection::vec(any::<u8>(), 0..600),
        context in any_context(),
    ) {
        let bytes = with_header(message_type, &body);
        let _ = frame_len(&bytes);
        if let Ok(message) = Message::decode(Bytes::from(bytes.clone()), context) {
            // Bodies kept verbatim re-encode verbatim.
            if matches!(message, Message::Update(_) | Message::Notification(_) | Message::Keepalive) {
                prop_assert_eq!(encode(&message), bytes);
            }
        }
    }

    #[test]
    fn update_checks_never_panic_on_plausible_updates(
        body in plausible_update_body(),
        context in any_context(),
    ) {
        let bytes = with_header(2, &body);
        if let Ok(message) = Message::decode(Bytes::from(bytes.clone()), context) {
            prop_assert_eq!(encode(&message), bytes);
        }
    }

    /// IPv4 and IPv6 prefixes of any length with any attributes: every UPDATE fits in 4,096
    /// octets, decodes without error, and together they carry every prefix.
    #[test]
    fn built_announcements_always_decode_cleanly(
        raw_prefixes in prop::collection::vec((any::<u32>(), 0u8..=32), 1..300),
        raw_ipv6 in prop::collection::vec((any::<u128>(), 0u8..=128), 0..300),
        local_as in 1u32..,
        ibgp in any::<bool>(),
        four_octet_as in any::<bool>(),
        med in any::<Option<u32>>(),
        communities in prop::collection::vec(any::<u32>(), 0..40),
        large in prop::collection::vec(any::<(u32, u32, u32)>(), 0..40),
    ) {
        prop_assume!(local_as != 23456);
        let ipv4 = raw_prefixes
            .iter()
            .filter_map(|&(address, length)| Prefix::new(Ipv4Addr::from(address).into(), length));
        let ipv6 = raw_ipv6
            .iter()
            .filter_map(|&(address, length)| Prefix::new(Ipv6Addr::from(address).into(), length));
        let prefixes: Vec<Prefix> = ipv4.chain(ipv6).collect();
        let encoding = UpdateEncoding {
            local_as,
            ibgp,
            four_octet_as,
            next_hop: Ipv4Addr::new(192, 0, 2, 1),
            next_hop_ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
        };
        let attributes = RouteAttributes {
            med,
            local_pref: None,
            communities: communities.into_iter().map(StandardCommunity).collect(),
            large_communities: large
                .into_iter()
                .map(|(global_admin, local_data_1, local_data_2)| LargeCommunity {
                    global_admin,
                    local_data_1,
                    local_data_2,
                })
                .collect(),
        };
        let updates = Update::announce(&encoding, &attributes, &prefixes)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let mut announced = 0;
        for update in updates {
            let bytes = encode(&Message::Update(update));
            prop_assert!(bytes.len() <= 4096);
            let decoded = Message::decode(Bytes::from(bytes), DecodeContext { four_octet_as })
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            let Message::Update(decoded) = decoded else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            prop_assert_eq!(&decoded.summary().treat_as_withdraw, &None);
            let summary = decoded.summary();
            announced += (summary.announced_prefixes + summary.mp_reach_prefixes) as usize;
        }
        prop_assert_eq!(announced, prefixes.len());
    }
}
