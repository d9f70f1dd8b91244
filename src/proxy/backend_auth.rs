//! How pgcast answers a backend's authentication requests as the client's user: with a
//! configured password (cleartext, MD5 or SCRAM-SHA-256), with a configured MD5 hash (MD5 only
//! needs the hash), or with the SCRAM ClientKey the client proved at login (`scram_keys.rs`).

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::auth;
use super::backend::LoginParams;
use super::message;
use super::scram_keys::{KeyClient, ScramKeys};
use super::ProxyError;

/// What pgcast proves itself with to a backend as one client's user, for the whole session:
/// connections are opened later too (replicas, after a failover, transaction pooling).
#[derive(Clone, Default)]
pub enum BackendSecret {
    /// Nothing: only a backend that trusts pgcast lets it in.
    #[default]
    None,
    Password(String),
    /// A stored MD5 hash (`md5` + 32 hex digits).
    Md5Hash(String),
    /// The client's proven SCRAM keys (kept in memory only).
    ScramKeys(Arc<ScramKeys>),
}

impl fmt::Debug for BackendSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kind only: every variant's content logs in as the user.
        f.write_str(match self {
            BackendSecret::None => "BackendSecret::None",
            BackendSecret::Password(_) => "BackendSecret::Password(<hidden>)",
            BackendSecret::Md5Hash(_) => "BackendSecret::Md5Hash(<hidden>)",
            BackendSecret::ScramKeys(_) => "BackendSecret::ScramKeys(<hidden>)",
        })
    }
}

/// A SASL exchange in progress.
pub(super) enum Sasl {
    Password(ScramSha256),
    Keys(KeyClient),
}

/// Answers authentication request `code` (AuthenticationXXX, body after the code) into `out`.
/// `Ok(())` with nothing written: nothing to answer (AuthenticationOk, SASLFinal).
pub(super) async fn answer(
    code: i32,
    body: &[u8],
    login: &LoginParams<'_>,
    sasl: &mut Option<Sasl>,
    out: &mut BytesMut,
) -> Result<(), ProxyError> {
    match code {
        // RFC 5802 §5: the server proves itself in server-final; a backend that says Ok
        // without it has not (it may not be the server the password belongs to).
        0 if sasl.is_some() => Err(ProxyError::BackendUnavailable(
            "the backend ended SCRAM without its signature (no SASLFinal)".into(),
        )),
        0 => Ok(()),
        3 => {
            let pw = password(login, "a cleartext password")?;
            message::write_password(out, format!("{pw}\0").as_bytes());
            Ok(())
        }
        5 => md5(body, login, out),
        10 => sasl_start(body, login, sasl, out),
        11 => sasl_continue(body, login, sasl, out).await,
        12 => sasl_final(body, login, sasl),
        other => Err(ProxyError::BackendUnavailable(format!(
            "unsupported backend authentication request {other}"
        ))),
    }
}

fn password<'a>(login: &'a LoginParams<'_>, asked: &str) -> Result<&'a str, ProxyError> {
    match login.secret {
        BackendSecret::Password(pw) => Ok(pw),
        BackendSecret::None => Err(ProxyError::NoBackendPassword),
        BackendSecret::Md5Hash(_) | BackendSecret::ScramKeys(_) => Err(cannot(login, asked)),
    }
}

/// The backend asks for what the configured hash cannot give.
fn cannot(login: &LoginParams<'_>, asked: &str) -> ProxyError {
    let held = match login.secret {
        BackendSecret::Md5Hash(_) => "an MD5 hash",
        _ => "the client's SCRAM keys",
    };
    ProxyError::BackendLogin(format!(
        "backend {} asks user {:?} for {asked}, and pgcast holds only {held}: \
         set the same kind of password on the backend, or give backend_password",
        login.backend, login.user
    ))
}

fn md5(body: &[u8], login: &LoginParams<'_>, out: &mut BytesMut) -> Result<(), ProxyError> {
    let salt: [u8; 4] =
        body.get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(ProxyError::BackendProtocol(
                message::DecodeError::Malformed("MD5 salt"),
            ))?;
    let hash = match login.secret {
        // The MD5 answer only ever needs the stored hash.
        BackendSecret::Md5Hash(stored) => auth::md5_response_from_hash(stored, salt),
        _ => auth::md5_client_response(login.user, password(login, "an MD5 password")?, salt),
    };
    message::write_password(out, format!("{hash}\0").as_bytes());
    Ok(())
}

fn sasl_start(
    body: &[u8],
    login: &LoginParams<'_>,
    sasl: &mut Option<Sasl>,
    out: &mut BytesMut,
) -> Result<(), ProxyError> {
    let mechanisms = body;
    if !mechanisms.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256") {
        return Err(ProxyError::BackendUnavailable(
            "backend offers no SCRAM-SHA-256".into(),
        ));
    }
    let started = match login.secret {
        BackendSecret::ScramKeys(keys) => Sasl::Keys(KeyClient::new(Arc::clone(keys))),
        _ => {
            let pw = password(login, "a SCRAM-SHA-256 password")?;
            Sasl::Password(ScramSha256::new(
                pw.as_bytes(),
                ChannelBinding::unsupported(),
            ))
        }
    };
    let first = match &started {
        Sasl::Password(s) => s.message(),
        Sasl::Keys(k) => k.message(),
    };
    message::write_sasl_initial(out, "SCRAM-SHA-256", first);
    *sasl = Some(started);
    Ok(())
}

async fn sasl_continue(
    body: &[u8],
    login: &LoginParams<'_>,
    sasl: &mut Option<Sasl>,
    out: &mut BytesMut,
) -> Result<(), ProxyError> {
    let server_first = body.to_vec();
    let next = match sasl.take() {
        // The salted password is 4096 HMAC-SHA-256 rounds (PostgreSQL's default):
        // milliseconds of CPU per backend connection. Off the async workers, so a burst of new
        // connections does not hold up the timers of everything else (BFD's 100 ms packets
        // among them).
        Some(Sasl::Password(mut s)) => {
            let s = tokio::task::spawn_blocking(move || s.update(&server_first).map(|()| s))
                .await
                .map_err(|e| ProxyError::BackendUnavailable(format!("SCRAM: {e}")))?
                .map_err(|e| ProxyError::BackendUnavailable(format!("SCRAM: {e}")))?;
            Sasl::Password(s)
        }
        // Two HMACs: no key derivation, so no need to leave the worker.
        Some(Sasl::Keys(mut k)) => {
            k.update(&server_first)
                .map_err(|e| key_login_error(login, e))?;
            Sasl::Keys(k)
        }
        None => {
            return Err(ProxyError::BackendProtocol(
                message::DecodeError::Malformed("SASLContinue before SASL"),
            ))
        }
    };
    let last = match &next {
        Sasl::Password(s) => s.message(),
        Sasl::Keys(k) => k.message(),
    };
    message::write_password(out, last);
    *sasl = Some(next);
    Ok(())
}

fn sasl_final(
    body: &[u8],
    login: &LoginParams<'_>,
    sasl: &mut Option<Sasl>,
) -> Result<(), ProxyError> {
    let server_final = body;
    match sasl.as_mut() {
        Some(Sasl::Password(s)) => s
            .finish(server_final)
            .map_err(|e| ProxyError::BackendUnavailable(format!("SCRAM: {e}")))?,
        Some(Sasl::Keys(k)) => k
            .finish(server_final)
            .map_err(|e| key_login_error(login, e))?,
        None => {
            return Err(ProxyError::BackendProtocol(
                message::DecodeError::Malformed("SASLFinal before SASL"),
            ))
        }
    }
    // Verified: the AuthenticationOk that follows is expected now.
    *sasl = None;
    Ok(())
}

fn key_login_error(login: &LoginParams<'_>, e: super::scram_keys::KeyLoginError) -> ProxyError {
    ProxyError::BackendLogin(format!(
        "backend {} as user {:?}: {e}",
        login.backend, login.user
    ))
}
