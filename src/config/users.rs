//! `[[users]]`: who may log in, how each proves it, and with what pgcast logs in to the
//! backends as that user.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

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
    auth: Option<ClientAuthMethod>,
    backend_password: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub auth: ClientAuthMethod,
    /// Plaintext password: needed for MD5 client auth and to log in to the backends. For
    /// SCRAM the proxy derives (and caches) the verifier from it, off the async workers.
    pub password: Option<String>,
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

impl UserConfig {
    /// The password pgcast uses when it logs in to a backend as this user.
    pub fn backend_password(&self) -> Option<&str> {
        self.backend_password
            .as_deref()
            .or(self.password.as_deref())
    }
}

impl Validator<'_> {
    pub(super) fn users(&self, raw: Vec<Spanned<RawUser>>) -> Result<Vec<UserConfig>, ConfigError> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let u = item.into_inner();
            let key = |k: &str| format!("users[{i}].{k}");
            self.unique_name(&mut names, &u.name, &span, &key("name"), "user")?;
            let auth = u.auth.unwrap_or(ClientAuthMethod::ScramSha256);
            if auth != ClientAuthMethod::Trust && u.password.is_none() {
                return Err(self.err(span, &key("password"), "required unless auth = \"trust\""));
            }
            out.push(UserConfig {
                name: u.name,
                auth,
                password: u.password,
                backend_password: u.backend_password,
            });
        }
        Ok(out)
    }
}
