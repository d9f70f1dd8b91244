//! `[[users]]`: who may log in, how each proves it, and with what pgcast logs in to the
//! backends as that user; `[auth_query]`: where to look up users that are not listed.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};
use crate::scram_verifier::{is_md5_hash, ScramVerifier};

/// How a client proves who it is to pgcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum ClientAuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    name: String,
    password: Option<String>,
    password_hash: Option<Spanned<String>>,
    auth: Option<ClientAuthMethod>,
    backend_password: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthQuery {
    query: Option<String>,
    database: Option<String>,
    ttl_ms: Option<i64>,
}

/// Users not in `[[users]]` are looked up on the primary, as PgBouncer's `auth_query` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthQueryConfig {
    /// SQL with one parameter, `$1`, the user name, returning one row whose first column is
    /// the stored password (`pg_authid.rolpassword`), or no row / NULL: no such user.
    pub query: String,
    /// Run in this database on the primary, as the health user.
    pub database: String,
    /// Answers (found or not) are kept this long.
    pub ttl: Duration,
}

/// A password as PostgreSQL stores it (`pg_authid.rolpassword`), instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    Scram(ScramVerifier),
    /// `md5` + hex(md5(password || user name)).
    Md5(String),
}

impl PasswordHash {
    /// PostgreSQL's stored forms: a SCRAM-SHA-256 verifier or `md5` + 32 hex digits.
    pub fn parse(text: &str) -> Option<PasswordHash> {
        if text.starts_with("SCRAM-SHA-256$") {
            ScramVerifier::parse(text).map(PasswordHash::Scram)
        } else if is_md5_hash(text) {
            Some(PasswordHash::Md5(text.to_string()))
        } else {
            None
        }
    }

    /// How a client is checked against it when no `[[access]]` rule says otherwise.
    pub fn method(&self) -> ClientAuthMethod {
        match self {
            PasswordHash::Scram(_) => ClientAuthMethod::ScramSha256,
            PasswordHash::Md5(_) => ClientAuthMethod::Md5,
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kind only: an MD5 hash logs in as the user as well as the password does.
        f.write_str(match self {
            PasswordHash::Scram(_) => "PasswordHash::Scram(<hidden>)",
            PasswordHash::Md5(_) => "PasswordHash::Md5(<hidden>)",
        })
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub auth: ClientAuthMethod,
    /// Plaintext password: needed for MD5 client auth and to log in to the backends. For
    /// SCRAM the proxy derives (and caches) the verifier from it, off the async workers.
    pub password: Option<String>,
    /// Instead of `password`: the stored hash clients are checked against. pgcast then logs in
    /// to the backends with the client's SCRAM ClientKey or with the MD5 hash itself.
    pub password_hash: Option<PasswordHash>,
    /// Password used towards the backends (defaults to `password`).
    pub backend_password: Option<String>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Drop for UserConfig {
    /// A reload or an auth_query cache entry replaces users: their passwords are wiped.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
        self.backend_password.zeroize();
    }
}

impl UserConfig {
    /// The password pgcast uses when it logs in to a backend as this user.
    pub fn backend_password(&self) -> Option<&str> {
        self.backend_password
            .as_deref()
            .or(self.password.as_deref())
    }
}

impl Validator<'_> {
    pub(super) fn auth_query(
        &self,
        raw: Option<Spanned<RawAuthQuery>>,
        health_database: &str,
    ) -> Result<Option<AuthQueryConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let span = raw.span();
        let a = raw.into_inner();
        let Some(query) = a.query.filter(|q| q.contains("$1")) else {
            return Err(self.err(
                span,
                "auth_query.query",
                "required: SQL taking the user name as $1 and returning its stored password",
            ));
        };
        Ok(Some(AuthQueryConfig {
            query,
            database: a.database.unwrap_or_else(|| health_database.to_string()),
            ttl: self.ms(&span, "auth_query.ttl_ms", a.ttl_ms, 60_000, 0)?,
        }))
    }

    fn password_hash(
        &self,
        raw: &Spanned<String>,
        key: &str,
        auth: ClientAuthMethod,
    ) -> Result<PasswordHash, ConfigError> {
        let text = raw.get_ref();
        let hash = match PasswordHash::parse(text) {
            Some(hash) => hash,
            None if text.starts_with("SCRAM-SHA-256$") => {
                return Err(self.err(
                    raw.span(),
                    key,
                    "not a SCRAM-SHA-256 verifier: expected \
                     SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as in pg_authid",
                ))
            }
            None => {
                return Err(self.err(
                    raw.span(),
                    key,
                    "expected a SCRAM-SHA-256 verifier (SCRAM-SHA-256$...) or an MD5 hash \
                 (md5 and 32 hex digits), as in pg_authid.rolpassword",
                ))
            }
        };
        // PostgreSQL cannot check a SCRAM login against an MD5 hash either; the other way
        // round it uses SCRAM (an md5 method with a SCRAM verifier), and so does pgcast.
        if auth == ClientAuthMethod::ScramSha256 && matches!(hash, PasswordHash::Md5(_)) {
            return Err(self.err(
                raw.span(),
                key,
                "an MD5 hash cannot check SCRAM-SHA-256 logins: set auth = \"md5\" or give \
                 the SCRAM verifier",
            ));
        }
        Ok(hash)
    }

    pub(super) fn users(
        &self,
        raw: Vec<Spanned<RawUser>>,
    ) -> Result<Vec<Arc<UserConfig>>, ConfigError> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let u = item.into_inner();
            let key = |k: &str| format!("users[{i}].{k}");
            self.unique_name(&mut names, &u.name, &span, &key("name"), "user")?;
            let auth = u.auth.unwrap_or(ClientAuthMethod::ScramSha256);
            let password_hash = match &u.password_hash {
                Some(h) if u.password.is_some() => {
                    return Err(self.err(
                        h.span(),
                        &key("password_hash"),
                        "give either password or password_hash, not both",
                    ))
                }
                Some(h) => Some(self.password_hash(h, &key("password_hash"), auth)?),
                None => None,
            };
            if auth != ClientAuthMethod::Trust && u.password.is_none() && password_hash.is_none() {
                return Err(self.err(
                    span,
                    &key("password"),
                    "password or password_hash required unless auth = \"trust\"",
                ));
            }
            out.push(Arc::new(UserConfig {
                name: u.name,
                auth,
                password: u.password,
                password_hash,
                backend_password: u.backend_password,
            }));
        }
        Ok(out)
    }
}
