//! UPDATE messages (RFC 4271 §4.3): building the ones we send.
//!
//! Path attributes, AS_PATH segments, communities and NLRI are encoded by
//! bgpkit-parser (`Attributes`, `BgpUpdateMessage::encode`). What stays
//! here is the policy: which attributes an anycast announcement carries on
//! an eBGP or iBGP session, the RFC 6793 AS_TRANS / AS4_PATH fallback, and
//! splitting prefixes so no message exceeds 4096 octets. Received UPDATEs
//! are checked by `update_check.rs` and kept only as a summary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgpkit_parser::models::{
    Afi, AsPath, Asn, AsnLength, AttrFlags, Attribute, AttributeValue, Attributes,
    BgpUpdateMessage, Community, LargeCommunity as WireLargeCommunity, NextHopAddress, Nlri,
    Origin, Safi,
};
use bytes::Bytes;

use super::message::{DecodeContext, MessageError};
pub use super::prefix::Prefix;
use super::update_check::check_update_body;
use super::{AS_TRANS, HEADER_LEN, MAX_MESSAGE_LEN};
pub use crate::config::{LargeCommunity, StandardCommunity};

/// LOCAL_PREF sent to iBGP peers when the route does not say otherwise;
/// 100 is the common router default.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Octets of an UPDATE body before any NLRI: the withdrawn routes length
/// and total path attribute length fields (RFC 4271 §4.3).
const UPDATE_LENGTH_FIELDS: usize = 4;

/// Most an UPDATE body may hold.
const MAX_BODY_LEN: usize = MAX_MESSAGE_LEN - HEADER_LEN;

/// Attribute values longer than this need the Extended Length flag
/// (RFC 4271 §4.3).
const MAX_SHORT_ATTRIBUTE_LEN: usize = 255;

/// Octets of an MP_REACH_NLRI value before its NLRI with one global IPv6 next hop: AFI,
/// SAFI, next hop length, the next hop, the reserved octet (RFC 4760 §3, RFC 2545 §3).
const MP_REACH_IPV6_FIXED: usize = 2 + 1 + 1 + 16 + 1;

/// Octets of an MP_UNREACH_NLRI value before its withdrawn routes: AFI, SAFI (RFC 4760 §4).
const MP_UNREACH_FIXED: usize = 3;

/// An attribute's flags, type and two-octet (extended) length.
const ATTRIBUTE_HEADER_MAX: usize = 4;

/// The octets of an RFC 1997 community as bgpkit-parser encodes them: it names the well-known
/// values and encodes everything else as AS:value; the octets come out the same.
fn community_to_wire(community: StandardCommunity) -> Community {
    match community {
        StandardCommunity::NO_EXPORT => Community::NoExport,
        StandardCommunity::NO_ADVERTISE => Community::NoAdvertise,
        StandardCommunity::NO_EXPORT_SUBCONFED => Community::NoExportSubConfed,
        StandardCommunity(value) => {
            let [a, b, c, d] = value.to_be_bytes();
            Community::Custom(
                Asn::new_16bit(u16::from_be_bytes([a, b])),
                u16::from_be_bytes([c, d]),
            )
        }
    }
}

/// The per-route attributes we choose; everything else follows from the
/// session (see [`UpdateEncoding`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttributes {
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    pub med: Option<u32>,
    /// LOCAL_PREF, sent to iBGP peers only (RFC 4271 §5.1.5); `None` means
    /// [`DEFAULT_LOCAL_PREF`].
    pub local_pref: Option<u32>,
    pub communities: Vec<StandardCommunity>,
    pub large_communities: Vec<LargeCommunity>,
}

/// What the session decides about how UPDATEs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateEncoding {
    pub local_as: u32,
    /// The peer is in our AS.
    pub ibgp: bool,
    /// Both sides advertised the 4-octet AS capability (RFC 6793 §3).
    pub four_octet_as: bool,
    /// NEXT_HOP of the IPv4 prefixes we announce.
    pub next_hop: Ipv4Addr,
    /// The next hop of the IPv6 prefixes (in MP_REACH_NLRI; RFC 2545 §3: a global address).
    /// `None`: IPv6 prefixes cannot be announced on this session.
    pub next_hop_ipv6: Option<Ipv6Addr>,
}

/// An UPDATE: its body as it goes on the wire plus a bounded summary.
/// Received UPDATEs are never expanded into routes (we install none), so
/// memory per message is the 4077-octet body at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    body: Bytes,
    summary: UpdateSummary,
}

/// What an UPDATE carried, counted while it was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Prefixes in the Withdrawn Routes field.
    pub withdrawn_prefixes: u32,
    /// Prefixes in the NLRI field.
    pub announced_prefixes: u32,
    /// IPv4/IPv6 unicast prefixes in MP_REACH_NLRI (RFC 4760 §3).
    pub mp_reach_prefixes: u32,
    /// IPv4/IPv6 unicast prefixes in MP_UNREACH_NLRI (RFC 4760 §4).
    pub mp_unreach_prefixes: u32,
    pub path_attributes: u32,
    /// The End-of-RIB marker (RFC 4724 §2).
    pub end_of_rib: bool,
    /// An attribute error RFC 7606 handles as "treat-as-withdraw": the
    /// session stays up and the announced routes count as withdrawn. Holds
    /// the first such error; it is logged, never answered.
    pub treat_as_withdraw: Option<MessageError>,
}

/// Why an UPDATE we wanted to send could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateBuildError {
    #[error("path attributes take {attributes_len} octets, leaving no room for a prefix in 4096")]
    AttributesTooLarge { attributes_len: usize },
    #[error("bgpkit-parser could not encode the UPDATE: {reason}")]
    Encoding { reason: String },
    #[error("an UPDATE we built fails our own check: {0}")]
    SelfCheck(MessageError),
    #[error("IPv6 prefixes need an IPv6 next hop, and the session has none")]
    NoIpv6NextHop,
}

impl Update {
    /// The body after the 19-octet header.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn summary(&self) -> &UpdateSummary {
        &self.summary
    }

    /// Check a received UPDATE body and keep it with its summary.
    pub(super) fn from_received_body(
        body: Bytes,
        context: DecodeContext,
    ) -> Result<Update, MessageError> {
        let summary = check_update_body(&body, context.four_octet_as)?;
        Ok(Update { body, summary })
    }

    /// UPDATEs announcing `prefixes` with `attributes`, split over as many
    /// messages as the 4096-octet limit needs: IPv4 prefixes in the NLRI field with
    /// NEXT_HOP, IPv6 prefixes in MP_REACH_NLRI. Empty input, no messages.
    pub fn announce(
        encoding: &UpdateEncoding,
        attributes: &RouteAttributes,
        prefixes: &[Prefix],
    ) -> Result<Vec<Update>, UpdateBuildError> {
        let (ipv6, ipv4): (Vec<Prefix>, Vec<Prefix>) = prefixes.iter().partition(|p| p.is_ipv6());
        let mut updates = Vec::new();
        if !ipv4.is_empty() {
            updates.extend(announce_ipv4(encoding, attributes, &ipv4)?);
        }
        if !ipv6.is_empty() {
            updates.extend(announce_ipv6(encoding, attributes, &ipv6)?);
        }
        Ok(updates)
    }

    /// UPDATEs withdrawing `prefixes`: IPv4 ones in the Withdrawn Routes field (RFC 4271
    /// §4.3: no attributes), IPv6 ones in MP_UNREACH_NLRI, its only attribute (RFC 4760 §4).
    pub fn withdraw(prefixes: &[Prefix]) -> Result<Vec<Update>, UpdateBuildError> {
        let (ipv6, ipv4): (Vec<Prefix>, Vec<Prefix>) = prefixes.iter().partition(|p| p.is_ipv6());
        let mut updates: Vec<Update> =
            chunk_by_nlri_len(&ipv4, MAX_BODY_LEN - UPDATE_LENGTH_FIELDS)
                .into_iter()
                .map(|chunk| {
                    build(
                        BgpUpdateMessage {
                            withdrawn_prefixes: chunk.iter().map(|p| p.to_wire()).collect(),
                            attributes: Attributes::default(),
                            announced_prefixes: Vec::new(),
                        },
                        AsnLength::Bits32,
                        true,
                    )
                })
                .collect::<Result<_, _>>()?;
        let room = MAX_BODY_LEN - UPDATE_LENGTH_FIELDS - ATTRIBUTE_HEADER_MAX - MP_UNREACH_FIXED;
        for chunk in chunk_by_nlri_len(&ipv6, room) {
            updates.push(mp_unreach(chunk)?);
        }
        Ok(updates)
    }

    /// The IPv6 unicast End-of-RIB marker: an UPDATE whose only attribute is an empty
    /// MP_UNREACH_NLRI for IPv6 unicast (RFC 4724 §2).
    pub fn end_of_rib_ipv6() -> Result<Update, UpdateBuildError> {
        mp_unreach(&[])
    }

    /// The IPv4 unicast End-of-RIB marker: an UPDATE with nothing in it
    /// (RFC 4724 §2), sent after the initial table.
    pub fn end_of_rib() -> Update {
        Update {
            body: Bytes::from_static(&[0, 0, 0, 0]),
            summary: UpdateSummary {
                end_of_rib: true,
                ..UpdateSummary::default()
            },
        }
    }
}

/// Encode with bgpkit-parser, then run the result through the same check
/// as received UPDATEs. That costs microseconds on a few hundred octets and
/// catches an encoder change that would get the session reset by the peer.
fn build(
    message: BgpUpdateMessage,
    asn_len: AsnLength,
    four_octet_as: bool,
) -> Result<Update, UpdateBuildError> {
    let body = message
        .encode(asn_len)
        .map_err(|error| UpdateBuildError::Encoding {
            reason: error.to_string(),
        })?;
    let summary = check_update_body(&body, four_octet_as).map_err(UpdateBuildError::SelfCheck)?;
    if let Some(error) = summary.treat_as_withdraw {
        return Err(UpdateBuildError::SelfCheck(error));
    }
    Ok(Update { body, summary })
}

fn asn_length(encoding: &UpdateEncoding) -> AsnLength {
    if encoding.four_octet_as {
        AsnLength::Bits32
    } else {
        AsnLength::Bits16
    }
}

/// Octets `attributes` take on the wire.
fn encoded_len(attributes: &[Attribute], asn_len: AsnLength) -> Result<usize, UpdateBuildError> {
    Attributes::from(attributes.to_vec())
        .encode(asn_len)
        .map(|bytes| bytes.len())
        .map_err(|error| UpdateBuildError::Encoding {
            reason: error.to_string(),
        })
}

/// IPv4 prefixes (at least one) in the NLRI field, with NEXT_HOP.
fn announce_ipv4(
    encoding: &UpdateEncoding,
    attributes: &RouteAttributes,
    prefixes: &[Prefix],
) -> Result<Vec<Update>, UpdateBuildError> {
    let next_hop = attribute(AttributeValue::NextHop(IpAddr::V4(encoding.next_hop)));
    let path_attributes = in_type_order(path_attributes(encoding, attributes), next_hop);
    let attributes_len = encoded_len(&path_attributes, asn_length(encoding))?;
    // The longest IPv4 NLRI entry is 5 octets (a /32).
    let room = nlri_room(attributes_len, 5)?;
    chunk_by_nlri_len(prefixes, room)
        .into_iter()
        .map(|chunk| announcement(encoding, path_attributes.clone(), chunk))
        .collect()
}

/// IPv6 prefixes (at least one) in MP_REACH_NLRI with the session's IPv6 next hop; no
/// NEXT_HOP attribute (RFC 4760 §3: an UPDATE with only MP_REACH_NLRI carries none).
fn announce_ipv6(
    encoding: &UpdateEncoding,
    attributes: &RouteAttributes,
    prefixes: &[Prefix],
) -> Result<Vec<Update>, UpdateBuildError> {
    let next_hop = encoding
        .next_hop_ipv6
        .ok_or(UpdateBuildError::NoIpv6NextHop)?;
    let base = path_attributes(encoding, attributes);
    let attributes_len =
        encoded_len(&base, asn_length(encoding))? + ATTRIBUTE_HEADER_MAX + MP_REACH_IPV6_FIXED;
    // The longest IPv6 NLRI entry is 17 octets (a /128).
    let room = nlri_room(attributes_len, 17)?;
    chunk_by_nlri_len(prefixes, room)
        .into_iter()
        .map(|chunk| {
            let value_len = MP_REACH_IPV6_FIXED + chunk.iter().map(Prefix::nlri_len).sum::<usize>();
            let reach = sized_attribute(
                AttributeValue::MpReachNlri(ipv6_nlri(chunk, Some(next_hop))),
                value_len,
            );
            announcement(encoding, in_type_order(base.clone(), reach), &[])
        })
        .collect()
}

/// Octets left for NLRI after `attributes_len` octets of attributes; an error unless at
/// least one entry of `longest` octets fits.
fn nlri_room(attributes_len: usize, longest: usize) -> Result<usize, UpdateBuildError> {
    MAX_BODY_LEN
        .checked_sub(UPDATE_LENGTH_FIELDS + attributes_len)
        .filter(|room| *room >= longest)
        .ok_or(UpdateBuildError::AttributesTooLarge { attributes_len })
}

/// An UPDATE announcing `nlri` (IPv4, in the NLRI field) with `attributes`.
fn announcement(
    encoding: &UpdateEncoding,
    attributes: Vec<Attribute>,
    nlri: &[Prefix],
) -> Result<Update, UpdateBuildError> {
    build(
        BgpUpdateMessage {
            withdrawn_prefixes: Vec::new(),
            attributes: Attributes::from(attributes),
            announced_prefixes: nlri.iter().map(|p| p.to_wire()).collect(),
        },
        asn_length(encoding),
        encoding.four_octet_as,
    )
}

/// An UPDATE whose only attribute is MP_UNREACH_NLRI withdrawing `prefixes` (IPv6 unicast).
fn mp_unreach(prefixes: &[Prefix]) -> Result<Update, UpdateBuildError> {
    let value_len = MP_UNREACH_FIXED + prefixes.iter().map(Prefix::nlri_len).sum::<usize>();
    let unreach = sized_attribute(
        AttributeValue::MpUnreachNlri(ipv6_nlri(prefixes, None)),
        value_len,
    );
    build(
        BgpUpdateMessage {
            withdrawn_prefixes: Vec::new(),
            attributes: Attributes::from(vec![unreach]),
            announced_prefixes: Vec::new(),
        },
        AsnLength::Bits32,
        true,
    )
}

fn ipv6_nlri(prefixes: &[Prefix], next_hop: Option<Ipv6Addr>) -> Nlri {
    Nlri {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
        next_hop: next_hop.map(NextHopAddress::Ipv6),
        prefixes: prefixes.iter().map(|p| p.to_wire()).collect(),
        labeled_prefixes: None,
        link_state_nlris: None,
        flowspec_nlris: None,
    }
}

/// `list` with `extra` added, in type-code order as RFC 4271 §5 asks senders to do.
fn in_type_order(mut list: Vec<Attribute>, extra: Attribute) -> Vec<Attribute> {
    list.push(extra);
    list.sort_by_key(|a| u8::from(a.value.attr_type()));
    list
}

/// Split `prefixes` into runs whose NLRI encoding fits in `room` octets.
fn chunk_by_nlri_len(prefixes: &[Prefix], room: usize) -> Vec<&[Prefix]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (index, prefix) in prefixes.iter().enumerate() {
        if used + prefix.nlri_len() > room {
            chunks.push(&prefixes[start..index]);
            start = index;
            used = 0;
        }
        used += prefix.nlri_len();
    }
    if start < prefixes.len() {
        chunks.push(&prefixes[start..]);
    }
    chunks
}

/// The path attributes of one announcement but its next hop (NEXT_HOP or MP_REACH_NLRI,
/// which [`in_type_order`] adds), in type-code order as RFC 4271 §5 asks senders to do.
fn path_attributes(encoding: &UpdateEncoding, route: &RouteAttributes) -> Vec<Attribute> {
    let mut list = vec![attribute(AttributeValue::Origin(Origin::IGP))];

    // RFC 4271 §5.1.2: to an external peer we prepend our AS as an
    // AS_SEQUENCE; to an internal one the path we originate is empty.
    // RFC 6793 §4.2.2: a 2-octet-only peer gets AS_TRANS in AS_PATH and
    // the real number in AS4_PATH when ours does not fit in 16 bits.
    let mut as4_path = None;
    let as_path = if encoding.ibgp {
        AsPath::new()
    } else if encoding.four_octet_as || encoding.local_as <= u32::from(u16::MAX) {
        AsPath::from_sequence([encoding.local_as])
    } else {
        as4_path = Some(AsPath::from_sequence([encoding.local_as]));
        AsPath::from_sequence([u32::from(AS_TRANS)])
    };
    list.push(attribute(AttributeValue::AsPath(as_path)));
    if let Some(med) = route.med {
        list.push(attribute(AttributeValue::MultiExitDiscriminator(med)));
    }
    if encoding.ibgp {
        list.push(attribute(AttributeValue::LocalPreference(
            route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
        )));
    }
    let communities = dedup(&route.communities);
    if !communities.is_empty() {
        let value_len = 4 * communities.len();
        let value =
            AttributeValue::Communities(communities.into_iter().map(community_to_wire).collect());
        list.push(sized_attribute(value, value_len));
    }
    if let Some(path) = as4_path {
        list.push(attribute(AttributeValue::As4Path(path)));
    }
    // RFC 8092 §5: duplicates SHOULD NOT be sent.
    let large = dedup(&route.large_communities);
    if !large.is_empty() {
        let value_len = 12 * large.len();
        let value = AttributeValue::LargeCommunities(
            large
                .into_iter()
                .map(|c| WireLargeCommunity::new(c.global_admin, [c.local_data_1, c.local_data_2]))
                .collect(),
        );
        list.push(sized_attribute(value, value_len));
    }
    list
}

fn attribute(value: AttributeValue) -> Attribute {
    let flag = value.default_flags();
    Attribute { value, flag }
}

/// An attribute whose value may outgrow a 1-octet length.
fn sized_attribute(value: AttributeValue, value_len: usize) -> Attribute {
    let mut attribute = attribute(value);
    if value_len > MAX_SHORT_ATTRIBUTE_LEN {
        attribute.flag |= AttrFlags::EXTENDED;
    }
    attribute
}

/// `items` without repeats, first occurrence kept, order otherwise kept.
fn dedup<T: Copy + PartialEq>(items: &[T]) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !kept.contains(item) {
            kept.push(*item);
        }
    }
    kept
}
