//! Logging in to a backend with SCRAM-SHA-256 without the password, from the ClientKey a
//! client proved when it logged in to pgcast against a configured verifier.
//!
//! RFC 5802 §3: the client's proof is `ClientProof = ClientKey XOR HMAC(StoredKey,
//! AuthMessage)` with `StoredKey = H(ClientKey)`. A server that checked a proof knows the
//! AuthMessage and StoredKey, so it recovers ClientKey (`ScramServer::client_key`). ClientKey
//! alone answers any later exchange whose salt and iteration count are the verifier's: the
//! proof for the backend's AuthMessage is `ClientKey XOR HMAC(StoredKey, AuthMessage')`, and
//! the backend's ServerSignature is checked with our ServerKey. PgBouncer logs in the same way
//! for users whose password it does not know. A backend whose verifier has another salt or
//! iteration count (the password was set again there) derives another ClientKey, which pgcast
//! cannot compute: that is refused with [`KeyLoginError::SaltMismatch`].

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::auth::{ct_eq, hmac, xor_into, ClientKey, ScramVerifier};

/// Raw bytes of the client nonce (base64-encoded on the wire, so printable and without ',').
const NONCE_LEN: usize = 18;

/// Why a login with the keys failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyLoginError {
    #[error(
        "the backend's SCRAM verifier has another salt or iteration count than the configured \
         one (was the password set again there?); configure the backend's \
         pg_authid.rolpassword as this user's password_hash"
    )]
    SaltMismatch,
    #[error("malformed SCRAM message from the backend: {0}")]
    Malformed(&'static str),
    #[error("the backend's SCRAM signature does not match the configured verifier")]
    ServerSignature,
    #[error("the backend refused the SCRAM proof: {0}")]
    Refused(String),
    #[error("SCRAM exchange out of order")]
    OutOfOrder,
}

/// What a client proved when it logged in: its ClientKey and the verifier it matched.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    client_key: ClientKey,
    verifier: ScramVerifier,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(<hidden>)")
    }
}

impl ScramKeys {
    pub fn new(client_key: ClientKey, verifier: ScramVerifier) -> Arc<Self> {
        Arc::new(Self {
            client_key,
            verifier,
        })
    }
}

enum State {
    AwaitingServerFirst,
    AwaitingServerFinal { auth_message: String },
    Done,
}

/// The client side of one SCRAM-SHA-256 exchange with a backend, from [`ScramKeys`]
/// (interface like `postgres_protocol`'s `ScramSha256`: `message`, `update`, `finish`).
pub struct KeyClient {
    keys: Arc<ScramKeys>,
    client_first_bare: String,
    message: Vec<u8>,
    state: State,
}

impl KeyClient {
    pub fn new(keys: Arc<ScramKeys>) -> Self {
        let mut raw = [0u8; NONCE_LEN];
        rand::fill(&mut raw[..]);
        Self::with_nonce(keys, &B64.encode(raw))
    }

    fn with_nonce(keys: Arc<ScramKeys>, nonce: &str) -> Self {
        // The user name is left empty as libpq does: PostgreSQL takes it from the start-up
        // packet. gs2 header "n,,": no channel binding (there is no TLS to bind to).
        let client_first_bare = format!("n=,r={nonce}");
        Self {
            keys,
            message: format!("n,,{client_first_bare}").into_bytes(),
            client_first_bare,
            state: State::AwaitingServerFirst,
        }
    }

    /// The message to send next: client-first, then (after [`update`](Self::update))
    /// client-final.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Takes the server-first-message and prepares the client-final-message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), KeyLoginError> {
        if !matches!(self.state, State::AwaitingServerFirst) {
            return Err(KeyLoginError::OutOfOrder);
        }
        self.state = State::Done;
        let text =
            std::str::from_utf8(server_first).map_err(|_| KeyLoginError::Malformed("not UTF-8"))?;
        // RFC 5802 §7: server-first-message = [reserved-mext ","] nonce "," salt ","
        // iteration-count ["," extensions]
        let mut attrs = text.split(',');
        let nonce = attr(attrs.next(), "r=")?;
        let salt = attr(attrs.next(), "s=")?;
        let iterations = attr(attrs.next(), "i=")?;
        let ours = self.client_first_bare.trim_start_matches("n=,r=");
        if !nonce.starts_with(ours) || nonce.len() == ours.len() {
            return Err(KeyLoginError::Malformed("nonce does not extend ours"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| KeyLoginError::Malformed("salt is not base64"))?;
        let v = &self.keys.verifier;
        if salt != v.salt() || iterations.parse::<u32>().ok() != Some(v.iterations()) {
            return Err(KeyLoginError::SaltMismatch);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
        let mut proof = hmac(v.stored_key(), &[auth_message.as_bytes()]);
        xor_into(&mut proof, &self.keys.client_key.0);
        self.message = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        self.state = State::AwaitingServerFinal { auth_message };
        Ok(())
    }

    /// Checks the server-final-message: the backend proves it holds the same ServerKey.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), KeyLoginError> {
        let State::AwaitingServerFinal { auth_message } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(KeyLoginError::OutOfOrder);
        };
        let text =
            std::str::from_utf8(server_final).map_err(|_| KeyLoginError::Malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(KeyLoginError::Refused(e.to_string()));
        }
        let given = B64
            .decode(attr(text.split(',').next(), "v=")?)
            .map_err(|_| KeyLoginError::Malformed("signature is not base64"))?;
        // ServerSignature = HMAC(ServerKey, AuthMessage)
        let expected = hmac(self.keys.verifier.server_key(), &[auth_message.as_bytes()]);
        if !ct_eq(&expected, &given) {
            return Err(KeyLoginError::ServerSignature);
        }
        Ok(())
    }
}

fn attr<'a>(a: Option<&'a str>, prefix: &str) -> Result<&'a str, KeyLoginError> {
    a.and_then(|a| a.strip_prefix(prefix))
        .ok_or(KeyLoginError::Malformed("missing attribute"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::auth::{AuthError, ScramServer};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// The keys a client with `password` proves against `verifier`, as start-up gets them.
    fn keys_of_a_login(verifier: &ScramVerifier, password: &str) -> Arc<ScramKeys> {
        let mut server = ScramServer::with_random_nonce(verifier.clone());
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = server.client_first(client.message()).expect("client-first");
        client.update(&first).expect("server-first");
        server.client_final(client.message()).expect("proof");
        let key = server.client_key().expect("a proven key").clone();
        ScramKeys::new(key, verifier.clone())
    }

    /// A login with `keys` to a backend that stores `backend`.
    fn login(keys: Arc<ScramKeys>, backend: ScramVerifier) -> Result<(), String> {
        let mut server = ScramServer::with_random_nonce(backend);
        let mut client = KeyClient::new(keys);
        let first = server
            .client_first(client.message())
            .map_err(|e| e.to_string())?;
        client.update(&first).map_err(|e| e.to_string())?;
        let fin = server
            .client_final(client.message())
            .map_err(|e| e.to_string())?;
        client.finish(&fin).map_err(|e| e.to_string())
    }

    #[test]
    fn the_proven_client_key_logs_in_to_a_backend_with_the_same_verifier() {
        let verifier = ScramVerifier::generate("s3cret");
        let keys = keys_of_a_login(&verifier, "s3cret");
        assert_eq!(login(Arc::clone(&keys), verifier.clone()), Ok(()));
        // Again, with fresh nonces: the keys serve every later login.
        assert_eq!(login(Arc::clone(&keys), verifier), Ok(()));
        assert_eq!(format!("{keys:?}"), "ScramKeys(<hidden>)");
    }

    #[test]
    fn another_salt_is_named_and_another_password_is_refused() {
        let verifier = ScramVerifier::generate("s3cret");
        let keys = keys_of_a_login(&verifier, "s3cret");
        // The password was set again on the backend: new salt.
        let reset = ScramVerifier::generate("s3cret");
        assert_eq!(
            login(Arc::clone(&keys), reset),
            Err(KeyLoginError::SaltMismatch.to_string())
        );
        // Same salt and iterations, another password: the backend refuses the proof.
        let other = ScramVerifier::from_password("other", verifier.salt(), verifier.iterations());
        assert_eq!(
            login(keys, other),
            Err(AuthError::WrongPassword.to_string())
        );
    }

    #[test]
    fn a_backend_that_does_not_know_the_server_key_is_caught() {
        let verifier = ScramVerifier::from_password("pw", b"0123456789abcdef", 4096);
        let keys = keys_of_a_login(&verifier, "pw");
        let mut client = KeyClient::with_nonce(keys, "abc");
        let salt = B64.encode(b"0123456789abcdef");
        client
            .update(format!("r=abcdef,s={salt},i=4096").as_bytes())
            .expect("same salt");
        assert!(String::from_utf8_lossy(client.message()).starts_with("c=biws,r=abcdef,p="));
        let forged = format!("v={}", B64.encode([0u8; 32]));
        assert_eq!(
            client.finish(forged.as_bytes()),
            Err(KeyLoginError::ServerSignature)
        );
    }

    #[test]
    fn malformed_server_messages() {
        let verifier = ScramVerifier::from_password("pw", b"salt", 4096);
        let keys = keys_of_a_login(&verifier, "pw");
        let salt = B64.encode(b"salt");
        for bad in [
            String::new(),
            "r=abc,s=c2FsdA==,i=4096".to_string(), // does not extend the nonce
            "r=xyzdef,s=c2FsdA==,i=4096".to_string(),
            "r=abcdef,s=!!,i=4096".to_string(),
            format!("r=abcdef,i=4096,s={salt}"),
        ] {
            let mut client = KeyClient::with_nonce(Arc::clone(&keys), "abc");
            let res = client.update(bad.as_bytes());
            assert!(
                matches!(res, Err(KeyLoginError::Malformed(_))),
                "{bad}: {res:?}"
            );
        }
        let mut client = KeyClient::with_nonce(keys, "abc");
        assert_eq!(client.finish(b"v=x"), Err(KeyLoginError::OutOfOrder));
        let res = client.update(format!("r=abcdef,s={salt},i=4096").as_bytes());
        assert_eq!(res, Err(KeyLoginError::OutOfOrder), "over after an error");
        let mut client = KeyClient::with_nonce(keys_of_a_login(&verifier, "pw"), "abc");
        client
            .update(format!("r=abcdef,s={salt},i=4096").as_bytes())
            .unwrap();
        assert_eq!(
            client.finish(b"e=invalid-proof"),
            Err(KeyLoginError::Refused("invalid-proof".into()))
        );
    }
}
