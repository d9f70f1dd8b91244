//! BGP message framing and the non-UPDATE message codecs (RFC 4271 §4).
//!
//! What is hand-written here and why:
//! - The 19-octet header and [`frame_len`]: bgpkit-parser has no framing,
//!   and its `parse_bgp_message` only logs a bad marker and accepts lengths
//!   up to 65535 because it reads MRT archives, not live sessions.
//! - OPEN, both ways. bgpkit-parser's `BgpOpenMessage` keeps the AS number
//!   in a 16-bit field (`Asn` → `u16` truncates), and its parser tolerates
//!   an optional-parameter length that disagrees with the message and
//!   turns malformed capabilities into raw bytes. A live speaker must
//!   reject those with the RFC 4271 §6.2 subcodes, which takes a full walk
//!   of the parameters anyway; reading the three capabilities we care
//!   about (RFC 4760, RFC 2918, RFC 6793) on that walk is a few lines.
//!
//! NOTIFICATION and ROUTE-REFRESH bodies go through bgpkit-parser.

use std::net::Ipv4Addr;

use bgpkit_parser::models::{BgpError, BgpNotificationMessage, BgpRouteRefreshMessage};
use bgpkit_parser::parser::bgp::messages::{
    parse_bgp_notification_message, parse_bgp_route_refresh_message,
};
use bytes::{BufMut, Bytes, BytesMut};

use super::notification::{code, header_subcode, open_subcode, update_subcode, Notification};
use super::update::Update;
use super::{AFI_IPV4, AFI_IPV6, AS_TRANS, BGP_VERSION, HEADER_LEN, MAX_MESSAGE_LEN, SAFI_UNICAST};

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

const MARKER: [u8; 16] = [0xff; 16];

/// Smallest legal total length per message type (RFC 4271 §4.2-§4.5,
/// RFC 2918 §3). A KEEPALIVE is exactly the header.
const MIN_OPEN_LEN: usize = 29;
const MIN_UPDATE_LEN: usize = 23;
const MIN_NOTIFICATION_LEN: usize = 21;
const ROUTE_REFRESH_LEN: usize = 23;

/// Fixed part of the OPEN body: version, AS, hold time, identifier and
/// optional parameters length (RFC 4271 §4.2).
const OPEN_FIXED_LEN: usize = 10;

/// Optional parameter type of Capabilities (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;
/// Non-extended parameter type that announces RFC 9072 extended lengths.
const PARAM_EXTENDED_LENGTH: u8 = 255;

/// Capability codes we read or send (IANA "Capability Codes").
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_FOUR_OCTET_AS: u8 = 65;

/// Session facts that change how a message body is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides advertised the 4-octet AS capability, so AS_PATH carries
    /// 4-octet AS numbers (RFC 6793 §4.1).
    pub four_octet_as: bool,
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    /// RFC 2918 ROUTE-REFRESH. The reserved/subtype octet is not kept: we
    /// do not negotiate Enhanced Route Refresh (RFC 7313), so RFC 2918 §3
    /// tells the receiver to ignore it.
    RouteRefresh {
        afi: u16,
        safi: u8,
    },
}

/// An OPEN message (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The speaker's real AS number: the 4-octet AS capability when
    /// present, otherwise the 2-octet "My Autonomous System" field. On
    /// encode a value above 65535 goes out as AS_TRANS (RFC 6793 §4.1).
    pub asn: u32,
    /// Seconds; 0 or at least 3 (RFC 4271 §4.2).
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// The capabilities (RFC 5492) this speaker understands. Anything else a
/// peer advertises is ignored, as RFC 5492 §3 requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 6793 4-octet AS number capability.
    pub four_octet_as: Option<u32>,
    /// RFC 4760 Multiprotocol capability for IPv4 unicast.
    pub mp_ipv4_unicast: bool,
    /// RFC 4760 Multiprotocol capability for IPv6 unicast.
    pub mp_ipv6_unicast: bool,
    /// RFC 2918 Route Refresh capability.
    pub route_refresh: bool,
    /// The peer advertised Multiprotocol capabilities for other families.
    /// Only read, never encoded; together with `mp_ipv4_unicast` it tells
    /// whether IPv4 unicast was negotiated (RFC 4760 §8).
    pub mp_other_families: bool,
}

/// Everything that can be wrong with a message from the peer, each mapped
/// by [`MessageError::notification`] to the NOTIFICATION that reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message header marker is not all ones")]
    ConnectionNotSynchronized,
    #[error("bad message length {length}")]
    BadMessageLength { length: u16 },
    #[error("bad message type {message_type}")]
    BadMessageType { message_type: u8 },
    #[error("unsupported BGP version {version}")]
    UnsupportedVersionNumber { version: u8 },
    #[error("peer AS {asn} is not the expected one")]
    BadPeerAs { asn: u32 },
    #[error("unacceptable BGP identifier {identifier}")]
    BadBgpIdentifier { identifier: Ipv4Addr },
    #[error("unsupported optional parameter type {parameter_type}")]
    UnsupportedOptionalParameter { parameter_type: u8 },
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    #[error("malformed OPEN optional parameters: {reason}")]
    MalformedOptionalParameters { reason: &'static str },
    #[error("malformed attribute list: {reason}")]
    MalformedAttributeList { reason: &'static str },
    #[error("unrecognized well-known attribute {}", attribute_type_code(.attribute))]
    UnrecognizedWellKnownAttribute { attribute: Bytes },
    #[error("missing well-known attribute {type_code}")]
    MissingWellKnownAttribute { type_code: u8 },
    #[error("attribute flags error on attribute {}", attribute_type_code(.attribute))]
    AttributeFlagsError { attribute: Bytes },
    #[error("attribute length error on attribute {}", attribute_type_code(.attribute))]
    AttributeLengthError { attribute: Bytes },
    #[error("invalid ORIGIN attribute")]
    InvalidOriginAttribute { attribute: Bytes },
    #[error("invalid NEXT_HOP attribute")]
    InvalidNextHopAttribute { attribute: Bytes },
    #[error("malformed optional attribute {}", attribute_type_code(.attribute))]
    OptionalAttributeError { attribute: Bytes },
    #[error("invalid network field: {reason}")]
    InvalidNetworkField { reason: &'static str },
    #[error("malformed AS_PATH")]
    MalformedAsPath,
}

/// The type code of an attribute kept whole (flags, type, length, value).
fn attribute_type_code(attribute: &Bytes) -> u8 {
    attribute.get(1).copied().unwrap_or(0)
}

impl MessageError {
    /// The NOTIFICATION to send for this error: code, subcode and data as
    /// RFC 4271 §6.1-§6.3 prescribe for each case.
    pub fn notification(&self) -> Notification {
        use MessageError::*;
        let empty = Bytes::new();
        match self {
            ConnectionNotSynchronized => Notification::new(
                code::MESSAGE_HEADER_ERROR,
                header_subcode::CONNECTION_NOT_SYNCHRONIZED,
                empty,
            ),
            // §6.1: the data is the erroneous Length field.
            BadMessageLength { length } => Notification::new(
                code::MESSAGE_HEADER_ERROR,
                header_subcode::BAD_MESSAGE_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            // §6.1: the data is the erroneous Type field.
            BadMessageType { message_type } => Notification::new(
                code::MESSAGE_HEADER_ERROR,
                header_subcode::BAD_MESSAGE_TYPE,
                vec![*message_type],
            ),
            // §6.2: the data is the largest version we support below the
            // bid, or our smallest if the bid is lower. We only do 4.
            UnsupportedVersionNumber { .. } => Notification::new(
                code::OPEN_MESSAGE_ERROR,
                open_subcode::UNSUPPORTED_VERSION_NUMBER,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            BadPeerAs { .. } => {
                Notification::new(code::OPEN_MESSAGE_ERROR, open_subcode::BAD_PEER_AS, empty)
            }
            BadBgpIdentifier { .. } => Notification::new(
                code::OPEN_MESSAGE_ERROR,
                open_subcode::BAD_BGP_IDENTIFIER,
                empty,
            ),
            UnsupportedOptionalParameter { .. } => Notification::new(
                code::OPEN_MESSAGE_ERROR,
                open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
                empty,
            ),
            UnacceptableHoldTime { .. } => Notification::new(
                code::OPEN_MESSAGE_ERROR,
                open_subcode::UNACCEPTABLE_HOLD_TIME,
                empty,
            ),
            MalformedOptionalParameters { .. } => {
                Notification::new(code::OPEN_MESSAGE_ERROR, open_subcode::UNSPECIFIC, empty)
            }
            MalformedAttributeList { .. } => update_error(update_subcode::MALFORMED_ATTRIBUTE_LIST),
            // §6.3: these carry the offending attribute (type, length, value).
            UnrecognizedWellKnownAttribute { attribute } => {
                update_error_with(update_subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, attribute)
            }
            // §6.3: the data is the type code of the missing attribute.
            MissingWellKnownAttribute { type_code } => Notification::new(
                code::UPDATE_MESSAGE_ERROR,
                update_subcode::MISSING_WELL_KNOWN_ATTRIBUTE,
                vec![*type_code],
            ),
            AttributeFlagsError { attribute } => {
                update_error_with(update_subcode::ATTRIBUTE_FLAGS_ERROR, attribute)
            }
            AttributeLengthError { attribute } => {
                update_error_with(update_subcode::ATTRIBUTE_LENGTH_ERROR, attribute)
            }
            InvalidOriginAttribute { attribute } => {
                update_error_with(update_subcode::INVALID_ORIGIN_ATTRIBUTE, attribute)
            }
            InvalidNextHopAttribute { attribute } => {
                update_error_with(update_subcode::INVALID_NEXT_HOP_ATTRIBUTE, attribute)
            }
            OptionalAttributeError { attribute } => {
                update_error_with(update_subcode::OPTIONAL_ATTRIBUTE_ERROR, attribute)
            }
            InvalidNetworkField { .. } => update_error(update_subcode::INVALID_NETWORK_FIELD),
            MalformedAsPath => update_error(update_subcode::MALFORMED_AS_PATH),
        }
    }
}

fn update_error(subcode: u8) -> Notification {
    Notification::new(code::UPDATE_MESSAGE_ERROR, subcode, Bytes::new())
}

fn update_error_with(subcode: u8, attribute: &Bytes) -> Notification {
    Notification::new(code::UPDATE_MESSAGE_ERROR, subcode, attribute.clone())
}

/// Length of the first message in `buf` once all of it has arrived.
///
/// `Ok(None)` means "read more". The header is checked as soon as it is
/// there (and the marker as soon as any of it is), so a broken stream is
/// reported without waiting for a body that may never come. Errors are
/// the RFC 4271 §6.1 Message Header Errors.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, MessageError> {
    let marker_seen = buf.len().min(MARKER.len());
    if buf.iter().take(marker_seen).any(|&octet| octet != 0xff) {
        return Err(MessageError::ConnectionNotSynchronized);
    }
    let Some(&[length_high, length_low, message_type]) = buf.get(16..HEADER_LEN) else {
        return Ok(None);
    };
    let length = u16::from_be_bytes([length_high, length_low]);
    let total = usize::from(length);
    let bad_length = MessageError::BadMessageLength { length };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&total) {
        return Err(bad_length);
    }
    let type_length_ok = match message_type {
        message_type::OPEN => total >= MIN_OPEN_LEN,
        message_type::UPDATE => total >= MIN_UPDATE_LEN,
        message_type::NOTIFICATION => total >= MIN_NOTIFICATION_LEN,
        message_type::KEEPALIVE => total == HEADER_LEN,
        // Longer ROUTE-REFRESH messages carry RFC 5291 ORF entries, which
        // we never negotiate; the first 23 octets are still a request.
        message_type::ROUTE_REFRESH => total >= ROUTE_REFRESH_LEN,
        _ => return Err(MessageError::BadMessageType { message_type }),
    };
    if !type_length_ok {
        return Err(bad_length);
    }
    Ok((buf.len() >= total).then_some(total))
}

impl Message {
    /// The message type code that goes in the header.
    pub fn message_type(&self) -> u8 {
        match self {
            Message::Open(_) => message_type::OPEN,
            Message::Update(_) => message_type::UPDATE,
            Message::Notification(_) => message_type::NOTIFICATION,
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh { .. } => message_type::ROUTE_REFRESH,
        }
    }

    /// Decode one whole message, header included, as split off the stream
    /// after [`frame_len`] returned its length.
    pub fn decode(frame: Bytes, context: DecodeContext) -> Result<Message, MessageError> {
        let declared_length = frame
            .get(16..18)
            .map_or(0, |length| u16::from_be_bytes([length[0], length[1]]));
        match frame_len(&frame)? {
            Some(total) if total == frame.len() => {}
            _ => {
                return Err(MessageError::BadMessageLength {
                    length: declared_length,
                })
            }
        }
        let message_type = frame.get(18).copied().unwrap_or(0);
        let body = frame.slice(HEADER_LEN..);
        match message_type {
            message_type::OPEN => Open::decode_body(&body).map(Message::Open),
            message_type::UPDATE => Update::from_received_body(body, context).map(Message::Update),
            message_type::NOTIFICATION => Ok(Message::Notification(decode_notification(body))),
            message_type::KEEPALIVE => Ok(Message::Keepalive),
            message_type::ROUTE_REFRESH => decode_route_refresh(body, declared_length),
            other => Err(MessageError::BadMessageType {
                message_type: other,
            }),
        }
    }

    /// Append the wire form of this message to `dst`.
    ///
    /// Cannot fail: every message we can hold fits in 4096 octets (UPDATEs
    /// are split when built, NOTIFICATION data is cut to fit).
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_slice(&MARKER);
        dst.put_u16(0); // patched below once the body is written
        dst.put_u8(self.message_type());
        match self {
            Message::Open(open) => open.encode_body(dst),
            Message::Update(update) => dst.put_slice(update.body()),
            Message::Notification(notification) => {
                let mut data = notification.data.clone();
                data.truncate(super::notification::MAX_DATA_LEN);
                let body = BgpNotificationMessage {
                    error: BgpError::new(notification.code, notification.subcode),
                    data: data.to_vec(),
                }
                .encode();
                dst.put_slice(&body);
            }
            Message::Keepalive => {}
            Message::RouteRefresh { afi, safi } => {
                let body = BgpRouteRefreshMessage {
                    afi: *afi,
                    subtype: 0,
                    safi: *safi,
                    data: Vec::new(),
                }
                .encode();
                dst.put_slice(&body);
            }
        }
        let total = dst.len() - start;
        debug_assert!(total <= MAX_MESSAGE_LEN, "encoded {total} octets");
        let length = u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes();
        dst[start + 16..start + 18].copy_from_slice(&length);
    }
}

fn decode_notification(body: Bytes) -> Notification {
    // frame_len guaranteed the code and subcode octets, so bgpkit-parser
    // cannot fail here; fall back to reading them directly all the same
    // rather than trusting that with a panic.
    match parse_bgp_notification_message(body.clone()) {
        Ok(parsed) => {
            let (code, subcode) = parsed.error.get_codes();
            Notification::new(code, subcode, parsed.data)
        }
        Err(_) => Notification::new(
            body.first().copied().unwrap_or(0),
            body.get(1).copied().unwrap_or(0),
            body.get(2..)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
        ),
    }
}

fn decode_route_refresh(mut body: Bytes, declared_length: u16) -> Result<Message, MessageError> {
    let parsed =
        parse_bgp_route_refresh_message(&mut body).map_err(|_| MessageError::BadMessageLength {
            length: declared_length,
        })?;
    Ok(Message::RouteRefresh {
        afi: parsed.afi,
        safi: parsed.safi,
    })
}

impl Open {
    /// The 2-octet "My Autonomous System" value for `asn` (RFC 6793 §4.1).
    pub fn two_octet_as(asn: u32) -> u16 {
        u16::try_from(asn).unwrap_or(AS_TRANS)
    }

    fn encode_body(&self, dst: &mut BytesMut) {
        dst.put_u8(BGP_VERSION);
        dst.put_u16(Self::two_octet_as(self.asn));
        dst.put_u16(self.hold_time);
        dst.put_u32(u32::from(self.router_id));

        // All capabilities go in one Capabilities parameter (RFC 5492 §4
        // allows one or many); at most 20 octets, so lengths fit a u8.
        let mut capabilities = BytesMut::with_capacity(20);
        let caps = &self.capabilities;
        for (enabled, afi) in [
            (caps.mp_ipv4_unicast, AFI_IPV4),
            (caps.mp_ipv6_unicast, AFI_IPV6),
        ] {
            if enabled {
                // RFC 4760 §8: AFI, reserved octet, SAFI.
                capabilities.put_slice(&[CAP_MULTIPROTOCOL, 4]);
                capabilities.put_u16(afi);
                capabilities.put_slice(&[0, SAFI_UNICAST]);
            }
        }
        if caps.route_refresh {
            capabilities.put_slice(&[CAP_ROUTE_REFRESH, 0]);
        }
        if let Some(asn) = caps.four_octet_as {
            capabilities.put_slice(&[CAP_FOUR_OCTET_AS, 4]);
            capabilities.put_u32(asn);
        }
        if capabilities.is_empty() {
            dst.put_u8(0);
            return;
        }
        let capabilities_len = u8::try_from(capabilities.len()).unwrap_or(u8::MAX);
        dst.put_u8(capabilities_len.saturating_add(2));
        dst.put_u8(PARAM_CAPABILITIES);
        dst.put_u8(capabilities_len);
        dst.put_slice(&capabilities);
    }

    /// Decode and check an OPEN body. Checks that need configuration (peer
    /// AS, our own identifier) are the session's job.
    fn decode_body(body: &[u8]) -> Result<Open, MessageError> {
        let Some((fixed, parameters)) = body.split_first_chunk::<OPEN_FIXED_LEN>() else {
            return Err(MessageError::MalformedOptionalParameters {
                reason: "OPEN body shorter than its fixed fields",
            });
        };
        let [version, as_high, as_low, hold_high, hold_low, id0, id1, id2, id3, parameters_len] =
            *fixed;
        if version != BGP_VERSION {
            return Err(MessageError::UnsupportedVersionNumber { version });
        }
        let hold_time = u16::from_be_bytes([hold_high, hold_low]);
        // RFC 4271 §4.2: zero, or at least three seconds.
        if matches!(hold_time, 1 | 2) {
            return Err(MessageError::UnacceptableHoldTime { hold_time });
        }
        let router_id = Ipv4Addr::new(id0, id1, id2, id3);
        // RFC 6286 §2.2: any non-zero 32-bit value is a valid identifier.
        if router_id.is_unspecified() {
            return Err(MessageError::BadBgpIdentifier {
                identifier: router_id,
            });
        }
        let capabilities = decode_parameters(parameters_len, parameters)?;
        let header_as = u16::from_be_bytes([as_high, as_low]);
        Ok(Open {
            asn: capabilities
                .four_octet_as
                .unwrap_or_else(|| u32::from(header_as)),
            hold_time,
            router_id,
            capabilities,
        })
    }
}

/// Walk the optional parameters, in either the RFC 4271 §4.2 encoding or
/// the RFC 9072 extended one, and collect the capabilities we know.
fn decode_parameters(declared_len: u8, parameters: &[u8]) -> Result<Capabilities, MessageError> {
    let malformed = |reason| MessageError::MalformedOptionalParameters { reason };
    // RFC 9072 §2: a non-zero length followed by type 255 switches to
    // 2-octet lengths for the parameter block and each parameter.
    let extended = declared_len != 0 && parameters.first() == Some(&PARAM_EXTENDED_LENGTH);
    let (list, length_octets) = if extended {
        let Some((&[high, low], list)) = parameters
            .get(1..)
            .and_then(|rest| rest.split_first_chunk::<2>())
        else {
            return Err(malformed("truncated extended parameters length"));
        };
        if usize::from(u16::from_be_bytes([high, low])) != list.len() {
            return Err(malformed(
                "extended parameters length disagrees with message",
            ));
        }
        (list, 2)
    } else {
        if usize::from(declared_len) != parameters.len() {
            return Err(malformed("parameters length disagrees with message"));
        }
        (parameters, 1)
    };

    let mut capabilities = Capabilities::default();
    let mut rest = list;
    while let Some((&parameter_type, after_type)) = rest.split_first() {
        let Some((length, after_length)) = after_type.split_at_checked(length_octets) else {
            return Err(malformed("truncated parameter header"));
        };
        let value_len = length
            .iter()
            .fold(0usize, |acc, &octet| (acc << 8) | usize::from(octet));
        let Some((value, after_value)) = after_length.split_at_checked(value_len) else {
            return Err(malformed("parameter overruns the parameter block"));
        };
        if parameter_type != PARAM_CAPABILITIES {
            // RFC 4271 §6.2; RFC 5492 §4 keeps this for unknown types.
            return Err(MessageError::UnsupportedOptionalParameter { parameter_type });
        }
        decode_capabilities(value, &mut capabilities)?;
        rest = after_value;
    }
    Ok(capabilities)
}

fn decode_capabilities(mut rest: &[u8], found: &mut Capabilities) -> Result<(), MessageError> {
    let malformed = |reason| MessageError::MalformedOptionalParameters { reason };
    while !rest.is_empty() {
        let Some((&[code, length], after_header)) = rest.split_first_chunk::<2>() else {
            return Err(malformed("truncated capability header"));
        };
        let Some((value, after_value)) = after_header.split_at_checked(usize::from(length)) else {
            return Err(malformed("capability overruns its parameter"));
        };
        match code {
            CAP_MULTIPROTOCOL => {
                let &[afi_high, afi_low, _reserved, safi] = value else {
                    return Err(malformed("multiprotocol capability is not 4 octets"));
                };
                match (u16::from_be_bytes([afi_high, afi_low]), safi) {
                    (AFI_IPV4, SAFI_UNICAST) => found.mp_ipv4_unicast = true,
                    (AFI_IPV6, SAFI_UNICAST) => found.mp_ipv6_unicast = true,
                    _ => found.mp_other_families = true,
                }
            }
            CAP_ROUTE_REFRESH => {
                if !value.is_empty() {
                    return Err(malformed("route refresh capability has a value"));
                }
                found.route_refresh = true;
            }
            CAP_FOUR_OCTET_AS => {
                let &[a, b, c, d] = value else {
                    return Err(malformed("4-octet AS capability is not 4 octets"));
                };
                found.four_octet_as = Some(u32::from_be_bytes([a, b, c, d]));
            }
            // RFC 5492 §3: ignore capabilities we do not understand.
            _ => {}
        }
        rest = after_value;
    }
    Ok(())
}
