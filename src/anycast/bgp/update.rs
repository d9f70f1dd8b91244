//! UPDATE messages (RFC 4271 §4.3): building the ones we send.
//!
//! Path attributes, AS_PATH segments, communities and NLRI are encoded by
//! bgpkit-parser (`Attributes`, `BgpUpdateMessage::encode`). What stays
//! here is the policy: which attributes an anycast announcement carries on
//! an eBGP or iBGP session, the RFC 6793 AS_TRANS / AS4_PATH fallback, and
//! splitting prefixes so no message exceeds 4096 octets. Received UPDATEs
//! are checked by `update_check.rs` and kept only as a summary.

use std::net::{IpAddr, Ipv4Addr};

use bgpkit_parser::models::{
    AsPath, Asn, AsnLength, AttrFlags, Attribute, AttributeValue, Attributes, BgpUpdateMessage,
    Community, LargeCommunity as WireLargeCommunity, NetworkPrefix, Origin,
};
use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net};

use super::message::{DecodeContext, MessageError};
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

/// An IPv4 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    address: Ipv4Addr,
    length: u8,
}

impl Ipv4Prefix {
    /// `None` when `length` is over 32. Host bits are cleared so that two
    /// spellings of one prefix compare equal.
    pub fn new(address: Ipv4Addr, length: u8) -> Option<Self> {
        let network = Ipv4Net::new(address, length).ok()?.trunc();
        Some(Ipv4Prefix {
            address: network.addr(),
            length,
        })
    }

    /// A single address, as pgcast announces its anycast /32.
    pub fn host(address: Ipv4Addr) -> Self {
        Ipv4Prefix {
            address,
            length: 32,
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn length(&self) -> u8 {
        self.length
    }

    /// Octets this prefix takes in an NLRI field (RFC 4271 §4.3).
    fn nlri_len(&self) -> usize {
        1 + usize::from(self.length).div_ceil(8)
    }

    fn to_wire(self) -> NetworkPrefix {
        // The length was checked in `new`, so this conversion cannot fail;
        // Ipv4Net::from(address) (a /32) is only the unreachable fallback.
        let network =
            Ipv4Net::new(self.address, self.length).unwrap_or_else(|_| Ipv4Net::from(self.address));
        NetworkPrefix::new(IpNet::V4(network), None)
    }
}

impl std::fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

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
    /// NEXT_HOP for everything we announce.
    pub next_hop: Ipv4Addr,
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
    /// messages as the 4096-octet limit needs. Empty input, no messages.
    pub fn announce(
        encoding: &UpdateEncoding,
        attributes: &RouteAttributes,
        prefixes: &[Ipv4Prefix],
    ) -> Result<Vec<Update>, UpdateBuildError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let asn_len = if encoding.four_octet_as {
            AsnLength::Bits32
        } else {
            AsnLength::Bits16
        };
        let path_attributes = path_attributes(encoding, attributes);
        let attributes_len = path_attributes
            .encode(asn_len)
            .map_err(|error| UpdateBuildError::Encoding {
                reason: error.to_string(),
            })?
            .len();
        // The longest NLRI entry is 5 octets (a /32).
        let room = MAX_BODY_LEN
            .checked_sub(UPDATE_LENGTH_FIELDS + attributes_len)
            .filter(|room| *room >= 5)
            .ok_or(UpdateBuildError::AttributesTooLarge { attributes_len })?;
        chunk_by_nlri_len(prefixes, room)
            .into_iter()
            .map(|chunk| {
                build(
                    BgpUpdateMessage {
                        withdrawn_prefixes: Vec::new(),
                        attributes: path_attributes.clone(),
                        announced_prefixes: chunk.iter().map(|p| p.to_wire()).collect(),
                    },
                    asn_len,
                    encoding.four_octet_as,
                )
            })
            .collect()
    }

    /// UPDATEs withdrawing `prefixes` (RFC 4271 §4.3: no attributes).
    pub fn withdraw(prefixes: &[Ipv4Prefix]) -> Result<Vec<Update>, UpdateBuildError> {
        chunk_by_nlri_len(prefixes, MAX_BODY_LEN - UPDATE_LENGTH_FIELDS)
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
            .collect()
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

/// Split `prefixes` into runs whose NLRI encoding fits in `room` octets.
fn chunk_by_nlri_len(prefixes: &[Ipv4Prefix], room: usize) -> Vec<&[Ipv4Prefix]> {
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

/// The path attributes of one announcement, in type-code order as RFC
/// 4271 §5 asks senders to do.
fn path_attributes(encoding: &UpdateEncoding, route: &RouteAttributes) -> Attributes {
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
    list.push(attribute(AttributeValue::NextHop(IpAddr::V4(
        encoding.next_hop,
    ))));
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
    Attributes::from(list)
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
