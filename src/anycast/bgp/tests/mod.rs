//! Unit tests of the BGP speaker, one file per concern: `codec` (framing, OPEN, KEEPALIVE,
//! NOTIFICATION, ROUTE-REFRESH), `codec_update` (UPDATE building and checks), `codec_update_ipv6`
//! (IPv6 prefixes in MP_REACH_NLRI and MP_UNREACH_NLRI), `proptests`,
//! `fixtures` (messages captured from FRR), `fsm` (scripted sessions), `fsm_ipv6` (sessions with
//! IPv6 prefixes), `fsm_backoff` (what an
//! Idle session waiting to restart does with the peer's connection) and `listener` (what the
//! listener does with connections it cannot hand to a neighbour). Paths are
//! relative (`super::super`) so the folder moves with the module. Shared helpers below.

mod codec;
mod codec_update;
mod codec_update_ipv6;
mod fixtures;
mod fsm;
mod fsm_backoff;
mod fsm_ipv6;
mod listener;
mod proptests;

use bytes::{Bytes, BytesMut};

use super::message::{DecodeContext, Message, MessageError};

/// The 16 marker octets every message starts with.
const MARKER: [u8; 16] = [0xff; 16];

/// `body` behind a header of the given type, with the right length.
fn with_header(message_type: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = MARKER.to_vec();
    let total = u16::try_from(19 + body.len()).expect("test message fits");
    bytes.extend_from_slice(&total.to_be_bytes());
    bytes.push(message_type);
    bytes.extend_from_slice(body);
    bytes
}

fn encode(message: &Message) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    message.encode(&mut buffer);
    buffer.to_vec()
}

fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
    Message::decode(Bytes::copy_from_slice(bytes), DecodeContext::default())
}

fn decode_four_octet(bytes: &[u8]) -> Result<Message, MessageError> {
    Message::decode(
        Bytes::copy_from_slice(bytes),
        DecodeContext {
            four_octet_as: true,
        },
    )
}

/// (code, subcode, data) of a NOTIFICATION.
type NotificationFields = (u8, u8, Vec<u8>);

/// The NOTIFICATION an error maps to.
fn notification_of(error: &MessageError) -> NotificationFields {
    let notification = error.notification();
    (
        notification.code,
        notification.subcode,
        notification.data.to_vec(),
    )
}
