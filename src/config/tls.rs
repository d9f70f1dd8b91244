//! `[tls]` and each listener's `tls`: TLS towards clients. The certificate and key are files
//! read by the proxy (`proxy::tls`), at start, by `check-config` and at every SIGHUP; here they
//! are only paths.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{split, ConfigError, Validator};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the server certificate first, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Whether a listener offers TLS to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTls {
    /// SSLRequest is answered 'N': clients continue in clear.
    Disable,
    /// TLS for clients that ask for it (SSLRequest, or PostgreSQL 17's direct TLS).
    Allow,
    /// Only TLS: a client that logs in in clear is refused (28000).
    Require,
}

impl Validator<'_> {
    pub(super) fn tls(
        &self,
        raw: Option<Spanned<RawTls>>,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        if raw.is_none() {
            return Ok(None);
        }
        let (span, t) = split(raw);
        let path = |key: &str, value: Option<String>| match value {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
            _ => Err(self.err(span.clone(), key, "required in [tls] (a PEM file)")),
        };
        Ok(Some(TlsConfig {
            cert: path("tls.cert", t.cert)?,
            key: path("tls.key", t.key)?,
        }))
    }

    /// A listener's `tls`: by default `allow` when `[tls]` is configured, else `disable`.
    pub(super) fn listener_tls(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        value: Option<&str>,
        tls_configured: bool,
    ) -> Result<ListenerTls, ConfigError> {
        let mode = match value {
            None if tls_configured => ListenerTls::Allow,
            None | Some("disable") => ListenerTls::Disable,
            Some("allow") => ListenerTls::Allow,
            Some("require") => ListenerTls::Require,
            Some(other) => {
                return Err(self.err(
                    span,
                    key,
                    format!(
                        "unknown value {other:?}; expected \"disable\", \"allow\" or \"require\""
                    ),
                ))
            }
        };
        if mode != ListenerTls::Disable && !tls_configured {
            return Err(self.err(
                span,
                key,
                "TLS needs a certificate: add [tls] with cert and key",
            ));
        }
        Ok(mode)
    }
}
