//! Fuzz bodies of the routing decoders: OSPFv2 packets and LSAs, BGP-4 messages read off a
//! stream, BFD Control packets.

use bytes::{Bytes, BytesMut};

use super::mode;
use crate::anycast::bfd::packet::{ControlPacket, MANDATORY_LEN};
use crate::anycast::bgp::message::{frame_len, DecodeContext, Message, MessageError};
use crate::anycast::bgp::notification::MAX_DATA_LEN;
use crate::anycast::bgp::{HEADER_LEN as BGP_HEADER_LEN, MAX_MESSAGE_LEN as BGP_MAX_LEN};
use crate::anycast::ospf::auth::{
    decode_packet, encode_packet, AuthConfig, AuthKey, DecodeError as OspfError, HmacKeying,
};
use crate::anycast::ospf::checksum::{fletcher_checksum, fletcher_verify, internet_checksum};
use crate::anycast::ospf::lsa::{Lsa, LsaBody, LSA_HEADER_LEN};
use crate::anycast::ospf::packet::{Packet, PacketBody, HEADER_LEN as OSPF_HEADER_LEN};

/// OSPF, by mode (first byte, mod 4):
/// 0. the packet as received, against every kind of authentication configuration;
/// 1. the packet with its length and checksum repaired (AuType 0), so mutations reach the
///    body decoders; what decodes must round-trip under every AuType;
/// 2. one LSA with its length and Fletcher checksum repaired, then its body decoder;
/// 3. the bytes as the body of every packet type.
pub fn ospf(data: &[u8]) {
    let (mode, data) = mode(data);
    match mode % 4 {
        0 => {
            for config in auth_configs() {
                if let Ok(rx) = decode_packet(data, &config) {
                    ospf_round_trip(&rx.packet);
                }
            }
        }
        1 => {
            let mut wire = data.to_vec();
            let repaired = fix_up_packet(&mut wire);
            match decode_packet(&wire, &AuthConfig::null()) {
                Ok(rx) => ospf_round_trip(&rx.packet),
                Err(OspfError::BadChecksum { stored }) if repaired => {
                    panic!("a repaired checksum ({stored:#06x}) does not verify")
                }
                Err(_) => {}
            }
        }
        2 => {
            let mut raw = data.to_vec();
            if fix_up_lsa(&mut raw) {
                assert!(
                    fletcher_verify(&raw),
                    "a computed Fletcher checksum verifies"
                );
            }
            if let Ok((lsa, used)) = Lsa::decode(&raw) {
                assert_eq!(used, usize::from(lsa.header.length), "LSA length consumed");
                assert_eq!(lsa.raw().as_ref(), raw.get(..used).unwrap_or_default());
                let body = &lsa.raw()[LSA_HEADER_LEN..];
                lsa_body_round_trip(lsa.header.ls_type, body);
            }
        }
        _ => {
            for type_code in 0..=6 {
                if let Ok(body) = PacketBody::decode(type_code, data) {
                    assert_eq!(
                        body.type_code(),
                        type_code,
                        "the body has its packet's type"
                    );
                    let mut out = BytesMut::new();
                    body.encode(&mut out);
                    assert_eq!(
                        PacketBody::decode(type_code, &out),
                        Ok(body),
                        "body round trip"
                    );
                }
            }
        }
    }
}

/// Configurations with every AuType, two keys for AuType 2.
fn auth_configs() -> [AuthConfig; 3] {
    [
        AuthConfig::null(),
        AuthConfig::single(AuthKey::simple(b"pw")),
        AuthConfig {
            send: AuthKey::Null,
            accept: vec![md5_key(), hmac_key(HmacKeying::Rfc5709)],
        },
    ]
}

fn md5_key() -> AuthKey {
    AuthKey::Md5 {
        key_id: 1,
        key: b"k".to_vec(),
    }
}

fn hmac_key(keying: HmacKeying) -> AuthKey {
    AuthKey::HmacSha256 {
        key_id: 2,
        key: b"k".to_vec(),
        keying,
    }
}

/// A decoded packet, sent again with each AuType, decodes to itself.
fn ospf_round_trip(packet: &Packet) {
    for key in [
        AuthKey::Null,
        AuthKey::simple(b"pw"),
        md5_key(),
        hmac_key(HmacKeying::Rfc5709),
        hmac_key(HmacKeying::Rfc2104),
    ] {
        let mut out = BytesMut::new();
        encode_packet(packet, &key, 7, &mut out);
        let rx = decode_packet(&out, &AuthConfig::single(key.clone()));
        match rx {
            Ok(rx) => assert_eq!(&rx.packet, packet, "OSPF round trip"),
            Err(e) => panic!("an encoded packet does not decode with AuType {key:?}: {e}"),
        }
    }
}

/// Sets the OSPF length to the buffer's, AuType 0 with a zero auth field, and the checksum.
/// Returns whether the packet is now consistent (a length that fits the field).
fn fix_up_packet(wire: &mut [u8]) -> bool {
    let Ok(len) = u16::try_from(wire.len()) else {
        return false;
    };
    if wire.len() < OSPF_HEADER_LEN {
        return false;
    }
    wire[2..4].copy_from_slice(&len.to_be_bytes());
    wire[12..OSPF_HEADER_LEN].fill(0);
    let sum = internet_checksum(wire);
    wire[12..14].copy_from_slice(&sum.to_be_bytes());
    true
}

/// Sets the LS length to the buffer's and the Fletcher checksum. Returns whether the LSA is
/// long enough to carry both.
fn fix_up_lsa(raw: &mut [u8]) -> bool {
    let Ok(len) = u16::try_from(raw.len()) else {
        return false;
    };
    if raw.len() < LSA_HEADER_LEN {
        return false;
    }
    raw[18..20].copy_from_slice(&len.to_be_bytes());
    let sum = fletcher_checksum(raw);
    raw[16..18].copy_from_slice(&sum.to_be_bytes());
    true
}

fn lsa_body_round_trip(ls_type: u8, body: &[u8]) {
    let Ok(decoded) = LsaBody::decode(ls_type, body) else {
        panic!("Lsa::decode accepted a body LsaBody::decode refuses");
    };
    let mut out = BytesMut::new();
    decoded.encode(&mut out);
    assert_eq!(
        LsaBody::decode(ls_type, &out),
        Ok(decoded),
        "LSA body round trip"
    );
}

/// BGP: the input is what arrives on the session's TCP stream, split into frames as the
/// session splits it. Mode bit 0: the 4-octet AS capability was negotiated. Mode bit 1: the
/// input is one message type octet and body, and the header (marker, length) is written
/// here, so mutations are spent on bodies. Every message that decodes must encode and decode
/// to itself; every error must map to a NOTIFICATION that decodes as one.
pub fn bgp(data: &[u8]) {
    let (mode, data) = mode(data);
    let context = DecodeContext {
        four_octet_as: mode & 1 != 0,
    };
    let framed;
    let mut stream = if mode & 2 != 0 {
        framed = with_bgp_header(data);
        &framed[..]
    } else {
        data
    };
    loop {
        match frame_len(stream) {
            Ok(Some(len)) => {
                assert!(
                    (BGP_HEADER_LEN..=BGP_MAX_LEN).contains(&len) && len <= stream.len(),
                    "frame length {len} within the header, the limit and the stream"
                );
                let (frame, rest) = stream.split_at(len);
                match Message::decode(Bytes::copy_from_slice(frame), context) {
                    Ok(message) => bgp_round_trip(&message, context, frame.len()),
                    Err(e) => bgp_error(&e),
                }
                stream = rest;
            }
            Ok(None) => return,
            Err(e) => {
                bgp_error(&e);
                return;
            }
        }
    }
}

fn with_bgp_header(data: &[u8]) -> Vec<u8> {
    let (message_type, body) = data.split_first().map_or((0, data), |(t, b)| (*t, b));
    let body = &body[..body.len().min(BGP_MAX_LEN - BGP_HEADER_LEN)];
    let len = u16::try_from(BGP_HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&len.to_be_bytes());
    out.push(message_type);
    out.extend_from_slice(body);
    out
}

fn bgp_round_trip(message: &Message, context: DecodeContext, frame_len_seen: usize) {
    if let Message::Update(update) = message {
        let s = update.summary();
        let prefixes = u64::from(s.withdrawn_prefixes)
            + u64::from(s.announced_prefixes)
            + u64::from(s.mp_reach_prefixes)
            + u64::from(s.mp_unreach_prefixes);
        // Every prefix takes at least its length octet, every attribute its 3-octet header.
        assert!(
            prefixes <= frame_len_seen as u64,
            "prefix count within the frame"
        );
        assert!(
            u64::from(s.path_attributes) * 3 <= frame_len_seen as u64,
            "attribute count within the frame"
        );
    }
    if let Message::Notification(notification) = message {
        let _ = notification.shutdown_communication();
    }
    let mut out = BytesMut::new();
    message.encode(&mut out);
    assert_eq!(
        frame_len(&out),
        Ok(Some(out.len())),
        "an encoded message frames whole"
    );
    let again = Message::decode(out.freeze(), context);
    let expected = match message.clone() {
        // Only read, never sent: other address families do not survive encoding.
        Message::Open(mut open) => {
            open.capabilities.mp_other_families = false;
            Message::Open(open)
        }
        other => other,
    };
    assert_eq!(again, Ok(expected), "BGP round trip");
}

fn bgp_error(e: &MessageError) {
    let sent = e.notification();
    assert!(
        sent.data.len() <= MAX_DATA_LEN,
        "NOTIFICATION data fits a message"
    );
    let mut out = BytesMut::new();
    Message::Notification(sent.clone()).encode(&mut out);
    match Message::decode(out.freeze(), DecodeContext::default()) {
        Ok(Message::Notification(back)) => {
            assert_eq!((back.code, back.subcode), (sent.code, sent.subcode));
            assert_eq!(back.data, sent.data, "NOTIFICATION data round trip");
        }
        other => panic!("the NOTIFICATION for {e} does not decode as one: {other:?}"),
    }
}

/// BFD: one UDP payload. A packet that decodes encodes to its first 24 bytes with the Length
/// field set to 24 (we send no authentication section), and decodes to itself.
pub fn bfd(data: &[u8]) {
    let Ok(packet) = ControlPacket::decode(data) else {
        return;
    };
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    let Some(head) = data.get(..MANDATORY_LEN) else {
        panic!("a {}-byte datagram decoded", data.len());
    };
    let mut expected = head.to_vec();
    expected[3] = MANDATORY_LEN as u8;
    assert_eq!(&out[..], &expected[..], "BFD encodes what it decoded");
    assert_eq!(ControlPacket::decode(&out), Ok(packet), "BFD round trip");
}
