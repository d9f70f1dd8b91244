//! Property tests: round trips for every packet body and LSA type, and "decoding never
//! panics" on arbitrary bytes and on mutations of valid packets.

use std::net::Ipv4Addr;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::super::auth::*;
use super::super::checksum::{fletcher_checksum, internet_checksum};
use super::super::lsa::*;
use super::super::packet::*;

fn arb_ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn arb_options() -> impl Strategy<Value = Options> {
    any::<u8>().prop_map(Options)
}

fn arb_key() -> impl Strategy<Value = LsaKey> {
    (any::<u8>(), arb_ip(), arb_ip()).prop_map(|(ls_type, ls_id, adv_router)| LsaKey {
        ls_type,
        ls_id,
        adv_router,
    })
}

fn arb_header() -> impl Strategy<Value = LsaHeader> {
    (
        any::<u16>(),
        arb_options(),
        arb_key(),
        any::<i32>(),
        any::<u16>(),
        20u16..,
    )
        .prop_map(|(age, options, key, seq, checksum, length)| LsaHeader {
            age,
            options,
            ls_type: key.ls_type,
            ls_id: key.ls_id,
            adv_router: key.adv_router,
            seq,
            checksum,
            length,
        })
}

fn arb_router_link() -> impl Strategy<Value = RouterLink> {
    (arb_ip(), arb_ip(), any::<u8>(), any::<u16>()).prop_map(
        |(link_id, link_data, link_type, metric)| RouterLink {
            link_id,
            link_data,
            link_type,
            metric,
        },
    )
}

/// An LS type together with a body of the matching kind.
fn arb_typed_body() -> impl Strategy<Value = (u8, LsaBody)> {
    let metric = 0..=LS_INFINITY;
    prop_oneof![
        (any::<u8>(), vec(arb_router_link(), 0..8)).prop_map(|(flags, links)| (
            ls_type::ROUTER,
            LsaBody::Router(RouterLsa { flags, links })
        )),
        (arb_ip(), vec(arb_ip(), 0..8)).prop_map(|(mask, attached)| (
            ls_type::NETWORK,
            LsaBody::Network(NetworkLsa { mask, attached })
        )),
        (
            prop_oneof![Just(ls_type::SUMMARY_NET), Just(ls_type::SUMMARY_ASBR)],
            arb_ip(),
            metric.clone()
        )
            .prop_map(|(t, mask, metric)| (t, LsaBody::Summary(SummaryLsa { mask, metric }))),
        (arb_ip(), any::<bool>(), metric, arb_ip(), any::<u32>()).prop_map(
            |(mask, type2, metric, forwarding, tag)| (
                ls_type::AS_EXTERNAL,
                LsaBody::AsExternal(AsExternalLsa {
                    mask,
                    type2,
                    metric,
                    forwarding,
                    tag,
                })
            )
        ),
        (6u8..).prop_map(|t| (t, LsaBody::Unknown)),
    ]
}

fn arb_lsa() -> impl Strategy<Value = Lsa> {
    (
        any::<u16>(),
        arb_options(),
        arb_key(),
        any::<i32>(),
        arb_typed_body(),
    )
        .prop_map(|(age, options, key, seq, (ls_type, body))| {
            Lsa::originate(age, options, LsaKey { ls_type, ..key }, seq, body)
        })
}

fn arb_body() -> impl Strategy<Value = PacketBody> {
    let hello = (
        arb_ip(),
        any::<u16>(),
        arb_options(),
        any::<u8>(),
        any::<u32>(),
        arb_ip(),
        arb_ip(),
        vec(arb_ip(), 0..8),
    )
        .prop_map(
            |(
                network_mask,
                hello_interval,
                options,
                priority,
                dead_interval,
                dr,
                bdr,
                neighbors,
            )| {
                PacketBody::Hello(Hello {
                    network_mask,
                    hello_interval,
                    options,
                    priority,
                    dead_interval,
                    dr,
                    bdr,
                    neighbors,
                })
            },
        );
    let dd = (
        any::<u16>(),
        arb_options(),
        any::<(bool, bool, bool)>(),
        any::<u32>(),
        vec(arb_header(), 0..6),
    )
        .prop_map(|(mtu, options, (init, more, master), seq, headers)| {
            PacketBody::DbDescription(DbDescription {
                mtu,
                options,
                init,
                more,
                master,
                seq,
                headers,
            })
        });
    prop_oneof![
        hello,
        dd,
        vec(arb_key(), 0..8).prop_map(PacketBody::LsRequest),
        vec(arb_lsa(), 0..5).prop_map(PacketBody::LsUpdate),
        vec(arb_header(), 0..8).prop_map(PacketBody::LsAck),
    ]
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    (arb_ip(), arb_ip(), arb_body()).prop_map(|(router_id, area_id, body)| Packet {
        router_id,
        area_id,
        body,
    })
}

fn arb_auth() -> impl Strategy<Value = AuthKey> {
    let key = vec(any::<u8>(), 0..80);
    prop_oneof![
        Just(AuthKey::Null),
        any::<[u8; 8]>().prop_map(AuthKey::Simple),
        (any::<u8>(), key.clone()).prop_map(|(key_id, key)| AuthKey::Md5 { key_id, key }),
        (any::<u8>(), key, any::<bool>()).prop_map(|(key_id, key, rfc2104)| {
            AuthKey::HmacSha256 {
                key_id,
                key,
                keying: if rfc2104 {
                    HmacKeying::Rfc2104
                } else {
                    HmacKeying::Rfc5709
                },
            }
        }),
    ]
}

fn encode(packet: &Packet, key: &AuthKey, seq: u32) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(packet, key, seq, &mut out);
    out.to_vec()
}

/// Configurations to throw arbitrary input at: every AuType.
fn configs() -> Vec<AuthConfig> {
    vec![
        AuthConfig::null(),
        AuthConfig::single(AuthKey::simple(b"pw")),
        AuthConfig {
            send: AuthKey::Null,
            accept: vec![
                AuthKey::Md5 {
                    key_id: 1,
                    key: b"k".to_vec(),
                },
                AuthKey::HmacSha256 {
                    key_id: 2,
                    key: b"k".to_vec(),
                    keying: HmacKeying::Rfc5709,
                },
            ],
        },
    ]
}

/// Recomputes length and checksum (AuType 0 with a zero auth field) so mutated bodies get
/// past the checksum and reach the body decoders.
fn fix_up(wire: &mut [u8]) {
    if wire.len() < HEADER_LEN {
        return;
    }
    let len = u16::try_from(wire.len()).unwrap_or(u16::MAX).to_be_bytes();
    wire[2..4].copy_from_slice(&len);
    wire[12..24].fill(0);
    let sum = internet_checksum(wire);
    wire[12..14].copy_from_slice(&sum.to_be_bytes());
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
    SetU16(usize, u16),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), any::<u16>()).prop_map(|(i, v)| Mutation::SetU16(i, v)),
    ]
}

fn apply(wire: &mut Vec<u8>, m: &Mutation) {
    if wire.is_empty() {
        return;
    }
    let n = wire.len();
    match *m {
        Mutation::Flip(i, x) => wire[i % n] ^= x,
        Mutation::Truncate(i) => wire.truncate(i % n),
        Mutation::Insert(i, b) => wire.insert(i % (n + 1), b),
        Mutation::Remove(i) => {
            wire.remove(i % n);
        }
        Mutation::SetU16(i, v) => {
            let i = i % n;
            for (dst, src) in wire[i..].iter_mut().zip(v.to_be_bytes()) {
                *dst = src;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packet_round_trip_every_auth(packet in arb_packet(), key in arb_auth(), seq in any::<u32>()) {
        let wire = encode(&packet, &key, seq);
        let config = AuthConfig::single(key.clone());
        let rx = decode_packet(&wire, &config).expect("round trip decodes");
        prop_assert_eq!(&rx.packet, &packet);
        let crypto = key.key_id().is_some();
        prop_assert_eq!(rx.crypto_seq, crypto.then_some(seq));
        prop_assert_eq!(rx.key_id, key.key_id());
        // The OSPF length excludes the digest.
        let len = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
        prop_assert_eq!(len + key.digest_len(), wire.len());
    }

    #[test]
    fn body_round_trip(body in arb_body()) {
        let mut out = BytesMut::new();
        body.encode(&mut out);
        prop_assert_eq!(PacketBody::decode(body.type_code(), &out), Ok(body));
    }

    #[test]
    fn lsa_round_trip(lsa in arb_lsa()) {
        let (back, used) = Lsa::decode(lsa.raw()).expect("originated LSA decodes");
        prop_assert_eq!(used, lsa.raw().len());
        prop_assert_eq!(usize::from(lsa.header.length), used);
        prop_assert_eq!(&back, &lsa);
        let aged = lsa.with_age(lsa.header.age.wrapping_add(1));
        prop_assert_eq!(Lsa::decode(aged.raw()).map(|(l, _)| l), Ok(aged));
    }

    #[test]
    fn lsa_header_round_trip(header in arb_header()) {
        let mut out = BytesMut::new();
        header.encode(&mut out);
        prop_assert_eq!(out.len(), LSA_HEADER_LEN);
        prop_assert_eq!(LsaHeader::decode(&out), Ok(header));
    }

    #[test]
    fn compare_instances_is_antisymmetric(a in arb_header(), b in arb_header()) {
        prop_assert_eq!(compare_instances(&a, &b), compare_instances(&b, &a).reverse());
        prop_assert_eq!(compare_instances(&a, &a), std::cmp::Ordering::Equal);
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        for config in configs() {
            let _ = decode_packet(&bytes, &config);
        }
        let mut fixed = bytes.clone();
        fix_up(&mut fixed);
        if let Err(e) = decode_packet(&fixed, &AuthConfig::null()) {
            prop_assert!(!e.reason().is_empty());
        }
        let _ = Lsa::decode(&bytes);
        for t in 0..=6 {
            let _ = PacketBody::decode(t, &bytes);
        }
    }

    #[test]
    fn decode_arbitrary_lsa_bodies_never_panics(
        ls_type in 0u8..8,
        body in vec(any::<u8>(), 0..200),
    ) {
        // A header with a correct length and checksum so the body decoder runs.
        let mut raw = vec![0, 1, 0, ls_type, 1, 1, 1, 1, 2, 2, 2, 2, 0x80, 0, 0, 1, 0, 0];
        raw.extend_from_slice(&u16::try_from(20 + body.len()).unwrap_or(0).to_be_bytes());
        raw.extend_from_slice(&body);
        let sum = fletcher_checksum(&raw);
        raw[16..18].copy_from_slice(&sum.to_be_bytes());
        match Lsa::decode(&raw) {
            Ok((lsa, used)) => {
                prop_assert_eq!(used, raw.len());
                prop_assert_eq!(lsa.raw().as_ref(), &raw[..]);
            }
            Err(e) => prop_assert_eq!(e.reason(), "bad_lsa_body"),
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        packet in arb_packet(),
        key in arb_auth(),
        mutations in vec(arb_mutation(), 1..6),
    ) {
        let config = AuthConfig::single(key.clone());
        let mut wire = encode(&packet, &key, 1);
        for m in &mutations {
            apply(&mut wire, m);
        }
        let _ = decode_packet(&wire, &config);
        // Same mutations with the checksum repaired, to reach the body decoders.
        let mut wire = encode(&packet, &AuthKey::Null, 0);
        for m in &mutations {
            apply(&mut wire, m);
        }
        fix_up(&mut wire);
        if let Ok(rx) = decode_packet(&wire, &AuthConfig::null()) {
            // Whatever decoded must re-encode to a packet that decodes to the same value.
            let again = encode(&rx.packet, &AuthKey::Null, 0);
            prop_assert_eq!(decode_packet(&again, &AuthConfig::null()).map(|r| r.packet), Ok(rx.packet));
        }
    }
}
