//! IPv6 prefixes in UPDATEs (RFC 4760 over an IPv4 session, RFC 2545 next hop): byte-exact,
//! cross-checked with bgpkit-parser and our own check of received UPDATEs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgpkit_parser::models::{Afi, AsnLength, AttrType, NextHopAddress};
use bgpkit_parser::parser::bgp::messages::parse_bgp_update_message;

use super::super::message::Message;
use super::super::update::{Prefix, RouteAttributes, Update, UpdateBuildError, UpdateEncoding};
use super::{decode_four_octet, encode, with_header};

const NEXT_HOP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x94);
const ANYCAST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

fn encoding(next_hop_ipv6: Option<Ipv6Addr>) -> UpdateEncoding {
    UpdateEncoding {
        local_as: 65001,
        ibgp: false,
        four_octet_as: true,
        next_hop: Ipv4Addr::new(192, 0, 2, 10),
        next_hop_ipv6,
    }
}

fn v6_host(n: u16) -> Prefix {
    Prefix::host(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, n)))
}

/// 16 octets of an IPv6 address.
fn octets(a: Ipv6Addr) -> Vec<u8> {
    a.octets().to_vec()
}

#[test]
fn ipv6_prefixes_are_host_routes_and_print_as_such() {
    let p = Prefix::host(IpAddr::V6(ANYCAST_V6));
    assert!(p.is_ipv6());
    assert_eq!(p.length(), 128);
    assert_eq!(p.to_string(), "2001:db8:2::1/128");
    assert_eq!(Prefix::new(IpAddr::V6(ANYCAST_V6), 129), None);
    assert!(Prefix::host(IpAddr::V4(Ipv4Addr::new(198, 18, 2, 0))) < p);
}

#[test]
fn an_ipv6_announcement_goes_in_mp_reach_nlri_without_next_hop() {
    let updates = Update::announce(
        &encoding(Some(NEXT_HOP_V6)),
        &RouteAttributes::default(),
        &[v6_host(1)],
    )
    .expect("builds");
    assert_eq!(updates.len(), 1);
    let mut body = vec![
        0x00, 0x00, // no withdrawn routes
        0x00, 0x36, // 54 octets of attributes
        0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
        0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9, // AS_PATH [65001]
        0x80, 0x0e, 0x26, // MP_REACH_NLRI, optional non-transitive, 38 octets
        0x00, 0x02, 0x01, // AFI IPv6, SAFI unicast
        0x10, // next hop length 16
    ];
    body.extend(octets(NEXT_HOP_V6));
    body.push(0x00); // reserved
    body.push(0x80); // /128
    body.extend(octets(ANYCAST_V6));
    assert_eq!(updates[0].body().as_ref(), body.as_slice());
    assert_eq!(updates[0].summary().mp_reach_prefixes, 1);
    assert_eq!(updates[0].summary().announced_prefixes, 0);

    let parsed = parse_bgp_update_message(updates[0].body().clone(), false, &AsnLength::Bits32)
        .expect("bgpkit-parser accepts it");
    assert!(!parsed.attributes.has_attr(AttrType::NEXT_HOP));
    let reach = parsed
        .attributes
        .get_reachable_nlri()
        .expect("MP_REACH_NLRI");
    assert_eq!(reach.afi, Afi::Ipv6);
    assert_eq!(reach.next_hop, Some(NextHopAddress::Ipv6(NEXT_HOP_V6)));
    assert_eq!(reach.prefixes.len(), 1);
    assert_eq!(reach.prefixes[0].prefix.to_string(), "2001:db8:2::1/128");

    let message = Message::Update(updates[0].clone());
    let bytes = encode(&message);
    assert_eq!(bytes, with_header(2, &body));
    assert_eq!(decode_four_octet(&bytes), Ok(message));
}

#[test]
fn both_families_in_one_call_give_one_update_each() {
    let v4 = Prefix::host(IpAddr::V4(Ipv4Addr::new(198, 18, 2, 0)));
    let updates = Update::announce(
        &encoding(Some(NEXT_HOP_V6)),
        &RouteAttributes::default(),
        &[v6_host(1), v4],
    )
    .expect("builds");
    let summaries: Vec<(u32, u32)> = updates
        .iter()
        .map(|u| {
            (
                u.summary().announced_prefixes,
                u.summary().mp_reach_prefixes,
            )
        })
        .collect();
    assert_eq!(summaries, [(1, 0), (0, 1)]);
}

#[test]
fn ipv6_without_an_ipv6_next_hop_is_refused() {
    let error = Update::announce(&encoding(None), &RouteAttributes::default(), &[v6_host(1)])
        .expect_err("no next hop");
    assert_eq!(error, UpdateBuildError::NoIpv6NextHop);
}

#[test]
fn an_ipv6_withdrawal_is_mp_unreach_nlri_alone() {
    let updates = Update::withdraw(&[v6_host(1)]).expect("builds");
    assert_eq!(updates.len(), 1);
    let mut body = vec![
        0x00, 0x00, // no withdrawn routes (IPv4)
        0x00, 0x17, // 23 octets of attributes
        0x80, 0x0f, 0x14, // MP_UNREACH_NLRI, 20 octets
        0x00, 0x02, 0x01, // AFI IPv6, SAFI unicast
        0x80, // /128
    ];
    body.extend(octets(ANYCAST_V6));
    assert_eq!(updates[0].body().as_ref(), body.as_slice());
    assert_eq!(updates[0].summary().mp_unreach_prefixes, 1);
    assert!(!updates[0].summary().end_of_rib);
}

#[test]
fn the_ipv6_end_of_rib_is_an_empty_mp_unreach_nlri() {
    let marker = Update::end_of_rib_ipv6().expect("builds");
    assert_eq!(
        marker.body().as_ref(),
        &[0x00, 0x00, 0x00, 0x06, 0x80, 0x0f, 0x03, 0x00, 0x02, 0x01]
    );
    assert!(marker.summary().end_of_rib);
}

#[test]
fn many_ipv6_prefixes_split_over_messages_of_at_most_4096_octets() {
    let prefixes: Vec<Prefix> = (1..=600).map(v6_host).collect();
    let updates = Update::announce(
        &encoding(Some(NEXT_HOP_V6)),
        &RouteAttributes::default(),
        &prefixes,
    )
    .expect("builds");
    assert!(updates.len() >= 3, "{} messages", updates.len());
    let mut total = 0;
    for update in &updates {
        assert!(19 + update.body().len() <= 4096);
        total += update.summary().mp_reach_prefixes;
    }
    assert_eq!(total, 600);
    let withdrawals = Update::withdraw(&prefixes).expect("builds");
    assert!(withdrawals.iter().all(|u| 19 + u.body().len() <= 4096));
    let withdrawn: u32 = withdrawals
        .iter()
        .map(|u| u.summary().mp_unreach_prefixes)
        .sum();
    assert_eq!(withdrawn, 600);
}
