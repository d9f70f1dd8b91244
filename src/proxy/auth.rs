//! Server side of PostgreSQL password authentication, SCRAM-SHA-256 (RFC 5802, RFC 7677) and
//! MD5, as pure code without I/O. SCRAM flow (PostgreSQL docs, "SASL Authentication"): offer
//! `SCRAM-SHA-256` in `AuthenticationSASL`; `SASLInitialResponse` data →
//! [`ScramServer::client_first`] → `AuthenticationSASLContinue`; `SASLResponse` data →
//! [`ScramServer::client_final`] → `AuthenticationSASLFinal`, then `AuthenticationOk`.
//! On any error send an `ErrorResponse` (SQLSTATE 28P01) and close the connection.

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

pub use crate::scram_verifier::{is_md5_hash, ScramVerifier};

/// PostgreSQL's defaults: iteration count, salt length, raw server-nonce length.
const DEFAULT_ITERATIONS: u32 = 4096;
const DEFAULT_SALT_LEN: usize = 16;
const SERVER_NONCE_LEN: usize = 18;

/// Why an authentication exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// malformed client message (names what was wrong)
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// client asked for channel binding (p=...) which we do not offer without TLS
    #[error("channel binding not supported")]
    ChannelBindingUnsupported,
    /// nonce in client-final does not match
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// proof did not verify (wrong password)
    #[error("password authentication failed")]
    WrongPassword,
    /// a step was called out of order
    #[error("SCRAM exchange out of order")]
    OutOfOrder,
}

impl ScramVerifier {
    /// Derive from a plaintext password, a salt and an iteration count (0 is treated as 1).
    ///
    /// SASLprep is not applied. PostgreSQL (and libpq) apply SASLprep and fall back to the raw
    /// bytes when it fails; for plain ASCII passwords both are identical, but a non-ASCII
    /// password that SASLprep would alter will not match clients that normalize it.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        // RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i)
        // Both log in as the user wherever this verifier is used: wiped when dropped.
        let salted = Zeroizing::new(hi(password.as_bytes(), salt, iterations));
        // ClientKey := HMAC(SaltedPassword, "Client Key"); StoredKey := H(ClientKey)
        let client_key = Zeroizing::new(hmac(&salted[..], &[b"Client Key"]));
        let stored_key: [u8; 32] = Sha256::digest(*client_key).into();
        // ServerKey := HMAC(SaltedPassword, "Server Key")
        let server_key = hmac(&salted[..], &[b"Server Key"]);
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Same as [`from_password`](Self::from_password) with a random 16-byte salt and 4096
    /// iterations (PostgreSQL's defaults).
    pub fn generate(password: &str) -> Self {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::fill(&mut salt[..]);
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A verifier for a user we do not know, so that the exchange looks like a real one and
    /// fails only at the proof (as PostgreSQL's mock authentication does): the salt is derived
    /// from the user name and a per-process secret, so repeated attempts see the same salt and
    /// cannot tell a missing user by a changing one. No key is derived from a password (no
    /// 4096 HMAC rounds on the async workers per bogus login); the random keys match no proof.
    pub fn mock(user_name: &str) -> Self {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(rand::random);
        let digest = Sha256::new()
            .chain_update(secret)
            .chain_update(user_name.as_bytes())
            .finalize();
        Self {
            salt: digest[..DEFAULT_SALT_LEN].to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

/// A client's SCRAM ClientKey (RFC 5802 §3: HMAC(SaltedPassword, "Client Key")), recovered
/// from its proof. With the verifier it suffices to log in to any server that stores the same
/// verifier (same salt and iteration count): what PgBouncer does for `auth_query` users. It is
/// as good as the password for those servers, so it lives in memory only and is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey(pub(super) [u8; 32]);

impl Drop for ClientKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKey(<hidden>)")
    }
}

/// Exchange state (RFC 5802 §5: client-first, server-first, client-final, server-final).
enum State {
    AwaitingClientFirst {
        server_nonce: String,
    },
    AwaitingClientFinal {
        /// base64 of the gs2 header, which the client must echo as `c=` (§5.1).
        cbind: String,
        client_first_bare: String,
        server_first: String,
        /// client nonce + server nonce.
        nonce: String,
    },
    Done,
}

/// Server side of one SCRAM-SHA-256 exchange. Any error ends the exchange: later calls return
/// [`AuthError::OutOfOrder`].
pub struct ScramServer {
    verifier: ScramVerifier,
    state: State,
    /// Set once the client's proof verified.
    client_key: Option<ClientKey>,
    /// On TLS: the `tls-server-end-point` data that SCRAM-SHA-256-PLUS binds to.
    channel_binding: Option<Vec<u8>>,
}

/// The mechanism with channel binding (RFC 5802 §6, RFC 7677).
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The mechanism without.
pub const SCRAM: &str = "SCRAM-SHA-256";
/// The only channel-binding type PostgreSQL (and pgcast) supports (RFC 5929 §4).
const END_POINT_FLAG: &str = "p=tls-server-end-point";

impl ScramServer {
    /// `server_nonce`: random printable characters (ASCII 0x21..=0x7E except `,`) chosen by the
    /// caller; tests pass a fixed one. Use [`with_random_nonce`](Self::with_random_nonce) otherwise.
    pub fn new(verifier: ScramVerifier, server_nonce: String) -> Self {
        Self {
            verifier,
            state: State::AwaitingClientFirst { server_nonce },
            client_key: None,
            channel_binding: None,
        }
    }

    /// Offers SCRAM-SHA-256-PLUS too, bound to this TLS connection's end-point data.
    pub fn with_channel_binding(mut self, data: Option<Vec<u8>>) -> Self {
        self.channel_binding = data;
        self
    }

    /// The AuthenticationSASL body: the mechanisms offered, each NUL-terminated, then a NUL.
    pub fn mechanisms(&self) -> &'static [u8] {
        if self.channel_binding.is_some() {
            b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
        } else {
            b"SCRAM-SHA-256\0\0"
        }
    }

    /// [`client_first`](Self::client_first) for the mechanism the client chose. With PLUS the
    /// gs2 header must be `p=tls-server-end-point` and `c=` must carry the end-point data; a
    /// client saying `y` (it could bind but believes we cannot) while PLUS was offered is
    /// refused: someone removed PLUS from our offer on the way (RFC 5802 §6).
    pub fn client_first_for(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let plus = match mechanism {
            SCRAM => false,
            SCRAM_PLUS if self.channel_binding.is_some() => true,
            _ => return Err(AuthError::Malformed("unsupported SASL mechanism")),
        };
        let flag = std::str::from_utf8(data)
            .ok()
            .and_then(|m| m.split_once(','))
            .map_or("", |(f, _)| f);
        match (plus, flag) {
            (true, END_POINT_FLAG) | (false, "n") => {}
            (false, "y") if self.channel_binding.is_none() => {}
            (false, "y") => {
                return Err(AuthError::Malformed(
                    "channel binding negotiation error: the client was told it is not offered",
                ))
            }
            (true, _) => return Err(AuthError::ChannelBindingUnsupported),
            (false, f) if f.starts_with("p=") => {
                return Err(AuthError::Malformed(
                    "channel binding requested without PLUS",
                ))
            }
            _ => {}
        }
        self.client_first_inner(data, plus)
    }

    /// Convenience: random 18-byte nonce, base64-encoded.
    pub fn with_random_nonce(verifier: ScramVerifier) -> Self {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::fill(&mut raw[..]);
        Self::new(verifier, B64.encode(raw))
    }

    /// Input: the data of `SASLInitialResponse` (client-first-message, e.g. `n,,n=,r=abc`).
    ///
    /// Accepts gs2 headers `n,,` and `y,,` (no channel binding; `y` is fine because we never
    /// advertise `SCRAM-SHA-256-PLUS`) and rejects `p=...` with
    /// [`AuthError::ChannelBindingUnsupported`]. The username (`n=`) is ignored, as PostgreSQL
    /// does (it uses the startup-packet user). Output: the server-first-message to send in
    /// `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.client_first_inner(data, false)
    }

    fn client_first_inner(&mut self, data: &[u8], plus: bool) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFirst { server_nonce } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| AuthError::Malformed("not UTF-8"))?;

        // RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let no_gs2 = || AuthError::Malformed("missing gs2 header");
        let (flag, rest) = msg.split_once(',').ok_or_else(no_gs2)?;
        match flag {
            "n" | "y" if !plus => {}
            END_POINT_FLAG if plus => {}
            f if f.starts_with("p=") => return Err(AuthError::ChannelBindingUnsupported),
            _ => return Err(AuthError::Malformed("invalid channel-binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or_else(no_gs2)?;
        if !authzid.is_empty() {
            // PostgreSQL does not support authorization identities either.
            return Err(AuthError::Malformed("authorization identity not supported"));
        }

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        if bare.starts_with("m=") {
            return Err(AuthError::Malformed("mandatory extension not supported"));
        }
        attr(attrs.next(), "n=", "missing username attribute")?;
        let client_nonce = attr(attrs.next(), "r=", "missing nonce attribute")?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
            return Err(AuthError::Malformed("invalid client nonce"));
        }
        // Optional extensions after the nonce are ignored (§5.1).

        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let out = server_first.clone().into_bytes();
        // c= is the gs2 header, followed with PLUS by the channel-binding data (§7).
        let mut cbind = format!("{flag},,").into_bytes();
        if plus {
            cbind.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        }
        self.state = State::AwaitingClientFinal {
            cbind: B64.encode(cbind),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(out)
    }

    /// Input: the data of `SASLResponse` (client-final-message). Verifies that the
    /// channel-binding attribute `c=` echoes the gs2 header, that the nonce matches, and the
    /// ClientProof (compared in constant time). Output: the server-final-message (`v=...`) to
    /// send in `AuthenticationSASLFinal`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFinal {
            cbind,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder);
        };
        let msg = std::str::from_utf8(data).map_err(|_| AuthError::Malformed("not UTF-8"))?;

        // RFC 5802 §7: client-final-message = client-final-message-without-proof "," proof,
        // where the proof is always the last attribute.
        let (without_proof, proof_b64) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Malformed("missing proof attribute"))?;
        let mut attrs = without_proof.split(',');
        if attr(attrs.next(), "c=", "missing channel-binding attribute")? != cbind {
            return Err(AuthError::Malformed("channel-binding attribute mismatch"));
        }
        if attr(attrs.next(), "r=", "missing nonce attribute")? != nonce {
            return Err(AuthError::NonceMismatch);
        }
        let proof: [u8; 32] = B64
            .decode(proof_b64)
            .map_err(|_| AuthError::Malformed("invalid base64 in proof"))?
            .try_into()
            .map_err(|_| AuthError::Malformed("proof has wrong length"))?;

        // RFC 5802 §3:
        //   AuthMessage     := client-first-message-bare + "," + server-first-message + ","
        //                      + client-final-message-without-proof
        //   ClientSignature := HMAC(StoredKey, AuthMessage)
        //   ClientKey       := ClientProof XOR ClientSignature; the server checks H(ClientKey)
        //                      against StoredKey.
        //   ServerSignature := HMAC(ServerKey, AuthMessage)
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let auth_message = [auth_message.as_bytes()];
        let v = &self.verifier;
        let client_signature = hmac(&v.stored_key, &auth_message);
        let mut client_key = Zeroizing::new(proof);
        xor_into(&mut client_key, &client_signature);
        let candidate: [u8; 32] = Sha256::digest(*client_key).into();
        if !ct_eq(&candidate, &v.stored_key) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&v.server_key, &auth_message);
        self.client_key = Some(ClientKey(*client_key));
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// The ClientKey the client proved it holds, after [`client_final`](Self::client_final)
    /// succeeded: with it pgcast can log in to backends that hold the same verifier without
    /// knowing the password (`scram_keys.rs`).
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.client_key.as_ref()
    }
}

/// PostgreSQL's MD5 scheme: `"md5" + hex(md5(hex(md5(password || user)) || salt))`. This is what
/// a client sends in `PasswordMessage` after `AuthenticationMD5Password` with `salt`.
pub fn md5_client_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let stored = format!("md5{}", hex(&Md5::digest(format!("{password}{user}"))));
    md5_response_from_hash(&stored, salt)
}

/// The same response from the stored hash `"md5" + hex(md5(password || user))` (what
/// `pg_authid` holds for an MD5 role): the scheme only ever needs that hash, so a hash in the
/// configuration serves both to check clients and to log in to backends.
pub fn md5_response_from_hash(stored: &str, salt: [u8; 4]) -> String {
    let mut inner = stored
        .strip_prefix("md5")
        .unwrap_or(stored)
        .as_bytes()
        .to_vec();
    inner.extend_from_slice(&salt);
    format!("md5{}", hex(&Md5::digest(inner)))
}

/// Verify a client's MD5 `PasswordMessage` against a stored hash, in constant time.
pub fn verify_md5_hash(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    ct_eq(md5_response_from_hash(stored, salt).as_bytes(), response)
}

/// Verify a client's MD5 `PasswordMessage` (NUL terminator already stripped) in constant time.
pub fn verify_md5(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = md5_client_response(user, password, salt);
    ct_eq(expected.as_bytes(), response)
}

/// The value of attribute `a` if it starts with `prefix` (e.g. `"r="`).
fn attr<'a>(a: Option<&'a str>, prefix: &str, what: &'static str) -> Result<&'a str, AuthError> {
    a.and_then(|a| a.strip_prefix(prefix))
        .ok_or(AuthError::Malformed(what))
}

/// HMAC-SHA-256 over the concatenation of `parts`.
pub(super) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC hashes over-long keys and pads short ones, so every key length is valid.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// RFC 5802 §2.2: Hi(str, salt, i) = U1 XOR U2 XOR ... XOR Ui, where U1 = HMAC(str, salt ||
/// INT(1)) and Uk = HMAC(str, Uk-1). This is PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = HmacSha256::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut u: [u8; 32] = prf
        .clone()
        .chain_update(salt)
        .chain_update(1u32.to_be_bytes())
        .finalize()
        .into_bytes()
        .into();
    let mut result = u;
    for _ in 1..iterations {
        u = prf.clone().chain_update(u).finalize().into_bytes().into();
        xor_into(&mut result, &u);
    }
    u.zeroize();
    result
}

pub(super) fn xor_into(acc: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// Constant-time equality (time depends only on the lengths).
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// RFC 5802 §7: printable = %x21-2B / %x2D-7E (visible ASCII except ',').
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    // RFC 7677 §3 test vector.
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn rfc_server() -> ScramServer {
        let v = ScramVerifier::from_password("pencil", &B64.decode(SALT).unwrap(), 4096);
        ScramServer::new(v, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned())
    }

    /// Feed `msg` as client-final to the RFC server after its client-first succeeded.
    fn rfc_final(msg: &str) -> Result<Vec<u8>, AuthError> {
        let mut server = rfc_server();
        server.client_first(CLIENT_FIRST).unwrap();
        server.client_final(msg.as_bytes())
    }

    /// Full exchange with postgres-protocol's client: the server's verdict, and on success
    /// whether the client accepted our server-final-message.
    fn exchange(stored: &str, given: &str, cb: ChannelBinding) -> Result<bool, AuthError> {
        let mut server = ScramServer::with_random_nonce(ScramVerifier::generate(stored));
        let mut client = ScramSha256::new(given.as_bytes(), cb);
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).unwrap();
        let server_final = server.client_final(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    #[test]
    fn mock_verifier_keeps_its_salt_per_user_and_accepts_no_password() {
        let a = ScramVerifier::mock("nobody");
        let b = ScramVerifier::mock("nobody");
        assert_eq!(
            a.salt, b.salt,
            "a missing user must not be told by a changing salt"
        );
        assert_ne!(a.salt, ScramVerifier::mock("somebody").salt);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        for given in ["", "nobody", "app-secret"] {
            let mut server = ScramServer::with_random_nonce(ScramVerifier::mock("nobody"));
            let mut client = ScramSha256::new(given.as_bytes(), ChannelBinding::unsupported());
            let server_first = server.client_first(client.message()).unwrap();
            client.update(&server_first).unwrap();
            let res = server.client_final(client.message());
            assert_eq!(res, Err(AuthError::WrongPassword), "{given:?}");
        }
    }

    #[test]
    fn full_exchange_with_postgres_protocol_client() {
        // ChannelBinding::unsupported() sends "n,,", unrequested() sends "y,,".
        assert_eq!(
            exchange("s3cret!", "s3cret!", ChannelBinding::unsupported()),
            Ok(true)
        );
        assert_eq!(
            exchange("pw", "pw", ChannelBinding::unrequested()),
            Ok(true)
        );
        let res = exchange("s3cret!", "wrong", ChannelBinding::unsupported());
        assert_eq!(res, Err(AuthError::WrongPassword));
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut server = rfc_server();
        let server_first = server.client_first(CLIENT_FIRST).unwrap();
        let expected = format!("r={NONCE},s={SALT},i=4096");
        assert_eq!(String::from_utf8(server_first).unwrap(), expected);
        let client_final = format!("c=biws,r={NONCE},p={PROOF}");
        let server_final = server.client_final(client_final.as_bytes()).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        // Recompute the RFC's ClientProof from the password with our own Hi()/HMAC.
        let salted = hi(b"pencil", &B64.decode(SALT).unwrap(), 4096);
        let mut proof = hmac(&salted, &[b"Client Key"]);
        let stored: [u8; 32] = Sha256::digest(proof).into();
        let auth_message = format!("n=user,r={},{expected},c=biws,r={NONCE}", &NONCE[..20]);
        xor_into(&mut proof, &hmac(&stored, &[auth_message.as_bytes()]));
        assert_eq!(B64.encode(proof), PROOF);

        // One flipped proof bit fails.
        let bad = format!("c=biws,r={NONCE},p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(rfc_final(&bad), Err(AuthError::WrongPassword));
    }

    #[test]
    fn stored_string_round_trip() {
        let v = ScramVerifier::from_password("pencil", b"saltsalt", 4096);
        let s = v.to_stored_string();
        assert!(s.starts_with("SCRAM-SHA-256$4096:c2FsdHNhbHQ=$"));
        assert_eq!(ScramVerifier::parse(&s), Some(v.clone()));
        assert!(!format!("{v:?}").contains(&B64.encode(v.stored_key)));

        let pg = postgres_protocol::password::scram_sha_256(b"pencil");
        let parsed = ScramVerifier::parse(&pg).unwrap();
        assert_eq!(parsed.to_stored_string(), pg);
        let (salt, iter) = (&parsed.salt, parsed.iterations);
        assert_eq!(ScramVerifier::from_password("pencil", salt, iter), parsed);
        assert_ne!(ScramVerifier::from_password("pencil!", salt, iter), parsed);
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
        ] {
            assert_eq!(ScramVerifier::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_client_first_and_channel_binding() {
        for bad in [
            &b""[..],
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,x=abc",
            b"x,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,",
            b"\xff\xfe",
        ] {
            let err = rfc_server().client_first(bad).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{bad:?}: {err:?}");
        }
        let res = rfc_server().client_first(b"p=tls-server-end-point,,n=,r=abc");
        assert_eq!(res, Err(AuthError::ChannelBindingUnsupported));
    }

    #[test]
    fn malformed_client_final() {
        for bad in [
            String::new(),
            format!("c=biws,r={NONCE}"),
            format!("c=biws,r={NONCE},p=!!notbase64"),
            format!("c=biws,r={NONCE},p=AAAA"),
            format!("c=eSws,r={NONCE},p={PROOF}"),
            format!("r={NONCE},p={PROOF}"),
            format!("c=biws,p={PROOF}"),
        ] {
            let res = rfc_final(&bad);
            assert!(
                matches!(res, Err(AuthError::Malformed(_))),
                "{bad}: {res:?}"
            );
        }
        // Nonce that does not extend the client nonce, or lacks the server part.
        for r in [format!("x{}", &NONCE[1..]), NONCE[..20].to_owned()] {
            let res = rfc_final(&format!("c=biws,r={r},p={PROOF}"));
            assert_eq!(res, Err(AuthError::NonceMismatch), "{r}");
        }
    }

    #[test]
    fn out_of_order() {
        let mut server = rfc_server();
        let res = server.client_final(b"c=biws,r=x,p=AAAA");
        assert_eq!(res, Err(AuthError::OutOfOrder));
        // The exchange is over after an error.
        assert_eq!(
            server.client_first(CLIENT_FIRST),
            Err(AuthError::OutOfOrder)
        );
        let mut server = rfc_server();
        server.client_first(CLIENT_FIRST).unwrap();
        assert_eq!(
            server.client_first(CLIENT_FIRST),
            Err(AuthError::OutOfOrder)
        );
    }

    #[test]
    fn md5_matches_postgres_protocol() {
        let salt = [0x01, 0x02, 0xab, 0xff];
        let expected = md5_hash(b"alice", b"hunter2", salt);
        assert_eq!(md5_client_response("alice", "hunter2", salt), expected);
        assert!(verify_md5("alice", "hunter2", salt, expected.as_bytes()));
        assert!(!verify_md5("alice", "hunter3", salt, expected.as_bytes()));
        assert!(!verify_md5("bob", "hunter2", salt, expected.as_bytes()));
        assert!(!verify_md5("alice", "hunter2", [0; 4], expected.as_bytes()));
        assert!(!verify_md5("alice", "hunter2", salt, b""));

        // From the stored hash alone (as pg_authid holds it), the same answers.
        let stored = postgres_protocol::password::md5(b"hunter2", "alice");
        assert!(is_md5_hash(&stored), "{stored}");
        assert_eq!(md5_response_from_hash(&stored, salt), expected);
        assert!(verify_md5_hash(&stored, salt, expected.as_bytes()));
        assert!(!verify_md5_hash(&stored, [0; 4], expected.as_bytes()));
        for bad in [
            "",
            "md5",
            "md5abc",
            &stored.to_uppercase(),
            &stored[3..],
            "md5 0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_md5_hash(bad), "{bad}");
        }
    }

    #[test]
    fn the_client_key_is_known_only_after_a_good_proof() {
        let verifier = ScramVerifier::generate("pw");
        for (given, proved) in [("pw", true), ("wrong", false)] {
            let mut server = ScramServer::with_random_nonce(verifier.clone());
            let mut client = ScramSha256::new(given.as_bytes(), ChannelBinding::unsupported());
            let server_first = server.client_first(client.message()).unwrap();
            assert!(server.client_key().is_none());
            client.update(&server_first).unwrap();
            let _ = server.client_final(client.message());
            let key = server.client_key();
            assert_eq!(key.is_some(), proved, "{given}");
            if let Some(key) = key {
                // RFC 5802 §3: StoredKey = H(ClientKey).
                let stored: [u8; 32] = Sha256::digest(key.0).into();
                assert_eq!(&stored, verifier.stored_key());
                assert_eq!(format!("{key:?}"), "ClientKey(<hidden>)");
            }
        }
    }
}
