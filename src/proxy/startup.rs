//! Client start-up: SSL/GSS negotiation, the StartupMessage, CancelRequest and password
//! authentication (SCRAM-SHA-256, MD5 or trust: by the `[[access]]` rules, else per configured
//! user; the exchanges are in `client_auth.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::backend_auth::BackendSecret;
use super::cancel::CancelRoute;
use super::client_auth::{self, ClientIo};
use super::message::{self, Message, StartupPacket};
use super::stats::{CancelOutcome, StartupFailure};
use super::tls::{self, ClientStream, LoadedTls};
use super::{access, backend, cancel, ProxyContext, ProxyError};
use crate::config::{ClientAuthMethod, Config, ListenerTls, UserConfig};
use crate::log_limit::LogLimit;

/// At most one line per this interval for each log line a stranger can trigger per connection.
const LOG_INTERVAL: std::time::Duration = crate::log_limit::INTERVAL;

/// Where a connection came in: the `[[access]]` rules match on both.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub listener: &'a str,
    pub peer: Option<SocketAddr>,
}

/// A client that completed start-up and authentication.
pub struct ClientStartup {
    pub params: super::pool::StartupParams,
    pub user: Arc<UserConfig>,
    pub database: String,
    /// What pgcast logs in to the backends with as this user, for the whole session.
    pub backend_secret: BackendSecret,
}

/// Outcome of the start-up phase.
pub enum StartupOutcome {
    Session(Box<ClientStartup>),
    /// A CancelRequest was handled; the connection is done.
    Cancelled,
}

/// Sends a FATAL ErrorResponse, counts it, and turns it into the session's error.
pub async fn fatal(
    stream: &mut ClientStream,
    ctx: &ProxyContext,
    code: &str,
    msg: &str,
) -> Result<(), ProxyError> {
    let mut out = BytesMut::new();
    message::write_error(&mut out, "FATAL", code, msg);
    ctx.stats.count_error(code);
    tls::send(stream, &out).await?;
    Ok(())
}

/// Ends the start-up with a FATAL error for the client (`code`, `msg`): the error the
/// connection then ends with, `why` for the log (or the failure to send).
async fn refuse(
    stream: &mut ClientStream,
    ctx: &ProxyContext,
    code: &str,
    msg: &str,
    why: &'static str,
) -> ProxyError {
    match fatal(stream, ctx, code, msg).await {
        Ok(()) => ProxyError::ClientProtocol(message::DecodeError::Malformed(why)),
        Err(e) => e,
    }
}

async fn read_startup(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<StartupPacket, ProxyError> {
    loop {
        if let Some(p) = message::decode_startup(buf, 10_000).map_err(ProxyError::ClientProtocol)? {
            return Ok(p);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ProxyError::ClientGone);
        }
    }
}

/// Bytes that arrived together with an SSLRequest/GSSENCRequest, before its answer was sent,
/// are refused as PostgreSQL refuses them (CVE-2021-23214: they could have been injected by a
/// man in the middle ahead of the encryption that the client asked for).
async fn refuse_early_data(
    stream: &mut ClientStream,
    buf: &BytesMut,
    ctx: &ProxyContext,
    request: &str,
) -> Result<(), ProxyError> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    let fields = [
        (b'S', "FATAL".to_string()),
        (b'V', "FATAL".to_string()),
        (b'C', "08P01".to_string()),
        (b'M', format!("received unencrypted data after {request}")),
        (
            b'D',
            "This could be either a client-software bug or evidence of an attempted \
             man-in-the-middle attack."
                .to_string(),
        ),
    ];
    message::write_message(&mut out, b'E', |b| {
        for (tag, value) in &fields {
            bytes::BufMut::put_u8(b, *tag);
            message::put_cstr(b, value);
        }
        bytes::BufMut::put_u8(b, 0);
    });
    ctx.stats.count_error("08P01");
    tls::send(stream, &out).await?;
    Err(ProxyError::ClientProtocol(message::DecodeError::Malformed(
        "data after an encryption request",
    )))
}

/// PostgreSQL 17's direct TLS (`sslnegotiation=direct`): the client's first byte starts a TLS
/// handshake instead of a start-up packet. Like PostgreSQL, only with ALPN "postgresql": a
/// client that does not say it speaks PostgreSQL inside is refused. True if it was one.
async fn direct_tls(
    stream: &mut ClientStream,
    tls: &LoadedTls,
    ctx: &ProxyContext,
) -> Result<bool, ProxyError> {
    if stream.peek_first_byte().await? != Some(tls::TLS_HANDSHAKE_RECORD) {
        return Ok(false);
    }
    stream.upgrade(tls).await?;
    if stream.alpn_protocol() != Some(tls::ALPN_POSTGRESQL) {
        let msg =
            "received direct SSL connection request without ALPN protocol negotiation extension";
        return Err(refuse(stream, ctx, "08P01", msg, "direct TLS without ALPN").await);
    }
    Ok(true)
}

/// Reads one tagged message during authentication.
pub async fn read_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Message, ProxyError> {
    loop {
        if let Some(m) = message::decode_message(buf, max).map_err(ProxyError::ClientProtocol)? {
            return Ok(m);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ProxyError::ClientGone);
        }
    }
}

/// Runs the start-up phase. Protocol errors are reported to the client before returning.
pub async fn client_startup(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    ctx: &Arc<ProxyContext>,
    config: &Config,
    listener_tls: ListenerTls,
    arrival: Arrival<'_>,
) -> Result<StartupOutcome, ProxyError> {
    // PostgreSQL answers each of SSLRequest and GSSENCRequest once; a repeated one is an
    // unsupported protocol version (postmaster.c, ProcessStartupPacket).
    let (mut ssl_done, mut gss_done) = (false, false);
    let tls = ctx.tls.current();
    if let Some(t) = tls
        .as_ref()
        .filter(|_| listener_tls != ListenerTls::Disable)
    {
        ssl_done = direct_tls(stream, t, ctx).await?;
    }
    let params = loop {
        let packet = match read_startup(stream, buf).await {
            Ok(p) => p,
            Err(ProxyError::ClientProtocol(e)) => {
                let code = if matches!(e, message::DecodeError::UnsupportedProtocol { .. }) {
                    "0A000"
                } else {
                    "08P01"
                };
                fatal(stream, ctx, code, &e.to_string()).await?;
                return Err(ProxyError::ClientProtocol(e));
            }
            Err(e) => return Err(e),
        };
        match packet {
            StartupPacket::SslRequest if !ssl_done => {
                ssl_done = true;
                let offered = tls
                    .as_ref()
                    .filter(|_| listener_tls != ListenerTls::Disable);
                tls::send(stream, if offered.is_some() { b"S" } else { b"N" }).await?;
                refuse_early_data(stream, buf, ctx, "SSL request").await?;
                if let Some(t) = offered {
                    stream.upgrade(t).await?;
                }
            }
            // No GSS encryption: answer 'N' and let the client continue as it is.
            StartupPacket::GssEncRequest if !gss_done => {
                gss_done = true;
                tls::send(stream, b"N").await?;
                refuse_early_data(stream, buf, ctx, "GSSAPI encryption request").await?;
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                let version = match packet {
                    StartupPacket::SslRequest => "1234.5679",
                    _ => "1234.5680",
                };
                let msg =
                    format!("unsupported frontend protocol {version}: server supports 3.0 to 3.0");
                return Err(
                    refuse(stream, ctx, "0A000", &msg, "repeated encryption request").await,
                );
            }
            StartupPacket::Cancel { pid, secret } => {
                handle_cancel(ctx, config, pid, secret).await;
                return Ok(StartupOutcome::Cancelled);
            }
            StartupPacket::Startup { params } => break params,
        }
    };
    if listener_tls == ListenerTls::Require && !stream.is_tls() {
        return Err(refuse(
            stream,
            ctx,
            "28000",
            "pgcast: this listener accepts TLS connections only",
            "a clear-text login on a TLS-only listener",
        )
        .await);
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user_name) = get("user") else {
        return Err(refuse(
            stream,
            ctx,
            "28000",
            "no PostgreSQL user name specified in startup packet",
            "startup without user",
        )
        .await);
    };
    let database = get("database").unwrap_or_else(|| user_name.clone());
    if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return Err(refuse(
            stream,
            ctx,
            "0A000",
            "pgcast does not proxy replication connections",
            "replication",
        )
        .await);
    }

    let facts = access::Facts {
        address: arrival.peer.map(|p| p.ip()),
        listener: arrival.listener,
        database: &database,
        user: &user_name,
        tls: stream.is_tls(),
    };
    // Before the user is looked up: a refused client costs no query on the primary.
    let verdict = check_access(stream, ctx, config, &facts).await?;
    let user = match config.user(&user_name) {
        Some(u) => Some(Arc::clone(u)),
        None => {
            let view = ctx.cluster.borrow().clone();
            ctx.auth_query
                .user(&user_name, config, &view, &ctx.backend_tls)
                .await
        }
    };
    // The rule's method, else the user's own; SCRAM for a user pgcast does not know, so that
    // its exchange looks like anyone's.
    let method = access::rule_method(verdict)
        .or(user.as_ref().map(|u| u.auth))
        .unwrap_or(ClientAuthMethod::ScramSha256);
    let mut io = ClientIo { stream, buf };
    let proved =
        client_auth::authenticate(&mut io, ctx, method, &user_name, user.as_deref()).await?;
    let (Some(user), Some(backend_secret)) = (user, proved) else {
        let msg = format!("password authentication failed for user \"{user_name}\"");
        fatal(stream, ctx, "28P01", &msg).await?;
        return Err(ProxyError::ClientAuth { user: user_name });
    };
    Ok(StartupOutcome::Session(Box::new(ClientStartup {
        params: params.into(),
        user,
        database,
        backend_secret,
    })))
}

/// The `[[access]]` verdict for this client; a refusal is sent to it (FATAL 28000) and
/// returned as the error.
async fn check_access(
    stream: &mut ClientStream,
    ctx: &ProxyContext,
    config: &Config,
    facts: &access::Facts<'_>,
) -> Result<access::Verdict, ProxyError> {
    let verdict = access::decide(&config.access, facts);
    if let access::Verdict::Matched { rule, method } = verdict {
        tracing::debug!(rule, ?method, user = %facts.user, "connection matched access[{rule}]");
    }
    if let Some(msg) = access::refusal(verdict, facts) {
        fatal(stream, ctx, "28000", &msg).await?;
        return Err(ProxyError::AccessDenied(msg));
    }
    Ok(verdict)
}

/// Pure: how the start-up phase ended when it returned `e`.
pub fn failure_kind(e: &ProxyError) -> StartupFailure {
    match e {
        ProxyError::ClientAuth { .. } | ProxyError::AccessDenied(_) => StartupFailure::AuthFailed,
        ProxyError::ClientProtocol(_) => StartupFailure::Protocol,
        ProxyError::Io(_) | ProxyError::ClientGone => StartupFailure::Closed,
        // Not returned before login; if one ever is, the connection simply ended.
        ProxyError::BackendProtocol(_)
        | ProxyError::BackendUnavailable(_)
        | ProxyError::BackendError(..)
        | ProxyError::NoBackendPassword
        | ProxyError::BackendLogin(_)
        | ProxyError::ServerConnectionsFull(_) => StartupFailure::Closed,
    }
}

/// Counts a connection that ended before logging in, and logs it at most once per
/// [`LOG_INTERVAL`] per kind with the number of others since: anyone who can reach a listener
/// can fail a login per connection, and must not be able to fill the log that way.
pub fn note_failure(
    ctx: &ProxyContext,
    peer: Option<SocketAddr>,
    how: StartupFailure,
    detail: &str,
) {
    ctx.stats.startup_failures.count(how);
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    match how {
        StartupFailure::AuthFailed => {
            crate::log_limited!(warn, %peer, "login failed: {detail}");
        }
        StartupFailure::Protocol => {
            crate::log_limited!(info, %peer, "bad start-up from a client: {detail}");
        }
        StartupFailure::Timeout => {
            crate::log_limited!(info, %peer, "client did not finish start-up in time: {detail}");
        }
        StartupFailure::Closed => {
            crate::log_limited!(debug, %peer, "client left during start-up: {detail}");
        }
    }
}

/// Delivers a CancelRequest to the backend connections of the session that holds the key, or
/// forwards it to the peer balancer that issued the key (see [`cancel::cancel_route`]).
/// Nothing is ever answered: the client learns the outcome from its query, as with PostgreSQL.
async fn handle_cancel(ctx: &ProxyContext, config: &Config, pid: i32, secret: i32) {
    let own = ctx.cancel.node_id();
    let issuer = cancel::issuer_of(secret);
    let targets = ctx.cancel.lookup(pid, secret);
    // `config` is the snapshot taken when this connection arrived, so a reloaded peer list
    // applies to the next CancelRequest.
    let route = cancel::cancel_route(own, issuer, targets.is_some(), &config.peers);
    let outcome = match (route, targets) {
        (CancelRoute::Local, Some(targets)) => {
            for key in targets.busy() {
                if let Err(e) = backend::send_cancel(
                    &key.host,
                    key.port,
                    key.pid,
                    key.secret,
                    config.limits.connect_timeout,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot deliver cancel request");
                }
            }
            CancelOutcome::Local
        }
        (CancelRoute::Forward(peer), _) => forward(ctx, config, peer, pid, secret).await,
        _ => {
            if issuer != own {
                static NOT_A_PEER: LogLimit = LogLimit::new(LOG_INTERVAL);
                if let Some(more) = NOT_A_PEER.admit() {
                    tracing::info!(
                        pid,
                        issuer,
                        more_since_last_line = more,
                        "cancel key issued by another balancer that is not in [[peers]]; dropped"
                    );
                }
            } else {
                crate::log_limited!(debug, pid, "cancel request for an unknown key");
            }
            CancelOutcome::Unknown
        }
    };
    ctx.stats.cancels.count(outcome);
}

async fn forward(
    ctx: &ProxyContext,
    config: &Config,
    peer: SocketAddr,
    pid: i32,
    secret: i32,
) -> CancelOutcome {
    let issuer = cancel::issuer_of(secret);
    let Some(_claim) = ctx.cancel.begin_forward(pid, secret) else {
        static DUPLICATE: LogLimit = LogLimit::new(LOG_INTERVAL);
        if let Some(more) = DUPLICATE.admit() {
            tracing::info!(
                pid,
                issuer,
                %peer,
                more_since_last_line = more,
                "cancel request already being forwarded; dropped (if this repeats, a [[peers]] \
                 address may point at the wrong balancer)"
            );
        }
        return CancelOutcome::Duplicate;
    };
    match backend::forward_cancel(peer, pid, secret, config.limits.connect_timeout).await {
        Ok(()) => {
            tracing::debug!(pid, issuer, %peer, "cancel request forwarded to the issuing balancer");
            CancelOutcome::Forwarded
        }
        Err(e) => {
            crate::log_limited!(warn, pid, issuer, %peer, error = %e, "cannot forward cancel request");
            CancelOutcome::ForwardFailed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let cases = [
            (
                ProxyError::ClientAuth { user: "app".into() },
                StartupFailure::AuthFailed,
            ),
            (
                ProxyError::ClientProtocol(message::DecodeError::Malformed("x")),
                StartupFailure::Protocol,
            ),
            (ProxyError::ClientGone, StartupFailure::Closed),
            (ProxyError::Io(io()), StartupFailure::Closed),
            (ProxyError::NoBackendPassword, StartupFailure::Closed),
            (
                ProxyError::AccessDenied("no pgcast access rule".into()),
                StartupFailure::AuthFailed,
            ),
            (
                ProxyError::BackendLogin("salt".into()),
                StartupFailure::Closed,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(failure_kind(&e), kind, "{e}");
        }
    }
}
