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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    sslmode: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// How pgcast's connections to a backend (sessions and health checks) use TLS, as libpq's
/// `sslmode` means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, unverified; clear text otherwise.
    Prefer,
    /// TLS or nothing, unverified (encryption against a passive eavesdropper only).
    Require,
    /// TLS, the certificate chain verified against `ca`.
    VerifyCa,
    /// TLS, the chain verified and the certificate naming the backend's `host`.
    VerifyFull,
}

impl SslMode {
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// `[backend_tls]`: the default `sslmode` of every backend and the files verification and a
/// client certificate need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsConfig {
    pub sslmode: SslMode,
    /// PEM: the CA certificates a backend's chain must lead to (verify-ca, verify-full).
    pub ca: Option<PathBuf>,
    /// PEM: a client certificate and its key, offered to backends that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Validator<'_> {
    pub(super) fn sslmode(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        value: &str,
    ) -> Result<SslMode, ConfigError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(self.err(
                    span,
                    key,
                    format!(
                        "unknown sslmode {other:?}; expected \"disable\", \"prefer\", \
                         \"require\", \"verify-ca\" or \"verify-full\""
                    ),
                ))
            }
        })
    }

    pub(super) fn backend_tls(
        &self,
        raw: Option<Spanned<RawBackendTls>>,
    ) -> Result<(std::ops::Range<usize>, BackendTlsConfig), ConfigError> {
        let (span, t) = split(raw);
        let sslmode = match t.sslmode.as_deref() {
            None => SslMode::Disable,
            Some(v) => self.sslmode(span.clone(), "backend_tls.sslmode", v)?,
        };
        let client_cert = match (t.cert, t.key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            _ => {
                return Err(self.err(
                    span,
                    "backend_tls.cert",
                    "a client certificate needs both cert and key",
                ))
            }
        };
        Ok((
            span,
            BackendTlsConfig {
                sslmode,
                ca: t.ca.map(PathBuf::from),
                client_cert,
            },
        ))
    }
}
