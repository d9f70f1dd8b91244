//! The PostgreSQL proxy: listeners, client start-up and authentication, sessions that route
//! each unit of work to the primary or a replica.

pub mod access;
pub mod auth;
pub mod auth_query;
pub mod backend;
pub mod backend_auth;
pub mod cancel;
pub mod catalog;
pub mod catalog_refresh;
pub mod channel_binding;
pub mod classify;
mod client_auth;
mod client_messages;
mod deallocate;
mod deferred_begin;
mod frames;
pub mod greeting;
pub mod message;
mod passthrough;
mod pause;
pub mod plan;
pub mod pool;
pub mod prelogin;
mod retry;
pub mod route;
pub mod router;
pub mod scram_keys;
pub mod scram_verifiers;
pub mod server_budget;
pub mod session;
pub mod session_backends;
pub mod session_pid;
mod session_start;
pub mod slot;
pub mod slots;
mod spare_buffers;
pub mod startup;
pub mod stats;
pub mod stream;
pub mod tls;
mod transaction_pool;
pub mod weighted;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, ListenerConfig};
use crate::health::{ClusterView, ProbeSources};

use cancel::CancelRegistry;
use catalog::Catalogs;
use message::{DecodeError, ErrorFields, Message};
pub use pause::{pause_accepting, resume_accepting};
use prelogin::{Admission, PreLoginGate, PreLoginLimits, PreLoginPermit};
use scram_verifiers::ScramVerifiers;
use stats::{ProxyStats, Refusal};

/// Errors of the proxy. Each ends one client session, never the process.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client protocol violation: {0}")]
    ClientProtocol(DecodeError),
    #[error("backend protocol violation: {0}")]
    BackendProtocol(DecodeError),
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    #[error("backend error {}: {}", .0.code, .0.message)]
    BackendError(ErrorFields, Message),
    #[error("no password configured to log in to the backend")]
    NoBackendPassword,
    /// pgcast holds a secret for the user that this backend cannot take (another salt, another
    /// kind of password): a configuration problem, said plainly to client and log.
    #[error("cannot log in to the backend: {0}")]
    BackendLogin(String),
    #[error("client closed the connection")]
    ClientGone,
    #[error("{0}")]
    ServerConnectionsFull(#[from] server_budget::BudgetExhausted),
    #[error("password authentication failed for user {user:?}")]
    ClientAuth { user: String },
    /// Refused by the `[[access]]` rules (the message the client got).
    #[error("{0}")]
    AccessDenied(String),
}

/// Everything a session needs, shared by all sessions of all listeners.
pub struct ProxyContext {
    pub config: watch::Receiver<Arc<Config>>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    pub catalogs: Arc<Catalogs>,
    /// The SCRAM users' verifiers, derived off the async workers.
    pub scram: Arc<ScramVerifiers>,
    /// Users looked up with `[auth_query]`, cached for its TTL.
    pub auth_query: Arc<auth_query::AuthQueryCache>,
    pub cancel: Arc<CancelRegistry>,
    /// Server processes of sessions whose clients were told an issued PID.
    pub pid_aliases: Arc<session_pid::PidAliases>,
    /// The certificate offered to clients (replaced at SIGHUP).
    pub tls: Arc<tls::ServerTls>,
    /// TLS towards the backends (replaced at SIGHUP).
    pub backend_tls: Arc<crate::backend_tls::CurrentBackendTls>,
    pub stats: Arc<ProxyStats>,
    pub pool: Arc<pool::Pool>,
    /// Bounds the number of logged-in clients across all listeners; a slot is taken once a
    /// client authenticated (`session::serve_client`), never by a stranger.
    pub client_slots: Arc<Semaphore>,
    /// Bounds the connections in start-up and authentication, in total and per source.
    pub prelogin: Arc<PreLoginGate>,
    /// The listener self-check's connections in flight: they take no pre-login place.
    pub self_probes: Arc<ProbeSources>,
    /// Statement shapes a replica refused as writes (see `retry.rs`).
    pub learned_writes: retry::LearnedWrites,
}

impl ProxyContext {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        cluster: watch::Receiver<Arc<ClusterView>>,
        catalogs: Arc<Catalogs>,
        self_probes: Arc<ProbeSources>,
        tls: Arc<tls::ServerTls>,
        backend_tls: Arc<crate::backend_tls::CurrentBackendTls>,
    ) -> Arc<Self> {
        let c = config.borrow().clone();
        let stats = Arc::new(ProxyStats::default());
        Arc::new(ProxyContext {
            cancel: CancelRegistry::new(c.node_id),
            pid_aliases: Default::default(),
            tls,
            backend_tls,
            scram: ScramVerifiers::new(),
            auth_query: auth_query::AuthQueryCache::new(),
            pool: pool::Pool::new(
                Arc::clone(&stats),
                server_budget::ServerBudget::new(
                    c.pool.max_server_connections,
                    c.pool.max_server_connections_per_user_database,
                ),
            ),
            stats,
            client_slots: Arc::new(Semaphore::new(c.limits.max_client_connections)),
            prelogin: PreLoginGate::new(),
            self_probes,
            learned_writes: retry::LearnedWrites::default(),
            config,
            cluster,
            catalogs,
        })
    }
}

/// Accepts clients until `stop` turns true, then returns (open sessions continue on their own).
pub async fn run_listener(
    listener: Arc<TcpListener>,
    cfg: ListenerConfig,
    ctx: Arc<ProxyContext>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; a flood of
                // connections must not flood the log too.
                crate::log_limited!(warn, listener = %cfg.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&client_keepalive()) {
            tracing::debug!(%peer, error = %e, "cannot enable TCP keepalive");
        }
        let prelogin = match admit(&ctx, peer) {
            Ok(p) => p,
            Err(why) => {
                refuse_at_accept(&stream, &ctx, &cfg.name, peer, why);
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let cfg = Arc::clone(&cfg);
        tokio::spawn(async move {
            if let Err(e) = session_start::serve_client(stream, cfg, ctx, prelogin).await {
                tracing::debug!(%peer, error = %e, "session ended with error");
            }
        });
    }
}

/// The pre-login place of a new connection from `peer`: none needed for the self-check's
/// probe (`Ok(None)`), else one from the budget, or the reason there is none.
fn admit(ctx: &ProxyContext, peer: SocketAddr) -> Result<Option<PreLoginPermit>, Refusal> {
    if ctx.self_probes.contains(peer) {
        return Ok(None);
    }
    let limits = {
        let c = ctx.config.borrow();
        PreLoginLimits {
            max_total: c.limits.max_prelogin_connections,
            max_per_source: c.limits.max_prelogin_per_source,
        }
    };
    match ctx.prelogin.try_enter(peer.ip(), limits) {
        Ok(p) => Ok(Some(p)),
        Err(Admission::SourceFull) => Err(Refusal::PreLoginPerSource),
        Err(Admission::TotalFull | Admission::Admitted) => Err(Refusal::PreLoginFull),
    }
}

/// Refuses a connection over a pre-login limit the cheap way: the FATAL 53300 PostgreSQL
/// sends when it is full, written without waiting (a new socket's send buffer is empty, so it
/// fits), then closed at once. No task, and the descriptor is free again before the next
/// accept: a flood costs a refusal each, not a connection each. Sent with a plain send(2) on
/// the non-blocking socket, not tokio's `try_write`: that one reports WouldBlock until the
/// reactor has seen the new socket writable, which under a flood (every worker busy) may not
/// have happened yet, and the stranger would be closed without a word.
fn refuse_at_accept(
    stream: &TcpStream,
    ctx: &ProxyContext,
    listener: &str,
    peer: SocketAddr,
    why: Refusal,
) {
    ctx.stats.refused.count(why);
    ctx.stats.count_error("53300");
    let mut out = BytesMut::new();
    message::write_error(
        &mut out,
        "FATAL",
        "53300",
        "sorry, too many clients already",
    );
    let _ = socket2::SockRef::from(stream).send(&out);
    let reason = match why {
        Refusal::PreLoginPerSource => {
            "this source holds limits.max_prelogin_per_source connections in start-up"
        }
        // ClientsFull is decided after login, never here.
        Refusal::PreLoginFull | Refusal::ClientsFull => {
            "limits.max_prelogin_connections connections are in start-up"
        }
    };
    crate::log_limited!(warn, listener, %peer, "connection refused before login: {reason}");
}

/// TCP keepalive on client connections: with anycast, a client's packets can be hashed to
/// another balancer when the router's ECMP set changes; that balancer resets the client, and
/// this one never hears of it. Without probes such a session would sit here forever, holding
/// its backend connection, an open transaction and its locks. Idle 10 s, then 3 probes 5 s
/// apart: a vanished client is noticed within ~25 s (its host answers a probe with RST).
fn client_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(10))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3)
}
