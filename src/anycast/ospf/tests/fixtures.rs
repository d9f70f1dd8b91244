//! Packets sent by FRR 8.4's ospfd (router-id 198.18.1.90, DR of 198.18.1.0/24, null auth),
//! captured with tcpdump in the netns lab (`lab/netns/ospf-topology`) while a pgcast
//! balancer (198.18.1.94) formed its adjacency. Each must decode to what FRR meant and
//! re-encode to exactly the captured bytes.

use std::net::Ipv4Addr;

use bytes::BytesMut;

use super::super::auth::{decode_packet, encode_packet, AuthConfig, AuthKey};
use super::super::lsa::{ls_type, LsaBody, RouterLink};
use super::super::packet::{Packet, PacketBody};

const FRR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 90);
const PGCAST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 94);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/ospf/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes, checks the common header, and checks the re-encoding is byte-identical.
fn decode_roundtrip(name: &str) -> Packet {
    let bytes = fixture(name);
    let received = decode_packet(&bytes, &AuthConfig::single(AuthKey::Null))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let p = received.packet;
    assert_eq!(p.router_id, FRR, "{name}");
    assert_eq!(p.area_id, Ipv4Addr::UNSPECIFIED, "{name}");
    let mut out = BytesMut::new();
    encode_packet(&p, &AuthKey::Null, 0, &mut out);
    assert_eq!(
        out.as_ref(),
        bytes.as_slice(),
        "{name}: re-encoding differs"
    );
    p
}

#[test]
fn frr_hello() {
    let PacketBody::Hello(h) = decode_roundtrip("frr-hello.bin").body else {
        panic!("not a hello")
    };
    assert_eq!(h.network_mask, Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!((h.hello_interval, h.dead_interval, h.priority), (1, 3, 100));
    assert_eq!(h.dr, Ipv4Addr::new(198, 18, 1, 90));
    assert_eq!(h.neighbors, vec![PGCAST]);
}

#[test]
fn frr_database_description() {
    let PacketBody::DbDescription(dd) = decode_roundtrip("frr-dd.bin").body else {
        panic!("not a DD")
    };
    assert!(!dd.headers.is_empty(), "FRR's summary lists its LSAs");
    assert!(dd.headers.iter().any(|h| h.adv_router == FRR));
}

#[test]
fn frr_ls_request() {
    let PacketBody::LsRequest(keys) = decode_roundtrip("frr-lsr.bin").body else {
        panic!("not an LSR")
    };
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].ls_type, keys[0].adv_router),
        (ls_type::ROUTER, PGCAST)
    );
}

#[test]
fn frr_ls_update_with_its_router_and_network_lsas() {
    let PacketBody::LsUpdate(lsas) = decode_roundtrip("frr-lsu.bin").body else {
        panic!("not an LSU")
    };
    let router = lsas
        .iter()
        .find_map(|l| match &l.body {
            LsaBody::Router(r) if l.header.adv_router == FRR => Some(r.clone()),
            _ => None,
        })
        .expect("FRR's Router-LSA");
    assert!(router
        .links
        .iter()
        .any(|l| l.link_type == RouterLink::TRANSIT && l.link_id == FRR && l.link_data == FRR));
    let network = lsas
        .iter()
        .find_map(|l| match &l.body {
            LsaBody::Network(n) => Some(n.clone()),
            _ => None,
        })
        .expect("FRR's Network-LSA as DR");
    assert_eq!(network.mask, Ipv4Addr::new(255, 255, 255, 0));
    assert!(network.attached.contains(&FRR) && network.attached.contains(&PGCAST));
}

#[test]
fn frr_ls_ack() {
    let PacketBody::LsAck(headers) = decode_roundtrip("frr-lsack.bin").body else {
        panic!("not an LSAck")
    };
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].adv_router, PGCAST);
}
