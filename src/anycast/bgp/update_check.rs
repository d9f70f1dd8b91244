//! Checking received UPDATE messages without keeping their routes.
//!
//! Written by hand rather than with bgpkit-parser's
//! `parse_bgp_update_message` for three reasons:
//! - that parser expands every prefix and attribute into vectors, while we
//!   install no routes and want a fixed, allocation-free cost per message;
//! - it is built for MRT archives and stays quiet where a live speaker must
//!   act: an attribute running past the attribute block just ends the walk
//!   with a log line, and one or two stray octets are ignored;
//! - its RFC 7606 findings are free-form warnings, while we need the RFC
//!   4271 §6.3 subcode and data of each error.
//!
//! Error handling follows RFC 7606, which revises RFC 4271 §6.3: errors
//! that leave the message unparseable reset the session, attribute errors
//! are "treat-as-withdraw" or "attribute discard". Since we keep no routes,
//! both of those come down to not resetting the session; the first
//! treat-as-withdraw error is kept in the summary for logging.

use std::net::Ipv4Addr;

use bytes::Bytes;

use super::message::MessageError;
use super::update::UpdateSummary;
use super::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST};

/// Attribute type codes we check (IANA "BGP Path Attributes").
mod attribute_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// How RFC 7606 says to handle a bad attribute.
enum AttributeProblem {
    /// RFC 7606 §2 "treat-as-withdraw".
    TreatAsWithdraw(MessageError),
    /// RFC 7606 §2 "attribute discard".
    Discard,
    /// RFC 7606 §2 "session reset".
    SessionReset(MessageError),
}

/// The RFC 4271 §5 category of a known attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    WellKnown,
    OptionalTransitive,
    OptionalNonTransitive,
}

fn category(type_code: u8) -> Option<Category> {
    use attribute_type::*;
    match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(Category::WellKnown),
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            Some(Category::OptionalNonTransitive)
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITIES => Some(Category::OptionalTransitive),
        _ => None,
    }
}

/// Check a received UPDATE body (everything after the header) and count
/// what it carries. `Err` means the session must be reset with that
/// error's NOTIFICATION.
pub(super) fn check_update_body(
    body: &Bytes,
    four_octet_as: bool,
) -> Result<UpdateSummary, MessageError> {
    // RFC 4271 §6.3 / RFC 7606 §4: when the two length fields do not fit
    // in the message, nothing after them can be located: session reset.
    let overrun = |reason| MessageError::MalformedAttributeList { reason };
    let withdrawn_len = read_u16(body, 0).ok_or(overrun("no withdrawn routes length"))?;
    let withdrawn_end = 2 + usize::from(withdrawn_len);
    let attributes_len = read_u16(body, withdrawn_end)
        .ok_or(overrun("withdrawn routes length overruns the message"))?;
    let attributes_start = withdrawn_end + 2;
    let attributes_end = attributes_start + usize::from(attributes_len);
    if attributes_end > body.len() {
        return Err(overrun("total path attribute length overruns the message"));
    }
    let withdrawn = &body[2..withdrawn_end];
    let nlri = &body[attributes_end..];

    // RFC 7606 §5.3: a syntactically wrong NLRI field means session reset.
    let invalid = |reason| MessageError::InvalidNetworkField { reason };
    let mut summary = UpdateSummary {
        withdrawn_prefixes: count_prefixes(withdrawn, 32)
            .ok_or(invalid("bad prefix in withdrawn routes"))?,
        announced_prefixes: count_prefixes(nlri, 32).ok_or(invalid("bad prefix in NLRI"))?,
        ..UpdateSummary::default()
    };

    let mut seen = [false; 256];
    let mut position = attributes_start;
    let mut mp_reach_present = false;
    let mut only_empty_mp_unreach = false;
    while position < attributes_end {
        let Some((header_len, value_len)) = attribute_header(&body[position..attributes_end])
        else {
            // RFC 7606 §4: an attribute that runs past the attribute block
            // (or a stray octet or two) makes the list malformed, but the
            // NLRI can still be found: treat-as-withdraw.
            note(
                &mut summary,
                overrun("attribute runs past the path attribute block"),
            );
            break;
        };
        let attribute = body.slice(position..position + header_len + value_len);
        let value = &attribute[header_len..];
        let (flags, type_code) = (attribute[0], attribute[1]);
        position += header_len + value_len;
        summary.path_attributes += 1;

        // RFC 7606 §3(g): repeated MP_REACH/MP_UNREACH reset the session;
        // any other repeat is dropped after the first.
        if seen[usize::from(type_code)] {
            if matches!(
                type_code,
                attribute_type::MP_REACH_NLRI | attribute_type::MP_UNREACH_NLRI
            ) {
                return Err(overrun("MP_REACH_NLRI or MP_UNREACH_NLRI repeated"));
            }
            continue;
        }
        seen[usize::from(type_code)] = true;
        mp_reach_present |= type_code == attribute_type::MP_REACH_NLRI;

        match check_attribute(flags, type_code, value, &attribute, four_octet_as) {
            Ok(Some(MpCount::Reach(count))) => summary.mp_reach_prefixes += count,
            Ok(Some(MpCount::Unreach(count))) => {
                summary.mp_unreach_prefixes += count;
                only_empty_mp_unreach = count == 0 && value.len() == 3;
            }
            Ok(None) | Err(AttributeProblem::Discard) => {}
            Err(AttributeProblem::TreatAsWithdraw(error)) => note(&mut summary, error),
            Err(AttributeProblem::SessionReset(error)) => return Err(error),
        }
    }

    // RFC 4271 §6.3 / RFC 7606 §3(d): routes need ORIGIN and AS_PATH, and
    // IPv4 NLRI also needs NEXT_HOP; missing ones are treat-as-withdraw.
    if summary.announced_prefixes > 0 || mp_reach_present {
        let required: &[u8] = if summary.announced_prefixes > 0 {
            &[
                attribute_type::ORIGIN,
                attribute_type::AS_PATH,
                attribute_type::NEXT_HOP,
            ]
        } else {
            &[attribute_type::ORIGIN, attribute_type::AS_PATH]
        };
        if let Some(&type_code) = required.iter().find(|&&code| !seen[usize::from(code)]) {
            note(
                &mut summary,
                MessageError::MissingWellKnownAttribute { type_code },
            );
        }
    }

    // RFC 4724 §2: an empty UPDATE ends the IPv4 unicast table; an UPDATE
    // holding only an empty MP_UNREACH_NLRI ends that family's.
    summary.end_of_rib = summary.withdrawn_prefixes == 0
        && summary.announced_prefixes == 0
        && (summary.path_attributes == 0
            || (summary.path_attributes == 1 && only_empty_mp_unreach));
    Ok(summary)
}

fn note(summary: &mut UpdateSummary, error: MessageError) {
    summary.treat_as_withdraw.get_or_insert(error);
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Header and value lengths of the attribute at the start of `data`, if it
/// fits entirely.
fn attribute_header(data: &[u8]) -> Option<(usize, usize)> {
    let flags = *data.first()?;
    let (header_len, value_len) = if flags & FLAG_EXTENDED_LENGTH != 0 {
        (4, usize::from(read_u16(data, 2)?))
    } else {
        (3, usize::from(*data.get(2)?))
    };
    (data.len() >= header_len + value_len).then_some((header_len, value_len))
}

/// Prefixes counted inside an MP_REACH_NLRI or MP_UNREACH_NLRI.
enum MpCount {
    Reach(u32),
    Unreach(u32),
}

fn check_attribute(
    flags: u8,
    type_code: u8,
    value: &[u8],
    attribute: &Bytes,
    four_octet_as: bool,
) -> Result<Option<MpCount>, AttributeProblem> {
    use attribute_type::*;
    use AttributeProblem::{Discard, SessionReset, TreatAsWithdraw};

    let Some(category) = category(type_code) else {
        // RFC 4271 §6.3: an unknown attribute claiming to be well-known.
        if flags & FLAG_OPTIONAL == 0 {
            return Err(SessionReset(MessageError::UnrecognizedWellKnownAttribute {
                attribute: attribute.clone(),
            }));
        }
        // Unknown optional attributes are passed over (RFC 4271 §5).
        return Ok(None);
    };

    // RFC 7606 §7: these four are "attribute discard" whatever is wrong.
    let discard_only = matches!(
        type_code,
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR
    );
    let withdraw = |error| {
        if discard_only {
            Discard
        } else {
            TreatAsWithdraw(error)
        }
    };

    if !flags_match(flags, category) {
        // RFC 7606 §3(c): wrong Optional/Transitive/Partial bits make the
        // attribute malformed.
        return Err(withdraw(MessageError::AttributeFlagsError {
            attribute: attribute.clone(),
        }));
    }

    let length_error = || {
        withdraw(MessageError::AttributeLengthError {
            attribute: attribute.clone(),
        })
    };
    let exact = |expected: usize| {
        if value.len() == expected {
            Ok(None)
        } else {
            Err(length_error())
        }
    };
    // RFC 7606 §7.8, §7.10, §7.14, RFC 8092 §6: lists of fixed-size items
    // must be non-empty whole multiples.
    let multiple_of = |unit: usize| {
        if !value.is_empty() && value.len().is_multiple_of(unit) {
            Ok(None)
        } else {
            Err(length_error())
        }
    };

    match type_code {
        ORIGIN => match value {
            [0..=2] => Ok(None),
            [_] => Err(withdraw(MessageError::InvalidOriginAttribute {
                attribute: attribute.clone(),
            })),
            _ => Err(length_error()),
        },
        // RFC 7606 §7.2.
        AS_PATH => {
            if as_path_is_well_formed(value, if four_octet_as { 4 } else { 2 }) {
                Ok(None)
            } else {
                Err(withdraw(MessageError::MalformedAsPath))
            }
        }
        // RFC 7606 §7.3; RFC 4271 §6.3 leaves the semantic checks to us:
        // an unusable address is rejected, reachability is not our business.
        NEXT_HOP => {
            let &[a, b, c, d] = value else {
                return Err(length_error());
            };
            let next_hop = Ipv4Addr::new(a, b, c, d);
            if next_hop.is_unspecified() || next_hop.is_broadcast() || next_hop.is_multicast() {
                Err(withdraw(MessageError::InvalidNextHopAttribute {
                    attribute: attribute.clone(),
                }))
            } else {
                Ok(None)
            }
        }
        MULTI_EXIT_DISC | LOCAL_PREF | ORIGINATOR_ID => exact(4),
        ATOMIC_AGGREGATE => exact(0),
        AGGREGATOR => exact(if four_octet_as { 8 } else { 6 }),
        AS4_AGGREGATOR => exact(8),
        COMMUNITIES | CLUSTER_LIST => multiple_of(4),
        EXTENDED_COMMUNITIES => multiple_of(8),
        LARGE_COMMUNITIES => multiple_of(12),
        // AS4_PATH is only read by speakers that stitch paths together
        // (RFC 6793 §4.2.3); we do not, so its contents do not matter.
        AS4_PATH => Ok(None),
        // RFC 4760 §7: a bad MP attribute disables its address family; we
        // hold no routes of any family, so that is the same as withdrawing.
        MP_REACH_NLRI => count_mp_reach(value)
            .map(|count| Some(MpCount::Reach(count)))
            .ok_or_else(|| optional_attribute_error(attribute)),
        MP_UNREACH_NLRI => count_mp_unreach(value)
            .map(|count| Some(MpCount::Unreach(count)))
            .ok_or_else(|| optional_attribute_error(attribute)),
        _ => Ok(None),
    }
}

fn optional_attribute_error(attribute: &Bytes) -> AttributeProblem {
    AttributeProblem::TreatAsWithdraw(MessageError::OptionalAttributeError {
        attribute: attribute.clone(),
    })
}

/// RFC 4271 §4.3: well-known attributes are transitive and not partial;
/// optional non-transitive ones are not partial either.
fn flags_match(flags: u8, category: Category) -> bool {
    let optional = flags & FLAG_OPTIONAL != 0;
    let transitive = flags & FLAG_TRANSITIVE != 0;
    let partial = flags & FLAG_PARTIAL != 0;
    match category {
        Category::WellKnown => !optional && transitive && !partial,
        Category::OptionalNonTransitive => optional && !transitive && !partial,
        Category::OptionalTransitive => optional && transitive,
    }
}

/// RFC 4271 §4.3 segments: type 1-4 (RFC 5065 adds the confederation
/// ones), a non-zero count (RFC 7606 §7.2) and that many AS numbers.
fn as_path_is_well_formed(mut value: &[u8], asn_width: usize) -> bool {
    while let Some((&[segment_type, count], rest)) = value.split_first_chunk::<2>() {
        let segment_len = usize::from(count) * asn_width;
        if !(1..=4).contains(&segment_type) || count == 0 || rest.len() < segment_len {
            return false;
        }
        value = &rest[segment_len..];
    }
    value.is_empty()
}

/// Count IPv4/IPv6 unicast prefixes in an MP_REACH_NLRI value (RFC 4760
/// §3): AFI, SAFI, next hop length and next hop, a reserved octet, NLRI.
fn count_mp_reach(value: &[u8]) -> Option<u32> {
    let (&[afi_high, afi_low, safi, next_hop_len], rest) = value.split_first_chunk::<4>()?;
    let nlri = rest.get(usize::from(next_hop_len) + 1..)?;
    count_family_prefixes(u16::from_be_bytes([afi_high, afi_low]), safi, nlri)
}

/// Count IPv4/IPv6 unicast prefixes in an MP_UNREACH_NLRI value (RFC 4760
/// §4): AFI, SAFI, withdrawn routes.
fn count_mp_unreach(value: &[u8]) -> Option<u32> {
    let (&[afi_high, afi_low, safi], withdrawn) = value.split_first_chunk::<3>()?;
    count_family_prefixes(u16::from_be_bytes([afi_high, afi_low]), safi, withdrawn)
}

/// Prefix count for the families we can parse; other families are not
/// counted, which needs no parsing and so cannot fail.
fn count_family_prefixes(afi: u16, safi: u8, nlri: &[u8]) -> Option<u32> {
    match (afi, safi) {
        (AFI_IPV4, SAFI_UNICAST) => count_prefixes(nlri, 32),
        (AFI_IPV6, SAFI_UNICAST) => count_prefixes(nlri, 128),
        _ => Some(0),
    }
}

/// Number of prefixes in an RFC 4271 §4.3 NLRI list (length in bits, then
/// just enough octets), `None` if a length is over `max_bits` or a prefix
/// is cut short. ADD-PATH (RFC 7911) is never negotiated, so no path ids.
fn count_prefixes(mut data: &[u8], max_bits: u8) -> Option<u32> {
    let mut count = 0u32;
    while let Some((&bits, rest)) = data.split_first() {
        if bits > max_bits {
            return None;
        }
        data = rest.get(usize::from(bits).div_ceil(8)..)?;
        count += 1;
    }
    Some(count)
}
