//! PostgreSQL wire protocol v3 framing and the few message bodies the proxy must read or write.
//!
//! Pure code: `decode_*` functions take bytes, `encode_*`/`write_*` append to a `BytesMut`.
//! Messages the proxy only relays are kept as their raw bytes (header included), so relaying
//! costs no re-encoding.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 196_608;
/// Magic "versions" of the special startup-phase requests.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// One framed message: type byte plus body; `raw` is the whole message including the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub raw: Bytes,
}

impl Message {
    /// The body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        self.raw.get(5..).unwrap_or(&[])
    }
}

/// The most [`decode_message`] reserves ahead for the rest of a message not yet received.
const RESERVE_AHEAD: usize = 256 * 1024;

/// Splits one complete tagged message off the front of `buf`, or returns None if more bytes
/// are needed. A length below 4 or above `max` is an error: the stream is unusable after it.
pub fn decode_message(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(DecodeError::BadLength(len as i64));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(DecodeError::TooLong { len: total, max });
    }
    if buf.len() < total {
        // Room for what is coming, but only what a few reads fill: a 5-byte header claiming
        // max bytes must not make every connection reserve max bytes at once.
        buf.reserve((total - buf.len()).min(RESERVE_AHEAD));
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Message { tag: raw[0], raw }))
}

/// What a client sends first, before any tagged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Startup { params: Vec<(String, String)> },
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
}

/// Splits one untagged startup-phase packet off `buf`.
pub fn decode_startup(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<StartupPacket>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // PostgreSQL rejects startup packets shorter than 8 or longer than 10000 bytes.
    if !(8..=10_000).contains(&len) || len as usize > max {
        return Err(DecodeError::BadLength(len as i64));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let mut pkt = buf.split_to(len as usize).freeze();
    pkt.advance(4);
    let code = pkt.get_u32();
    match code {
        SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
        CANCEL_REQUEST_CODE => {
            if pkt.remaining() < 8 {
                return Err(DecodeError::Malformed("CancelRequest"));
            }
            let pid = pkt.get_i32();
            let secret = pkt.get_i32();
            Ok(Some(StartupPacket::Cancel { pid, secret }))
        }
        PROTOCOL_3_0 => {
            let mut params = Vec::new();
            let mut fields = CStrings::new(&pkt);
            loop {
                let name = fields
                    .next_str()
                    .ok_or(DecodeError::Malformed("startup packet"))?;
                if name.is_empty() {
                    break;
                }
                let value = fields
                    .next_str()
                    .ok_or(DecodeError::Malformed("startup packet"))?;
                params.push((name.to_string(), value.to_string()));
            }
            Ok(Some(StartupPacket::Startup { params }))
        }
        other => Err(DecodeError::UnsupportedProtocol {
            major: (other >> 16) as u16,
            minor: (other & 0xffff) as u16,
        }),
    }
}

/// Iterates over NUL-terminated UTF-8 strings in a body.
pub struct CStrings<'a> {
    rest: &'a [u8],
}

impl<'a> CStrings<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        CStrings { rest: body }
    }

    pub fn next_str(&mut self) -> Option<&'a str> {
        let nul = self.rest.iter().position(|b| *b == 0)?;
        let (s, tail) = self.rest.split_at(nul);
        self.rest = tail.get(1..).unwrap_or(&[]);
        std::str::from_utf8(s).ok()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The next NUL-terminated string in any client encoding: bytes that are not UTF-8
    /// (a LATIN1 client, say) are replaced for inspection; the raw message is what is relayed.
    pub fn next_lossy(&mut self) -> Option<Cow<'a, str>> {
        let nul = self.rest.iter().position(|b| *b == 0)?;
        let (s, tail) = self.rest.split_at(nul);
        self.rest = tail.get(1..).unwrap_or(&[]);
        // Valid UTF-8 (every query of a UTF8 client) is checked by the faster validator and
        // borrowed; only invalid bytes take the lossy path.
        Some(match std::str::from_utf8(s) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(s),
        })
    }
}

/// Parse ('P'): statement name and query text.
pub fn parse_message_fields(body: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), DecodeError> {
    let mut f = CStrings::new(body);
    let name = f.next_lossy().ok_or(DecodeError::Malformed("Parse"))?;
    let query = f.next_lossy().ok_or(DecodeError::Malformed("Parse"))?;
    Ok((name, query))
}

/// Bind ('B'): portal name and statement name.
pub fn bind_message_fields(body: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), DecodeError> {
    let mut f = CStrings::new(body);
    let portal = f.next_lossy().ok_or(DecodeError::Malformed("Bind"))?;
    let stmt = f.next_lossy().ok_or(DecodeError::Malformed("Bind"))?;
    Ok((portal, stmt))
}

/// Describe ('D') and Close ('C'): kind byte ('S' or 'P') and name.
pub fn target_fields(body: &[u8]) -> Result<(u8, Cow<'_, str>), DecodeError> {
    let kind = *body
        .first()
        .ok_or(DecodeError::Malformed("Describe/Close"))?;
    if kind != b'S' && kind != b'P' {
        return Err(DecodeError::Malformed("Describe/Close kind"));
    }
    let name = CStrings::new(&body[1..])
        .next_lossy()
        .ok_or(DecodeError::Malformed("Describe/Close"))?;
    Ok((kind, name))
}

/// Query ('Q'): the SQL text.
pub fn query_text(body: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    CStrings::new(body)
        .next_lossy()
        .ok_or(DecodeError::Malformed("Query"))
}

/// Fields of an ErrorResponse or NoticeResponse we care about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn decode_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let mut f = CStrings::new(tail);
        let Some(value) = f.next_str() else { break };
        match kind {
            b'V' => out.severity = value.to_string(),
            b'S' if out.severity.is_empty() => out.severity = value.to_string(),
            b'C' => out.code = value.to_string(),
            b'M' => out.message = value.to_string(),
            _ => {}
        }
        rest = f.rest();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Encoders

/// Appends a tagged message whose body is written by `body`.
pub fn write_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn write_error(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    write_message(out, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity);
        b.put_u8(b'V');
        put_cstr(b, severity);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, message);
        b.put_u8(0);
    });
}

pub fn write_auth_request(out: &mut BytesMut, code: i32, data: &[u8]) {
    write_message(out, b'R', |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

pub fn write_ready_for_query(out: &mut BytesMut, status: u8) {
    write_message(out, b'Z', |b| b.put_u8(status));
}

pub fn write_backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    write_message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// StartupMessage (untagged) with the given parameters.
pub fn write_startup(out: &mut BytesMut, params: &[(String, String)]) {
    let start = out.len();
    out.put_i32(0);
    out.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn write_cancel_request(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_i32(16);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_i32(pid);
    out.put_i32(secret);
}

pub fn write_query(out: &mut BytesMut, sql: &str) {
    write_message(out, b'Q', |b| put_cstr(b, sql));
}

pub fn write_password(out: &mut BytesMut, data: &[u8]) {
    write_message(out, b'p', |b| b.put_slice(data));
}

pub fn write_sasl_initial(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    write_message(out, b'p', |b| {
        put_cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn write_terminate(out: &mut BytesMut) {
    write_message(out, b'X', |_| {});
}

/// Parses the SASLInitialResponse body: mechanism name and initial data.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let mut f = CStrings::new(body);
    let mech = f
        .next_str()
        .ok_or(DecodeError::Malformed("SASLInitialResponse"))?;
    let rest = f.rest();
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Malformed("SASLInitialResponse"))?;
    let len = i32::from_be_bytes(len_bytes);
    let data = if len < 0 {
        &[][..]
    } else {
        rest.get(4..4 + len as usize)
            .ok_or(DecodeError::Malformed("SASLInitialResponse"))?
    };
    Ok((mech, data))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_header_claiming_a_huge_message_reserves_little() {
        let mut buf = bytes::BytesMut::from(&b"Q\x03\xff\xff\xff"[..]);
        assert_eq!(super::decode_message(&mut buf, 64 << 20), Ok(None));
        assert!(
            buf.capacity() <= super::RESERVE_AHEAD + 64,
            "reserved {} bytes for 5 received",
            buf.capacity()
        );
    }

    use super::*;

    #[test]
    fn message_framing_waits_for_whole_message() {
        let mut out = BytesMut::new();
        write_query(&mut out, "SELECT 1");
        let whole = out.clone();
        let mut partial = BytesMut::from(&whole[..7]);
        assert_eq!(decode_message(&mut partial, 1024).unwrap(), None);
        partial.extend_from_slice(&whole[7..]);
        let m = decode_message(&mut partial, 1024).unwrap().unwrap();
        assert_eq!(m.tag, b'Q');
        assert_eq!(query_text(m.body()).unwrap(), "SELECT 1");
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_and_negative_lengths_are_errors() {
        let mut b = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_message(&mut b, 1024),
            Err(DecodeError::TooLong { .. })
        ));
        let mut b = BytesMut::from(&[b'Q', 0, 0, 0, 2][..]);
        assert_eq!(decode_message(&mut b, 1024), Err(DecodeError::BadLength(2)));
    }

    #[test]
    fn startup_round_trip() {
        let mut out = BytesMut::new();
        let params = vec![
            ("user".to_string(), "app".to_string()),
            ("database".to_string(), "db".to_string()),
        ];
        write_startup(&mut out, &params);
        let got = decode_startup(&mut out, 10_000).unwrap().unwrap();
        assert_eq!(got, StartupPacket::Startup { params });
    }

    #[test]
    fn special_requests_and_bad_versions() {
        let mut b = BytesMut::new();
        write_cancel_request(&mut b, 42, -7);
        assert_eq!(
            decode_startup(&mut b, 10_000).unwrap(),
            Some(StartupPacket::Cancel {
                pid: 42,
                secret: -7
            })
        );
        let mut b = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
        assert_eq!(
            decode_startup(&mut b, 10_000).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let mut b = BytesMut::from(&[0, 0, 0, 9, 0, 2, 0, 0, 0][..]);
        assert_eq!(
            decode_startup(&mut b, 10_000),
            Err(DecodeError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        let mut b = BytesMut::from(&[0, 0, 0, 3][..]);
        assert_eq!(
            decode_startup(&mut b, 10_000),
            Err(DecodeError::BadLength(3))
        );
        // Startup parameters without a terminating NUL.
        let mut b = BytesMut::from(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'][..]);
        assert_eq!(
            decode_startup(&mut b, 10_000),
            Err(DecodeError::Malformed("startup packet"))
        );
    }

    #[test]
    fn error_fields_round_trip() {
        let mut out = BytesMut::new();
        write_error(
            &mut out,
            "FATAL",
            "28P01",
            "password authentication failed for user \"x\"",
        );
        let m = decode_message(&mut out, 1024).unwrap().unwrap();
        let f = decode_error_fields(m.body());
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "FATAL");
        assert!(f.message.starts_with("password authentication failed"));
    }

    #[test]
    fn extended_protocol_fields() {
        let (n, q) = parse_message_fields(b"s1\0SELECT $1\0\0\0").unwrap();
        assert_eq!((n.as_ref(), q.as_ref()), ("s1", "SELECT $1"));
        let (p, st) = bind_message_fields(b"p\0s1\0\0\0").unwrap();
        assert_eq!((p.as_ref(), st.as_ref()), ("p", "s1"));
        let (k, n) = target_fields(b"Ss1\0").unwrap();
        assert_eq!((k, n.as_ref()), (b'S', "s1"));
        assert!(target_fields(b"X\0").is_err());
        assert!(parse_message_fields(b"no-nul").is_err());
        // A LATIN1 client's text is inspected lossily, not rejected.
        assert_eq!(query_text(b"SELECT '\xe9'\0").unwrap(), "SELECT '\u{fffd}'");
    }

    #[test]
    fn sasl_initial_response() {
        let mut out = BytesMut::new();
        write_sasl_initial(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let m = decode_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(
            decode_sasl_initial(m.body()).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n=,r=abc"[..])
        );
        assert!(decode_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x50ab").is_err());
    }

    /// Decoders see arbitrary client bytes: none of them may panic, whatever arrives.
    #[test]
    fn decoders_never_panic_on_random_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards plausible headers so deeper paths run too.
            if len > 8 && next() % 2 == 0 {
                bytes[0..4].copy_from_slice(&(len as i32).to_be_bytes());
                bytes[4..8].copy_from_slice(
                    &[PROTOCOL_3_0, CANCEL_REQUEST_CODE, SSL_REQUEST_CODE][(next() % 3) as usize]
                        .to_be_bytes(),
                );
            }
            let _ = decode_startup(&mut BytesMut::from(&bytes[..]), 10_000);
            let _ = decode_message(&mut BytesMut::from(&bytes[..]), 1 << 20);
            let _ = decode_error_fields(&bytes);
            let _ = decode_sasl_initial(&bytes);
            let _ = parse_message_fields(&bytes);
            let _ = bind_message_fields(&bytes);
            let _ = target_fields(&bytes);
            let _ = query_text(&bytes);
        }
    }
}
