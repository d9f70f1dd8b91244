//! OSPFv2 packet encoding/decoding with authentication (RFC 2328 §D, RFC 5709).
//!
//! * AuType 0 (null) and 1 (simple password): the packet checksum is the RFC 1071 checksum
//!   of the whole OSPF packet with the 64-bit authentication field excluded (§D.4.1, §D.4.2).
//! * AuType 2 (cryptographic): the checksum is not computed; the authentication field carries
//!   a key id, the digest length and a non-decreasing sequence number, and the digest is
//!   appended after the packet, outside the OSPF length (§D.4.3). Keyed MD5 (§D.4.3) and
//!   HMAC-SHA-256 (RFC 5709 §3.3) are supported; they are told apart by the configured key id.

use std::fmt;

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use super::checksum::{ones_complement_add, ones_complement_finish};
use super::lsa::{LsaError, Reader};
use super::packet::{type_name, Packet, PacketBody, HEADER_LEN, OSPF_VERSION};

/// AuType values (RFC 2328 §A.3.1, App. D).
pub mod au_type {
    pub const NULL: u16 = 0;
    pub const SIMPLE: u16 = 1;
    pub const CRYPTOGRAPHIC: u16 = 2;
}

/// Offsets inside the 24-byte OSPF header (§A.3.1).
const LENGTH_OFFSET: usize = 2;
const CHECKSUM_OFFSET: usize = 12;
const AUTH_OFFSET: usize = 16;
const AUTH_LEN: usize = 8;

/// Digest sizes of the two cryptographic algorithms.
pub const MD5_DIGEST_LEN: usize = 16;
pub const HMAC_SHA256_DIGEST_LEN: usize = 32;
/// RFC 5709 §3.3: Apad is 0x878FE1F3 repeated to the hash length; it stands in for the
/// digest while the HMAC is computed.
const APAD_WORD: [u8; 4] = [0x87, 0x8f, 0xe1, 0xf3];
/// SHA-256 block size (RFC 2104 "B"): HMAC pads the prepared key to this length.
const SHA256_BLOCK_LEN: usize = 64;

/// One authentication key of an interface (RFC 2328 §C.3 "Authentication key").
///
/// `Debug` prints key ids but never key material, so configs can be logged.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthKey {
    Null,
    /// The 64-bit simple password (§D.3), zero-padded.
    Simple([u8; 8]),
    /// Keyed MD5 (§D.4.3); keys longer than 16 bytes are truncated to 16, shorter ones
    /// zero-padded, as the algorithm defines a 16-byte key.
    Md5 {
        key_id: u8,
        key: Vec<u8>,
    },
    /// HMAC-SHA-256 (RFC 5709).
    HmacSha256 {
        key_id: u8,
        key: Vec<u8>,
        keying: HmacKeying,
    },
}

/// How an HMAC-SHA-256 key becomes the HMAC key. The two differ only for keys of 33 to 64
/// bytes; a router using the other one never forms an adjacency with such a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HmacKeying {
    /// RFC 5709 §3.3: a key longer than the hash (32 bytes) is hashed first (FRR, Cisco).
    #[default]
    Rfc5709,
    /// Plain RFC 2104: only a key longer than the block (64 bytes) is hashed (BIRD 2).
    Rfc2104,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthKey::Null => f.write_str("Null"),
            AuthKey::Simple(_) => f.write_str("Simple(<redacted>)"),
            AuthKey::Md5 { key_id, .. } => write!(f, "Md5 {{ key_id: {key_id}, key: <redacted> }}"),
            AuthKey::HmacSha256 { key_id, .. } => {
                write!(f, "HmacSha256 {{ key_id: {key_id}, key: <redacted> }}")
            }
        }
    }
}

impl AuthKey {
    /// A simple password key: the first 8 bytes of `password`, zero-padded (§D.3).
    pub fn simple(password: &[u8]) -> AuthKey {
        let mut pw = [0u8; 8];
        for (dst, src) in pw.iter_mut().zip(password) {
            *dst = *src;
        }
        AuthKey::Simple(pw)
    }

    /// The AuType this key is used with.
    pub fn au_type(&self) -> u16 {
        match self {
            AuthKey::Null => au_type::NULL,
            AuthKey::Simple(_) => au_type::SIMPLE,
            AuthKey::Md5 { .. } | AuthKey::HmacSha256 { .. } => au_type::CRYPTOGRAPHIC,
        }
    }

    /// The key id of a cryptographic key.
    pub fn key_id(&self) -> Option<u8> {
        match self {
            AuthKey::Md5 { key_id, .. } | AuthKey::HmacSha256 { key_id, .. } => Some(*key_id),
            AuthKey::Null | AuthKey::Simple(_) => None,
        }
    }

    /// Bytes appended after the packet (the digest); 0 for null and simple.
    pub fn digest_len(&self) -> usize {
        match self {
            AuthKey::Md5 { .. } => MD5_DIGEST_LEN,
            AuthKey::HmacSha256 { .. } => HMAC_SHA256_DIGEST_LEN,
            AuthKey::Null | AuthKey::Simple(_) => 0,
        }
    }
}

/// What the interface accepts: the AuType and every key id that may verify (key rollover).
///
/// An empty `accept` list means "accept what we send" (`[send]`), so that the common
/// single-key configuration needs no duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub send: AuthKey,
    pub accept: Vec<AuthKey>,
}

impl AuthConfig {
    /// Send with `key` and accept only `key`.
    pub fn single(key: AuthKey) -> AuthConfig {
        AuthConfig {
            send: key.clone(),
            accept: vec![key],
        }
    }

    /// No authentication (AuType 0).
    pub fn null() -> AuthConfig {
        AuthConfig::single(AuthKey::Null)
    }

    /// The keys packets are checked against.
    pub fn accepted(&self) -> &[AuthKey] {
        if self.accept.is_empty() {
            std::slice::from_ref(&self.send)
        } else {
            &self.accept
        }
    }
}

/// Keyed MD5 of RFC 2328 §D.4.3: MD5(packet || key padded with zeros to 16 bytes).
pub fn md5_digest(key: &[u8], packet: &[u8]) -> [u8; MD5_DIGEST_LEN] {
    let mut padded = [0u8; MD5_DIGEST_LEN];
    for (dst, src) in padded.iter_mut().zip(key) {
        *dst = *src;
    }
    let mut md5 = Md5::new();
    md5.update(packet);
    md5.update(padded);
    md5.finalize().into()
}

/// HMAC-SHA-256 with the key preparation of RFC 5709 §3.3 over the concatenation of
/// `parts`: a key longer than the hash length (32) is first hashed, a shorter one is
/// zero-padded to 32 bytes. (This differs from RFC 2104 only for keys of 33..=64 bytes,
/// which RFC 2104 would use as they are.)
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; HMAC_SHA256_DIGEST_LEN] {
    let mut ko = [0u8; HMAC_SHA256_DIGEST_LEN];
    if key.len() > HMAC_SHA256_DIGEST_LEN {
        ko = Sha256::digest(key).into();
    } else {
        for (dst, src) in ko.iter_mut().zip(key) {
            *dst = *src;
        }
    }
    // HMAC then pads Ko with zeros to the block size (RFC 2104 step 1); passing the full
    // block-sized key makes that explicit and avoids a fallible constructor.
    let mut block_key = [0u8; SHA256_BLOCK_LEN];
    for (dst, src) in block_key.iter_mut().zip(ko) {
        *dst = src;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block_key.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA-256 with RFC 2104's own key handling (a key longer than the 64-byte block is
/// hashed, any other is used as it is), as BIRD 2 computes OSPF's RFC 5709 digest.
pub fn hmac_sha256_rfc2104(key: &[u8], parts: &[&[u8]]) -> [u8; HMAC_SHA256_DIGEST_LEN] {
    let mut block_key = [0u8; SHA256_BLOCK_LEN];
    if key.len() > SHA256_BLOCK_LEN {
        let hashed: [u8; HMAC_SHA256_DIGEST_LEN] = Sha256::digest(key).into();
        block_key[..HMAC_SHA256_DIGEST_LEN].copy_from_slice(&hashed);
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block_key.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Apad of RFC 5709 §3.3: 0x878FE1F3 repeated to 32 bytes.
fn apad() -> [u8; HMAC_SHA256_DIGEST_LEN] {
    let mut out = [0u8; HMAC_SHA256_DIGEST_LEN];
    for chunk in out.chunks_exact_mut(APAD_WORD.len()) {
        chunk.copy_from_slice(&APAD_WORD);
    }
    out
}

/// Digest of `packet` (the OSPF packet, auth field filled in, without digest) under `key`.
/// Empty for non-cryptographic keys.
fn crypto_digest(key: &AuthKey, packet: &[u8]) -> Vec<u8> {
    match key {
        AuthKey::Md5 { key, .. } => md5_digest(key, packet).to_vec(),
        AuthKey::HmacSha256 {
            key,
            keying: HmacKeying::Rfc5709,
            ..
        } => hmac_sha256(key, &[packet, &apad()]).to_vec(),
        AuthKey::HmacSha256 {
            key,
            keying: HmacKeying::Rfc2104,
            ..
        } => hmac_sha256_rfc2104(key, &[packet, &apad()]).to_vec(),
        AuthKey::Null | AuthKey::Simple(_) => Vec::new(),
    }
}

/// Packet checksum for AuType 0/1: RFC 1071 over the packet with the 8-byte authentication
/// field excluded (§D.4.1). The field starts at an even offset, so summing the two parts
/// separately equals summing the packet with the field zeroed.
fn packet_checksum(packet: &[u8]) -> u16 {
    let before = packet.get(..AUTH_OFFSET).unwrap_or_default();
    let after = packet.get(AUTH_OFFSET + AUTH_LEN..).unwrap_or_default();
    ones_complement_finish(ones_complement_add(ones_complement_add(0, before), after))
}

/// Constant-time comparison, so that digest checks leak no timing about matching prefixes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Encode header + body + authentication (RFC 2328 App. D.3 / D.4.3, RFC 5709 §3):
/// null/simple: packet checksum over the packet excluding the 8-byte auth field;
/// cryptographic: checksum 0, auth field = 0, key id, auth data len, crypto seq; digest appended
/// after the packet (not counted in the OSPF length field). Appends to `out`.
pub fn encode_packet(packet: &Packet, auth: &AuthKey, crypto_seq: u32, out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(OSPF_VERSION);
    out.put_u8(packet.body.type_code());
    out.put_u16(0); // length, patched below
    out.put_slice(&packet.router_id.octets());
    out.put_slice(&packet.area_id.octets());
    out.put_u16(0); // checksum, patched below for AuType 0/1
    out.put_u16(auth.au_type());
    match auth {
        AuthKey::Md5 { key_id, .. } | AuthKey::HmacSha256 { key_id, .. } => {
            out.put_u16(0);
            out.put_u8(*key_id);
            out.put_u8(auth.digest_len() as u8);
            out.put_u32(crypto_seq);
        }
        // The password is written after the checksum, which excludes it.
        AuthKey::Null | AuthKey::Simple(_) => out.put_u64(0),
    }
    packet.body.encode(out);

    let len = out.len() - start;
    debug_assert!(len <= usize::from(u16::MAX), "OSPF packet too long");
    let len16 = u16::try_from(len).unwrap_or(u16::MAX);
    let pkt = &mut out[start..];
    pkt[LENGTH_OFFSET..LENGTH_OFFSET + 2].copy_from_slice(&len16.to_be_bytes());
    match auth {
        AuthKey::Null => {
            let sum = packet_checksum(pkt);
            pkt[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
        }
        AuthKey::Simple(pw) => {
            let sum = packet_checksum(pkt);
            pkt[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
            pkt[AUTH_OFFSET..AUTH_OFFSET + AUTH_LEN].copy_from_slice(pw);
        }
        AuthKey::Md5 { .. } | AuthKey::HmacSha256 { .. } => {
            let digest = crypto_digest(auth, pkt);
            out.put_slice(&digest);
        }
    }
}

/// A packet that decoded and authenticated. `crypto_seq`/`key_id` are set for AuType 2; the
/// sequence number must still be checked against the neighbour's last one (§D.5.2), which is
/// per-neighbour state kept by the FSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub packet: Packet,
    pub crypto_seq: Option<u32>,
    pub key_id: Option<u8>,
}

/// Decode an OSPF packet (the IP payload, IP header already stripped) and authenticate it
/// against `auth.accept`. Trailing bytes after the OSPF length that are not the digest are ignored
/// (RFC allows IP padding). The crypto sequence number replay check is NOT done here (it is
/// per neighbour state; the FSM does it).
pub fn decode_packet(bytes: &[u8], auth: &AuthConfig) -> Result<Received, DecodeError> {
    let mut r = Reader::new(bytes);
    let header = (|| {
        Some((
            r.u8()?,
            r.u8()?,
            r.u16()?,
            r.ipv4()?,
            r.ipv4()?,
            r.u16()?,
            r.u16()?,
            r.take(AUTH_LEN)?,
        ))
    })();
    let (version, type_code, length, router_id, area_id, checksum, autype, auth_field) =
        header.ok_or(DecodeError::Truncated)?;
    if version != OSPF_VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    if type_name(type_code).is_none() {
        return Err(DecodeError::UnknownPacketType(type_code));
    }
    let length = usize::from(length);
    if length < HEADER_LEN {
        return Err(DecodeError::BadLength);
    }
    let packet = bytes.get(..length).ok_or(DecodeError::Truncated)?;
    let (crypto_seq, key_id) = authenticate(bytes, packet, checksum, autype, auth_field, auth)?;
    let body_bytes = packet.get(HEADER_LEN..).unwrap_or_default();
    let body = PacketBody::decode(type_code, body_bytes)?;
    Ok(Received {
        packet: Packet {
            router_id,
            area_id,
            body,
        },
        crypto_seq,
        key_id,
    })
}

/// RFC 2328 §8.2 / App. D: checks AuType against the configuration, then the checksum or
/// the password or the digest. Returns (crypto sequence, key id) for AuType 2.
fn authenticate(
    bytes: &[u8],
    packet: &[u8],
    checksum: u16,
    autype: u16,
    auth_field: &[u8],
    auth: &AuthConfig,
) -> Result<(Option<u32>, Option<u8>), DecodeError> {
    let accepted = auth.accepted();
    if !accepted.iter().any(|k| k.au_type() == autype) {
        return Err(DecodeError::AuthTypeMismatch(autype));
    }
    match autype {
        au_type::NULL | au_type::SIMPLE => {
            if packet_checksum(packet) != 0 {
                return Err(DecodeError::BadChecksum { stored: checksum });
            }
            if autype == au_type::SIMPLE {
                let ok = accepted.iter().any(|k| match k {
                    AuthKey::Simple(pw) => ct_eq(pw, auth_field),
                    _ => false,
                });
                if !ok {
                    return Err(DecodeError::AuthFailed);
                }
            }
            Ok((None, None))
        }
        // Any other AuType was rejected above (no key has it).
        _ => {
            let mut r = Reader::new(auth_field);
            let fields = (|| Some((r.u16()?, r.u8()?, r.u8()?, r.u32()?)))();
            let (_zero, key_id, digest_len_field, seq) = fields.ok_or(DecodeError::Truncated)?;
            let candidates: Vec<&AuthKey> = accepted
                .iter()
                .filter(|k| k.key_id() == Some(key_id))
                .collect();
            if candidates.is_empty() {
                return Err(DecodeError::UnknownKeyId(key_id));
            }
            let digest_len = usize::from(digest_len_field);
            if !candidates.iter().any(|k| k.digest_len() == digest_len) {
                return Err(DecodeError::BadDigestLength(digest_len_field));
            }
            let end = packet.len().checked_add(digest_len);
            let digest = end
                .and_then(|end| bytes.get(packet.len()..end))
                .ok_or(DecodeError::Truncated)?;
            let verified = candidates
                .iter()
                .filter(|k| k.digest_len() == digest_len)
                .any(|k| ct_eq(&crypto_digest(k, packet), digest));
            if !verified {
                return Err(DecodeError::AuthFailed);
            }
            Ok((Some(seq), Some(key_id)))
        }
    }
}

/// Why a received OSPF packet was dropped by the codec.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, the OSPF length or the header plus digest.
    #[error("packet truncated")]
    Truncated,
    #[error("bad OSPF version {0}")]
    BadVersion(u8),
    /// The length field is below the header size or disagrees with the body contents.
    #[error("bad packet length")]
    BadLength,
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// Packet checksum (AuType 0/1) does not verify.
    #[error("bad packet checksum (stored {stored:#06x})")]
    BadChecksum { stored: u16 },
    /// The AuType is not one the interface accepts (§D: must match the configured one).
    #[error("authentication type {0} not accepted")]
    AuthTypeMismatch(u16),
    /// Wrong simple password or digest.
    #[error("authentication failed")]
    AuthFailed,
    /// AuType 2 with a key id that no accepted key has.
    #[error("unknown key id {0}")]
    UnknownKeyId(u8),
    /// AuType 2 whose auth data length fits no algorithm configured for the key id.
    #[error("bad authentication data length {0}")]
    BadDigestLength(u8),
    /// An LS Request entry whose 32-bit LS type does not fit a known type range.
    #[error("bad LS type in LS request")]
    BadLsType,
    #[error(transparent)]
    Lsa(#[from] LsaError),
}

impl DecodeError {
    /// Stable snake_case label for metrics counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::BadLength => "bad_length",
            DecodeError::UnknownPacketType(_) => "unknown_packet_type",
            DecodeError::BadChecksum { .. } => "bad_checksum",
            DecodeError::AuthTypeMismatch(_) => "auth_type_mismatch",
            DecodeError::AuthFailed => "auth_failed",
            DecodeError::UnknownKeyId(_) => "unknown_key_id",
            DecodeError::BadDigestLength(_) => "bad_digest_length",
            DecodeError::BadLsType => "bad_ls_type",
            DecodeError::Lsa(e) => e.reason(),
        }
    }
}
