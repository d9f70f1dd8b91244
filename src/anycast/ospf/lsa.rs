//! OSPFv2 link state advertisements: header, bodies of the LSA types 1-5 (RFC 2328 §A.4) and
//! the "which instance is newer" rule of §13.1.
//!
//! Decoding never panics: every read goes through [`Reader`], which reports a short buffer
//! instead of slicing past its end.

use std::cmp::Ordering;
use std::fmt;
use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::checksum::{fletcher_checksum, fletcher_verify};

/// RFC 2328 App. B architectural constants (seconds).
pub const MAX_AGE: u16 = 3600;
pub const MAX_AGE_DIFF: u16 = 900;
pub const LS_REFRESH_TIME: u16 = 1800;
/// RFC 2328 §12.1.6: sequence numbers are signed; 0x80000000 is reserved, so the first
/// instance uses 0x80000001 and the space ends at 0x7fffffff.
pub const INITIAL_SEQ: i32 = 0x8000_0001u32 as i32;
pub const MAX_SEQ: i32 = 0x7fff_ffff;
pub const LSA_HEADER_LEN: usize = 20;

/// Offset of the LS checksum in the LSA header (§A.4.1).
const CHECKSUM_OFFSET: usize = 16;
/// Offset of the LS length in the LSA header (§A.4.1).
const LENGTH_OFFSET: usize = 18;

/// The Options field (RFC 2328 §A.2) as carried in Hello, DD and LSA headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Options(pub u8);

impl Options {
    pub const E: u8 = 0x02;
    pub const MC: u8 = 0x04;
    pub const NP: u8 = 0x08;
    pub const EA: u8 = 0x10;
    pub const DC: u8 = 0x20;
    pub const O: u8 = 0x40;

    /// True when every bit of `bits` is set.
    pub fn contains(self, bits: u8) -> bool {
        self.0 & bits == bits
    }

    /// A copy with `bits` set.
    #[must_use]
    pub fn with(self, bits: u8) -> Options {
        Options(self.0 | bits)
    }
}

/// LS type codes (RFC 2328 §A.4.1).
pub mod ls_type {
    pub const ROUTER: u8 = 1;
    pub const NETWORK: u8 = 2;
    pub const SUMMARY_NET: u8 = 3;
    pub const SUMMARY_ASBR: u8 = 4;
    pub const AS_EXTERNAL: u8 = 5;
}

/// What identifies an LSA in the database (RFC 2328 §12.1): type, Link State ID, Advertising
/// Router. Two instances with the same key are compared with [`compare_instances`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LsaKey {
    pub ls_type: u8,
    pub ls_id: Ipv4Addr,
    pub adv_router: Ipv4Addr,
}

impl fmt::Display for LsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type{}/{}/{}", self.ls_type, self.ls_id, self.adv_router)
    }
}

/// The 20-byte LSA header (RFC 2328 §A.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsaHeader {
    pub age: u16,
    pub options: Options,
    pub ls_type: u8,
    pub ls_id: Ipv4Addr,
    pub adv_router: Ipv4Addr,
    pub seq: i32,
    pub checksum: u16,
    pub length: u16,
}

impl LsaHeader {
    pub fn key(&self) -> LsaKey {
        LsaKey {
            ls_type: self.ls_type,
            ls_id: self.ls_id,
            adv_router: self.adv_router,
        }
    }

    /// True when the age has reached MaxAge (the LSA is being flushed, §14).
    pub fn is_max_age(&self) -> bool {
        effective_age(self.age) >= MAX_AGE
    }

    /// Decodes the header at the start of `buf` (at least 20 bytes; the rest is ignored).
    /// The length field must be at least the header size: a smaller one cannot describe any
    /// LSA, and letting it through would make the caller's length arithmetic underflow.
    pub fn decode(buf: &[u8]) -> Result<LsaHeader, LsaError> {
        let mut r = Reader::new(buf);
        let header = (|| {
            Some(LsaHeader {
                age: r.u16()?,
                options: Options(r.u8()?),
                ls_type: r.u8()?,
                ls_id: r.ipv4()?,
                adv_router: r.ipv4()?,
                seq: r.u32()? as i32,
                checksum: r.u16()?,
                length: r.u16()?,
            })
        })()
        .ok_or(LsaError::Truncated)?;
        if usize::from(header.length) < LSA_HEADER_LEN {
            return Err(LsaError::BadLength(header.length));
        }
        Ok(header)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.age);
        out.put_u8(self.options.0);
        out.put_u8(self.ls_type);
        out.put_slice(&self.ls_id.octets());
        out.put_slice(&self.adv_router.octets());
        out.put_i32(self.seq);
        out.put_u16(self.checksum);
        out.put_u16(self.length);
    }
}

/// The age used for comparisons: the DoNotAge bit (RFC 1793, top bit) is ignored and anything
/// beyond MaxAge counts as MaxAge (an age can never legitimately exceed it, §13.2).
fn effective_age(age: u16) -> u16 {
    (age & 0x7fff).min(MAX_AGE)
}

/// RFC 2328 §13.1: which of two instances of the same LSA is more recent.
/// `Ordering::Greater` means `a` is newer, `Equal` means they are the same instance.
pub fn compare_instances(a: &LsaHeader, b: &LsaHeader) -> Ordering {
    // 1. The larger (signed) LS sequence number is newer.
    match a.seq.cmp(&b.seq) {
        Ordering::Equal => {}
        other => return other,
    }
    // 2. Same sequence: the larger checksum (as an unsigned 16-bit integer) is newer.
    match a.checksum.cmp(&b.checksum) {
        Ordering::Equal => {}
        other => return other,
    }
    // 3. Otherwise an instance at MaxAge is newer (it is the flush of the other one).
    let (age_a, age_b) = (effective_age(a.age), effective_age(b.age));
    match (age_a >= MAX_AGE, age_b >= MAX_AGE) {
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    // 4. Ages differing by more than MaxAgeDiff: the younger (smaller age) is newer.
    if age_a.abs_diff(age_b) > MAX_AGE_DIFF {
        return age_b.cmp(&age_a);
    }
    // 5. Otherwise they are considered identical.
    Ordering::Equal
}

/// One LSA: the decoded header and body plus the exact wire bytes.
///
/// The wire bytes are kept so that an LSA is re-flooded byte for byte as received (the
/// checksum covers the body as encoded by its originator, including parts we do not model,
/// such as TOS metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lsa {
    pub header: LsaHeader,
    pub body: LsaBody,
    raw: Bytes,
}

impl Lsa {
    /// Builds and encodes an LSA we originate: fills the length and the Fletcher checksum
    /// (§12.4). The header's LS type comes from `key`; `body` should match it (an `Unknown`
    /// body encodes as an empty body). Bodies are encoded without TOS metrics. Callers keep
    /// LSAs far below the 65535-byte limit of the length field (a packet must fit in an IP
    /// datagram anyway); larger bodies are a programming error.
    pub fn originate(age: u16, options: Options, key: LsaKey, seq: i32, body: LsaBody) -> Lsa {
        let mut header = LsaHeader {
            age,
            options,
            ls_type: key.ls_type,
            ls_id: key.ls_id,
            adv_router: key.adv_router,
            seq,
            checksum: 0,
            length: 0,
        };
        let mut buf = BytesMut::with_capacity(LSA_HEADER_LEN + 64);
        header.encode(&mut buf);
        body.encode(&mut buf);
        debug_assert!(buf.len() <= usize::from(u16::MAX), "LSA too long");
        header.length = u16::try_from(buf.len()).unwrap_or(u16::MAX);
        buf[LENGTH_OFFSET..LENGTH_OFFSET + 2].copy_from_slice(&header.length.to_be_bytes());
        header.checksum = fletcher_checksum(&buf);
        buf[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&header.checksum.to_be_bytes());
        Lsa {
            header,
            body,
            raw: buf.freeze(),
        }
    }

    /// Decodes one LSA from the start of `buf`; returns it and the bytes consumed (its LS
    /// length). Verifies the length and the Fletcher checksum (§13 step 1).
    pub fn decode(buf: &[u8]) -> Result<(Lsa, usize), LsaError> {
        let header = LsaHeader::decode(buf)?;
        let len = usize::from(header.length);
        let raw = buf.get(..len).ok_or(LsaError::BadLength(header.length))?;
        if !fletcher_verify(raw) {
            return Err(LsaError::BadChecksum);
        }
        let body_bytes = raw.get(LSA_HEADER_LEN..).ok_or(LsaError::Truncated)?;
        let body = LsaBody::decode(header.ls_type, body_bytes)?;
        Ok((
            Lsa {
                header,
                body,
                raw: Bytes::copy_from_slice(raw),
            },
            len,
        ))
    }

    /// The exact bytes of the LSA, for re-flooding and round trips.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.raw);
    }

    /// The same LSA with another LS age. The age is not covered by the checksum (§12.1.7),
    /// so only bytes 0..2 change; used for InfTransDelay increments and premature aging.
    #[must_use]
    pub fn with_age(&self, age: u16) -> Lsa {
        let mut raw = BytesMut::from(&self.raw[..]);
        if let Some(field) = raw.get_mut(0..2) {
            field.copy_from_slice(&age.to_be_bytes());
        }
        let mut header = self.header;
        header.age = age;
        Lsa {
            header,
            body: self.body.clone(),
            raw: raw.freeze(),
        }
    }

    pub fn key(&self) -> LsaKey {
        self.header.key()
    }
}

/// The decoded body of an LSA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LsaBody {
    Router(RouterLsa),
    Network(NetworkLsa),
    /// Types 3 and 4 (the header's LS type tells them apart).
    Summary(SummaryLsa),
    AsExternal(AsExternalLsa),
    /// Other types: kept as raw bytes only (flooded, not interpreted).
    Unknown,
}

/// Router-LSA body (RFC 2328 §A.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLsa {
    pub flags: u8,
    pub links: Vec<RouterLink>,
}

impl RouterLsa {
    /// Virtual link endpoint.
    pub const V: u8 = 0x04;
    /// AS boundary router.
    pub const E: u8 = 0x02;
    /// Area border router.
    pub const B: u8 = 0x01;
}

/// One link of a Router-LSA. TOS metrics are skipped on decode (but counted into the
/// length) and never encoded (# TOS = 0), as TOS routing was removed in RFC 2328.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterLink {
    pub link_id: Ipv4Addr,
    pub link_data: Ipv4Addr,
    pub link_type: u8,
    pub metric: u16,
}

impl RouterLink {
    pub const POINT_TO_POINT: u8 = 1;
    pub const TRANSIT: u8 = 2;
    pub const STUB: u8 = 3;
    pub const VIRTUAL: u8 = 4;
}

/// Network-LSA body (RFC 2328 §A.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLsa {
    pub mask: Ipv4Addr,
    pub attached: Vec<Ipv4Addr>,
}

/// Summary-LSA body, types 3 and 4 (RFC 2328 §A.4.4). `metric` is 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryLsa {
    pub mask: Ipv4Addr,
    pub metric: u32,
}

/// AS-external-LSA body (RFC 2328 §A.4.5). `metric` is 24 bits; `type2` is the E bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsExternalLsa {
    pub mask: Ipv4Addr,
    pub type2: bool,
    pub metric: u32,
    pub forwarding: Ipv4Addr,
    pub tag: u32,
}

/// Largest value of the 24-bit metrics of summary and external LSAs (LSInfinity, App. B).
pub const LS_INFINITY: u32 = 0x00ff_ffff;
/// The E bit in the first byte after the mask of an AS-external-LSA (§A.4.5).
const EXTERNAL_E_BIT: u8 = 0x80;
/// Bytes of one link in a Router-LSA without TOS entries, and of each TOS entry (§A.4.2).
const ROUTER_LINK_LEN: usize = 12;
const ROUTER_TOS_LEN: usize = 4;
/// Bytes of each TOS entry of a summary (4) and an external (12) LSA (§A.4.4, §A.4.5).
const SUMMARY_TOS_LEN: usize = 4;
const EXTERNAL_TOS_LEN: usize = 12;

impl LsaBody {
    /// Appends the body's wire form (RFC 2328 §A.4.2-§A.4.5).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            LsaBody::Router(r) => {
                out.put_u8(r.flags);
                out.put_u8(0);
                debug_assert!(r.links.len() <= usize::from(u16::MAX));
                out.put_u16(u16::try_from(r.links.len()).unwrap_or(u16::MAX));
                for link in r.links.iter().take(usize::from(u16::MAX)) {
                    out.put_slice(&link.link_id.octets());
                    out.put_slice(&link.link_data.octets());
                    out.put_u8(link.link_type);
                    out.put_u8(0); // # TOS
                    out.put_u16(link.metric);
                }
            }
            LsaBody::Network(n) => {
                out.put_slice(&n.mask.octets());
                for router in &n.attached {
                    out.put_slice(&router.octets());
                }
            }
            LsaBody::Summary(s) => {
                out.put_slice(&s.mask.octets());
                // First byte is 0 (TOS 0 / reserved), then the 24-bit metric.
                out.put_u32(s.metric & LS_INFINITY);
            }
            LsaBody::AsExternal(e) => {
                out.put_slice(&e.mask.octets());
                let e_bit = if e.type2 {
                    u32::from(EXTERNAL_E_BIT) << 24
                } else {
                    0
                };
                out.put_u32(e_bit | (e.metric & LS_INFINITY));
                out.put_slice(&e.forwarding.octets());
                out.put_u32(e.tag);
            }
            LsaBody::Unknown => {}
        }
    }

    /// Decodes the body of an LSA of type `ls_type` (everything after the 20-byte header).
    /// The body must be consumed exactly: trailing or missing bytes mean the LS length and
    /// the contents disagree.
    pub fn decode(ls_type: u8, body: &[u8]) -> Result<LsaBody, LsaError> {
        let bad = LsaError::BadBody(ls_type);
        let mut r = Reader::new(body);
        let decoded = match ls_type {
            ls_type::ROUTER => {
                let flags = r.u8().ok_or(bad.clone())?;
                r.skip(1).ok_or(bad.clone())?;
                let count = r.u16().ok_or(bad.clone())?;
                // Never trust the count for allocation: bound it by what the bytes can hold.
                let mut links =
                    Vec::with_capacity(usize::from(count).min(r.remaining() / ROUTER_LINK_LEN));
                for _ in 0..count {
                    let link = (|| {
                        let link = RouterLink {
                            link_id: r.ipv4()?,
                            link_data: r.ipv4()?,
                            link_type: r.u8()?,
                            metric: 0,
                        };
                        let tos_count = r.u8()?;
                        let metric = r.u16()?;
                        r.skip(usize::from(tos_count) * ROUTER_TOS_LEN)?;
                        Some(RouterLink { metric, ..link })
                    })()
                    .ok_or(bad.clone())?;
                    links.push(link);
                }
                LsaBody::Router(RouterLsa { flags, links })
            }
            ls_type::NETWORK => {
                let mask = r.ipv4().ok_or(bad.clone())?;
                if !r.remaining().is_multiple_of(4) {
                    return Err(bad);
                }
                let mut attached = Vec::with_capacity(r.remaining() / 4);
                while let Some(router) = r.ipv4() {
                    attached.push(router);
                }
                LsaBody::Network(NetworkLsa { mask, attached })
            }
            ls_type::SUMMARY_NET | ls_type::SUMMARY_ASBR => {
                let mask = r.ipv4().ok_or(bad.clone())?;
                let metric = r.u32().ok_or(bad.clone())? & LS_INFINITY;
                // Trailing TOS entries are allowed and ignored.
                if !r.remaining().is_multiple_of(SUMMARY_TOS_LEN) {
                    return Err(bad);
                }
                r.skip(r.remaining());
                LsaBody::Summary(SummaryLsa { mask, metric })
            }
            ls_type::AS_EXTERNAL => {
                let fields = (|| {
                    let mask = r.ipv4()?;
                    let word = r.u32()?;
                    Some(AsExternalLsa {
                        mask,
                        type2: (word >> 24) as u8 & EXTERNAL_E_BIT != 0,
                        metric: word & LS_INFINITY,
                        forwarding: r.ipv4()?,
                        tag: r.u32()?,
                    })
                })();
                let ext = fields.ok_or(bad.clone())?;
                if !r.remaining().is_multiple_of(EXTERNAL_TOS_LEN) {
                    return Err(bad);
                }
                r.skip(r.remaining());
                LsaBody::AsExternal(ext)
            }
            _ => {
                r.skip(r.remaining());
                LsaBody::Unknown
            }
        };
        if r.remaining() != 0 {
            return Err(bad);
        }
        Ok(decoded)
    }
}

/// Why an LSA could not be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LsaError {
    /// Fewer than 20 bytes where an LSA header was expected.
    #[error("LSA header truncated")]
    Truncated,
    /// LS length below the header size or beyond the bytes available.
    #[error("bad LSA length {0}")]
    BadLength(u16),
    /// Fletcher checksum does not verify (§13 step 1).
    #[error("bad LSA checksum")]
    BadChecksum,
    /// The body does not fit its LS length (e.g. link count vs bytes).
    #[error("malformed body of LSA type {0}")]
    BadBody(u8),
}

impl LsaError {
    /// Stable snake_case label for metrics counters.
    pub fn reason(&self) -> &'static str {
        match self {
            LsaError::Truncated => "lsa_truncated",
            LsaError::BadLength(_) => "bad_lsa_length",
            LsaError::BadChecksum => "bad_lsa_checksum",
            LsaError::BadBody(_) => "bad_lsa_body",
        }
    }
}

/// Bounds-checked big-endian reader over untrusted bytes. Every method returns `None`
/// instead of reading past the end, so decoders cannot panic on short input.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.array::<4>().map(Ipv4Addr::from)
    }
}
