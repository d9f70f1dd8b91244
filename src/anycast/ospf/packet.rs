//! OSPFv2 packet header and the five packet bodies (RFC 2328 §A.3).
//!
//! Authentication and the packet checksum live in `auth.rs` (`encode_packet` /
//! `decode_packet`); this module only maps bodies to and from bytes.

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

use super::auth::DecodeError;
use super::lsa::{Lsa, LsaHeader, LsaKey, Options, Reader, LSA_HEADER_LEN};

pub const OSPF_VERSION: u8 = 2;
pub const IP_PROTO_OSPF: u8 = 89;
pub const ALL_SPF_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 5);
pub const ALL_D_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 6);
pub const HEADER_LEN: usize = 24;

/// Packet type codes (RFC 2328 §A.3.1).
pub mod packet_type {
    pub const HELLO: u8 = 1;
    pub const DB_DESCRIPTION: u8 = 2;
    pub const LS_REQUEST: u8 = 3;
    pub const LS_UPDATE: u8 = 4;
    pub const LS_ACK: u8 = 5;
}

/// Fixed part of a Hello body before the neighbour list (§A.3.2).
pub const HELLO_FIXED_LEN: usize = 20;
/// Fixed part of a Database Description body before the LSA headers (§A.3.3).
pub const DD_FIXED_LEN: usize = 8;
/// One Link State Request entry (§A.3.4).
pub const LSR_ENTRY_LEN: usize = 12;

/// A decoded OSPF packet: the header fields that matter above the codec plus the body.
/// Version, length, checksum and authentication are handled by the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub router_id: Ipv4Addr,
    pub area_id: Ipv4Addr,
    pub body: PacketBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketBody {
    Hello(Hello),
    DbDescription(DbDescription),
    LsRequest(Vec<LsaKey>),
    LsUpdate(Vec<Lsa>),
    LsAck(Vec<LsaHeader>),
}

/// Hello body (RFC 2328 §A.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub network_mask: Ipv4Addr,
    pub hello_interval: u16,
    pub options: Options,
    pub priority: u8,
    pub dead_interval: u32,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub neighbors: Vec<Ipv4Addr>,
}

/// Database Description body (RFC 2328 §A.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDescription {
    pub mtu: u16,
    pub options: Options,
    pub init: bool,
    pub more: bool,
    pub master: bool,
    pub seq: u32,
    pub headers: Vec<LsaHeader>,
}

impl DbDescription {
    /// Bits of the DD flags byte (§A.3.3).
    pub const FLAG_INIT: u8 = 0x04;
    pub const FLAG_MORE: u8 = 0x02;
    pub const FLAG_MASTER: u8 = 0x01;

    /// The I/M/MS flags byte as on the wire.
    pub fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.init {
            flags |= Self::FLAG_INIT;
        }
        if self.more {
            flags |= Self::FLAG_MORE;
        }
        if self.master {
            flags |= Self::FLAG_MASTER;
        }
        flags
    }
}

impl PacketBody {
    /// The packet type code, 1..=5 (§A.3.1).
    pub fn type_code(&self) -> u8 {
        match self {
            PacketBody::Hello(_) => packet_type::HELLO,
            PacketBody::DbDescription(_) => packet_type::DB_DESCRIPTION,
            PacketBody::LsRequest(_) => packet_type::LS_REQUEST,
            PacketBody::LsUpdate(_) => packet_type::LS_UPDATE,
            PacketBody::LsAck(_) => packet_type::LS_ACK,
        }
    }

    /// Stable snake_case name, for logs and per-type counters.
    pub fn name(&self) -> &'static str {
        type_name(self.type_code()).unwrap_or("unknown")
    }

    /// Appends the body's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            PacketBody::Hello(h) => {
                out.put_slice(&h.network_mask.octets());
                out.put_u16(h.hello_interval);
                out.put_u8(h.options.0);
                out.put_u8(h.priority);
                out.put_u32(h.dead_interval);
                out.put_slice(&h.dr.octets());
                out.put_slice(&h.bdr.octets());
                for n in &h.neighbors {
                    out.put_slice(&n.octets());
                }
            }
            PacketBody::DbDescription(dd) => {
                out.put_u16(dd.mtu);
                out.put_u8(dd.options.0);
                out.put_u8(dd.flags());
                out.put_u32(dd.seq);
                for h in &dd.headers {
                    h.encode(out);
                }
            }
            PacketBody::LsRequest(keys) => {
                for k in keys {
                    // The LS type is a 32-bit field in requests (§A.3.4).
                    out.put_u32(u32::from(k.ls_type));
                    out.put_slice(&k.ls_id.octets());
                    out.put_slice(&k.adv_router.octets());
                }
            }
            PacketBody::LsUpdate(lsas) => {
                out.put_u32(u32::try_from(lsas.len()).unwrap_or(u32::MAX));
                for lsa in lsas {
                    lsa.encode(out);
                }
            }
            PacketBody::LsAck(headers) => {
                for h in headers {
                    h.encode(out);
                }
            }
        }
    }

    /// Decodes a body of packet type `type_code` from exactly the bytes between the header
    /// and the OSPF length. Bytes left over after the last whole entry are an error: the
    /// length field and the contents disagree.
    pub fn decode(type_code: u8, body: &[u8]) -> Result<PacketBody, DecodeError> {
        let mut r = Reader::new(body);
        let decoded = match type_code {
            packet_type::HELLO => {
                let fixed = (|| {
                    Some(Hello {
                        network_mask: r.ipv4()?,
                        hello_interval: r.u16()?,
                        options: Options(r.u8()?),
                        priority: r.u8()?,
                        dead_interval: r.u32()?,
                        dr: r.ipv4()?,
                        bdr: r.ipv4()?,
                        neighbors: Vec::new(),
                    })
                })();
                let mut hello = fixed.ok_or(DecodeError::BadLength)?;
                if !r.remaining().is_multiple_of(4) {
                    return Err(DecodeError::BadLength);
                }
                hello.neighbors.reserve(r.remaining() / 4);
                while let Some(n) = r.ipv4() {
                    hello.neighbors.push(n);
                }
                PacketBody::Hello(hello)
            }
            packet_type::DB_DESCRIPTION => {
                let fixed = (|| Some((r.u16()?, r.u8()?, r.u8()?, r.u32()?)))();
                let (mtu, options, flags, seq) = fixed.ok_or(DecodeError::BadLength)?;
                let headers = decode_lsa_headers(&mut r)?;
                PacketBody::DbDescription(DbDescription {
                    mtu,
                    options: Options(options),
                    init: flags & DbDescription::FLAG_INIT != 0,
                    more: flags & DbDescription::FLAG_MORE != 0,
                    master: flags & DbDescription::FLAG_MASTER != 0,
                    seq,
                    headers,
                })
            }
            packet_type::LS_REQUEST => {
                if !r.remaining().is_multiple_of(LSR_ENTRY_LEN) {
                    return Err(DecodeError::BadLength);
                }
                let mut keys = Vec::with_capacity(r.remaining() / LSR_ENTRY_LEN);
                while r.remaining() > 0 {
                    let entry = (|| Some((r.u32()?, r.ipv4()?, r.ipv4()?)))();
                    let (ls_type, ls_id, adv_router) = entry.ok_or(DecodeError::BadLength)?;
                    let ls_type = u8::try_from(ls_type).map_err(|_| DecodeError::BadLsType)?;
                    keys.push(LsaKey {
                        ls_type,
                        ls_id,
                        adv_router,
                    });
                }
                PacketBody::LsRequest(keys)
            }
            packet_type::LS_UPDATE => {
                let count = r.u32().ok_or(DecodeError::BadLength)?;
                // Each LSA is at least a header long: bound the allocation by the bytes.
                let cap = usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .min(r.remaining() / LSA_HEADER_LEN);
                let mut lsas = Vec::with_capacity(cap);
                for _ in 0..count {
                    let rest = r.take(r.remaining()).unwrap_or_default();
                    if rest.is_empty() {
                        // Fewer LSAs than announced.
                        return Err(DecodeError::BadLength);
                    }
                    let (lsa, used) = Lsa::decode(rest)?;
                    // Put back what the LSA did not use.
                    r = Reader::new(rest.get(used..).unwrap_or_default());
                    lsas.push(lsa);
                }
                PacketBody::LsUpdate(lsas)
            }
            packet_type::LS_ACK => PacketBody::LsAck(decode_lsa_headers(&mut r)?),
            other => return Err(DecodeError::UnknownPacketType(other)),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::BadLength);
        }
        Ok(decoded)
    }
}

/// The name of a packet type code, if it is one of the five of §A.3.1.
pub fn type_name(type_code: u8) -> Option<&'static str> {
    match type_code {
        packet_type::HELLO => Some("hello"),
        packet_type::DB_DESCRIPTION => Some("db_description"),
        packet_type::LS_REQUEST => Some("ls_request"),
        packet_type::LS_UPDATE => Some("ls_update"),
        packet_type::LS_ACK => Some("ls_ack"),
        _ => None,
    }
}

/// Decodes the rest of `r` as a list of 20-byte LSA headers (DD and LS Ack bodies).
fn decode_lsa_headers(r: &mut Reader<'_>) -> Result<Vec<LsaHeader>, DecodeError> {
    if !r.remaining().is_multiple_of(LSA_HEADER_LEN) {
        return Err(DecodeError::BadLength);
    }
    let mut headers = Vec::with_capacity(r.remaining() / LSA_HEADER_LEN);
    while let Some(bytes) = r.take(LSA_HEADER_LEN) {
        headers.push(LsaHeader::decode(bytes)?);
    }
    Ok(headers)
}
