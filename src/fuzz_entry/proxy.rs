//! Fuzz bodies of the proxy's decoders: the start-up packet, tagged messages and their bodies,
//! SCRAM-SHA-256 and MD5 authentication, and the statement classifier.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{BufMut, BytesMut};

use super::mode;
use crate::proxy::auth::{md5_client_response, verify_md5, AuthError, ScramServer, ScramVerifier};
use crate::proxy::classify::{
    classify as classify_sql, literal_free_key, may_change_functions, FunctionInfo, FunctionPolicy,
    StatementClass,
};
use crate::proxy::message::{self as wire, decode_message, decode_startup, Message, StartupPacket};
use crate::proxy::scram_keys::{KeyClient, KeyLoginError, ScramKeys};

/// The start-up packet limit the proxy reads with (`startup::read_startup`).
const STARTUP_MAX: usize = 10_000;
/// A message limit as large as a fuzz input can be, and one small enough that inputs reach the
/// "too long" refusal.
const MESSAGE_MAX_LARGE: usize = 1 << 20;
const MESSAGE_MAX_SMALL: usize = 64;

/// Start-up phase: the bytes a client sends before its first tagged message, possibly several
/// packets in one read (an SSLRequest, then the StartupMessage). Every packet that decodes must
/// encode back to bytes that decode to the same packet.
pub fn startup(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_startup(&mut buf, STARTUP_MAX) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a decoded packet consumes its bytes");
                let mut again = encode_startup(&packet);
                let decoded = decode_startup(&mut again, STARTUP_MAX);
                assert_eq!(decoded, Ok(Some(packet)), "start-up packet round trip");
                assert!(again.is_empty(), "a re-encoded packet is consumed whole");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting for more consumes nothing");
                return;
            }
            Err(_) => return,
        }
    }
}

fn encode_startup(packet: &StartupPacket) -> BytesMut {
    let mut out = BytesMut::new();
    match packet {
        StartupPacket::Startup { params } => wire::write_startup(&mut out, params),
        StartupPacket::Cancel { pid, secret } => {
            wire::write_cancel_request(&mut out, *pid, *secret)
        }
        StartupPacket::SslRequest => {
            out.put_i32(8);
            out.put_u32(wire::SSL_REQUEST_CODE);
        }
        StartupPacket::GssEncRequest => {
            out.put_i32(8);
            out.put_u32(wire::GSSENC_REQUEST_CODE);
        }
    }
    out
}

/// Tagged messages, from a client or a backend: framing, then every body decoder on every
/// body (whatever the tag, so that one corpus entry covers them all). Mode bit 0 picks a
/// small message limit.
pub fn message(data: &[u8]) {
    let (mode, data) = mode(data);
    let max = if mode & 1 == 0 {
        MESSAGE_MAX_LARGE
    } else {
        MESSAGE_MAX_SMALL
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_message(&mut buf, max) {
            Ok(Some(m)) => {
                assert!(
                    m.raw.len() >= 5 && m.raw.len() <= max,
                    "frame within limits"
                );
                assert_eq!(
                    buf.len() + m.raw.len(),
                    before,
                    "a frame consumes its bytes"
                );
                message_body(&m);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting for more consumes nothing");
                return;
            }
            Err(_) => return,
        }
    }
}

fn message_body(m: &Message) {
    let body = m.body();
    let mut out = BytesMut::new();
    wire::write_message(&mut out, m.tag, |b| b.put_slice(body));
    assert_eq!(&out[..], &m.raw[..], "framing round trip");

    if let Ok((name, query)) = wire::parse_message_fields(body) {
        let again = reframe(b'P', |b| {
            wire::put_cstr(b, &name);
            wire::put_cstr(b, &query);
        });
        assert_eq!(
            wire::parse_message_fields(again.body()),
            Ok((name, query)),
            "Parse round trip"
        );
    }
    let _ = wire::bind_message_fields(body);
    if let Ok((kind, _)) = wire::target_fields(body) {
        assert!(
            kind == b'S' || kind == b'P',
            "Describe/Close kind is checked"
        );
    }
    if let Ok(sql) = wire::query_text(body) {
        let again = reframe(b'Q', |b| wire::put_cstr(b, &sql));
        assert_eq!(wire::query_text(again.body()), Ok(sql), "Query round trip");
    }
    let fields = wire::decode_error_fields(body);
    let mut out = BytesMut::new();
    wire::write_error(&mut out, &fields.severity, &fields.code, &fields.message);
    let again = reframe_raw(out);
    assert_eq!(
        wire::decode_error_fields(again.body()),
        fields,
        "ErrorResponse round trip"
    );
    if let Ok((mechanism, initial)) = wire::decode_sasl_initial(body) {
        let mut out = BytesMut::new();
        wire::write_sasl_initial(&mut out, mechanism, initial);
        let again = reframe_raw(out);
        assert_eq!(
            wire::decode_sasl_initial(again.body()),
            Ok((mechanism, initial)),
            "SASLInitialResponse round trip"
        );
    }
}

/// A message written by `body`, decoded back into a frame.
fn reframe(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Message {
    let mut out = BytesMut::new();
    wire::write_message(&mut out, tag, body);
    reframe_raw(out)
}

fn reframe_raw(mut out: BytesMut) -> Message {
    match decode_message(&mut out, usize::MAX) {
        Ok(Some(m)) if out.is_empty() => m,
        other => panic!("an encoded message frames as one message: {other:?}"),
    }
}

/// RFC 7677 §3's example exchange: the verifier of password "pencil" with its salt and
/// iteration count, the server nonce, and the server-final-message of the one correct proof.
const RFC7677_SALT: [u8; 16] = [
    0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
];
const RFC7677_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC7677_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
const MD5_USER: &str = "user";
const MD5_PASSWORD: &str = "pencil";
const MD5_SALT: [u8; 4] = [1, 2, 3, 4];

fn rfc7677_verifier() -> &'static ScramVerifier {
    // 4096 PBKDF2 rounds once per process, not once per input.
    static VERIFIER: OnceLock<ScramVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| ScramVerifier::from_password("pencil", &RFC7677_SALT, 4096))
}

/// The keys RFC 7677's client proves (its ClientKey, recovered by the server from the proof).
fn rfc7677_keys() -> &'static std::sync::Arc<ScramKeys> {
    static KEYS: OnceLock<std::sync::Arc<ScramKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut server =
            ScramServer::new(rfc7677_verifier().clone(), RFC7677_SERVER_NONCE.to_owned());
        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        server
            .client_first(format!("n,,n=user,r={client_nonce}").as_bytes())
            .expect("RFC 7677 client-first");
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let last = format!("c=biws,r={client_nonce}{RFC7677_SERVER_NONCE},p={proof}");
        server
            .client_final(last.as_bytes())
            .expect("RFC 7677 proof");
        let key = server.client_key().expect("a proven key").clone();
        ScramKeys::new(key, rfc7677_verifier().clone())
    })
}

/// The backend's side of a login with a client's SCRAM keys (`scram_keys.rs`): the input up
/// to its first newline as the server-first-message, the rest as the server-final-message.
/// Nothing may panic, and a finished exchange takes nothing more.
fn sasl_backend(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (first, last) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut client = KeyClient::new(std::sync::Arc::clone(rfc7677_keys()));
    if client.update(first).is_ok() {
        assert!(client.message().starts_with(b"c=biws,r="), "client-final");
        let _ = client.finish(last);
    }
    assert_eq!(client.finish(last), Err(KeyLoginError::OutOfOrder));
}

/// SASL authentication as the proxy runs it for a client: the input is a SASLInitialResponse
/// body (mechanism, length, client-first-message) followed by the client-final-message. The
/// server is RFC 7677's, so the only exchange that may succeed is RFC 7677's own: success with
/// any other server-final-message, or a second answer from a finished exchange, would be an
/// authentication bypass. The bytes after the initial response also go to the MD5 check, and
/// all of them to the backend side of a login with SCRAM keys.
pub fn sasl(data: &[u8]) {
    sasl_backend(data);
    let md5_ok = verify_md5(MD5_USER, MD5_PASSWORD, MD5_SALT, data);
    let md5_expected = md5_client_response(MD5_USER, MD5_PASSWORD, MD5_SALT);
    assert_eq!(
        md5_ok,
        data == md5_expected.as_bytes(),
        "MD5 accepts exactly the response"
    );

    let Ok((mechanism, first)) = wire::decode_sasl_initial(data) else {
        return;
    };
    // Mechanism, its NUL and the length field, then the client-first-message.
    let first_end = mechanism.len() + 1 + 4 + first.len();
    let Some(last) = data.get(first_end..) else {
        panic!("decode_sasl_initial returned data beyond its input");
    };
    let mut server = ScramServer::new(rfc7677_verifier().clone(), RFC7677_SERVER_NONCE.to_owned());
    if let Ok(server_first) = server.client_first(first) {
        let text = String::from_utf8(server_first).expect("server-first is text");
        assert!(text.starts_with("r="), "server-first starts with the nonce");
        assert!(text.contains(RFC7677_SERVER_NONCE), "our nonce is in it");
        if let Ok(server_final) = server.client_final(last) {
            assert_eq!(
                server_final, RFC7677_SERVER_FINAL,
                "only RFC 7677's exchange authenticates"
            );
        }
    }
    assert_eq!(
        server.client_final(last),
        Err(AuthError::OutOfOrder),
        "a finished exchange answers nothing more"
    );
}

/// The two function policies the classifier target compares: one loaded (a small catalog
/// with volatile, stable and user functions) and the unloaded default, where every call may
/// write.
fn policies() -> &'static (FunctionPolicy, FunctionPolicy) {
    static POLICIES: OnceLock<(FunctionPolicy, FunctionPolicy)> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let info = |may_write, only_pg_catalog| FunctionInfo {
            may_write,
            only_pg_catalog,
        };
        let known: HashMap<String, FunctionInfo> = [
            ("now", info(false, true)),
            ("lower", info(false, true)),
            ("count", info(false, true)),
            ("nextval", info(true, true)),
            ("random", info(true, true)),
            ("set_config", info(true, true)),
            ("f", info(false, false)),
            ("g", info(true, false)),
        ]
        .into_iter()
        .map(|(name, info)| (name.to_owned(), info))
        .collect();
        let loaded = FunctionPolicy::new(Some(known), ["random".to_owned()], ["f".to_owned()]);
        (loaded, FunctionPolicy::default())
    })
}

/// The statement classifier on any text, decoded as the proxy decodes a Query (lossy UTF-8).
/// It must be deterministic, and the unloaded policy the most cautious: a statement it sends
/// to a replica goes there with the loaded catalog too.
pub fn classify(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    let (loaded, unloaded) = policies();
    let with_catalog = classify_sql(&sql, loaded);
    assert_eq!(
        classify_sql(&sql, loaded),
        with_catalog,
        "classification is deterministic"
    );
    let without_catalog = classify_sql(&sql, unloaded);
    assert_eq!(
        with_catalog.len(),
        without_catalog.len(),
        "the policy does not change how many statements there are"
    );
    for (with, without) in with_catalog.iter().zip(&without_catalog) {
        if *without == StatementClass::Read {
            assert_eq!(*with, StatementClass::Read, "unloaded is the most cautious");
        }
    }
    let _ = may_change_functions(&sql);
    if let Some(key) = literal_free_key(&sql) {
        assert!(
            key.starts_with('\0'),
            "literal-free keys never collide with texts"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sasl target's "only RFC 7677's exchange authenticates" holds for the RFC's own
    /// exchange, so the check guards a path that inputs do reach.
    #[test]
    fn rfc7677_exchange_succeeds_with_the_expected_server_final() {
        let mut server =
            ScramServer::new(rfc7677_verifier().clone(), RFC7677_SERVER_NONCE.to_owned());
        server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .expect("RFC 7677 client-first");
        let server_final = server.client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(server_final.as_deref(), Ok(RFC7677_SERVER_FINAL));
    }
}
