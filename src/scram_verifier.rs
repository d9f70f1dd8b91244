//! What PostgreSQL stores instead of a password (`pg_authid.rolpassword`): a SCRAM-SHA-256
//! verifier (RFC 5802 §3, RFC 7677) or an MD5 hash. Their stored forms only, without the
//! exchanges (`proxy::auth`): a leaf, so the configuration can validate a `password_hash`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

const PREFIX: &str = "SCRAM-SHA-256$";

/// What the server stores to verify SCRAM-SHA-256 logins: salt, iteration count, StoredKey,
/// ServerKey (RFC 5802 §3). The password itself cannot be recovered from it.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
    pub(crate) stored_key: [u8; 32],
    pub(crate) server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Parse PostgreSQL's stored form
    /// `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>` (as in `pg_authid`).
    /// Returns `None` if anything is malformed (zero iterations, empty salt, wrong key length).
    pub fn parse(s: &str) -> Option<Self> {
        let (params, keys) = s.strip_prefix(PREFIX)?.split_once('$')?;
        let (iter, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(salt).ok().filter(|s| !s.is_empty())?;
        Some(Self {
            salt,
            iterations,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Render to the stored form accepted by [`parse`](Self::parse).
    pub fn to_stored_string(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl ScramVerifier {
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }
}

/// Whether `s` has the form of a stored MD5 hash: `md5` and 32 lowercase hex digits.
pub fn is_md5_hash(s: &str) -> bool {
    s.strip_prefix("md5").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
