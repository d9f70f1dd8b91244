//! The PostgreSQL proxy: listeners, client start-up and authentication, sessions that route
//! each unit of work to the primary or a replica.

pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod catalog_refresh;
pub mod classify;
mod client_messages;
mod deallocate;
mod deferred_begin;
pub mod message;
mod pause;
pub mod plan;
pub mod pool;
mod retry;
pub mod router;
pub mod scram_verifiers;
pub mod server_budget;
pub mod session;
pub mod session_backends;
pub mod slot;
pub mod slots;
pub mod startup;
pub mod stats;
pub mod weighted;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::{Config, ListenerConfig};
use crate::health::ClusterView;

use cancel::CancelRegistry;
use catalog::Catalogs;
use message::{DecodeError, ErrorFields, Message};
pub use pause::{pause_accepting, resume_accepting};
use scram_verifiers::ScramVerifiers;
use stats::ProxyStats;

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
    #[error("client closed the connection")]
    ClientGone,
    #[error("{0}")]
    ServerConnectionsFull(#[from] server_budget::BudgetExhausted),
}

/// Everything a session needs, shared by all sessions of all listeners.
pub struct ProxyContext {
    pub config: watch::Receiver<Arc<Config>>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    pub catalogs: Arc<Catalogs>,
    /// The SCRAM users' verifiers, derived off the async workers.
    pub scram: Arc<ScramVerifiers>,
    pub cancel: Arc<CancelRegistry>,
    pub stats: Arc<ProxyStats>,
    pub pool: Arc<pool::Pool>,
    /// Bounds the number of client connections across all listeners.
    pub client_slots: Arc<Semaphore>,
    /// Statement shapes a replica refused as writes (see `retry.rs`).
    pub learned_writes: retry::LearnedWrites,
}

impl ProxyContext {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        cluster: watch::Receiver<Arc<ClusterView>>,
        catalogs: Arc<Catalogs>,
    ) -> Arc<Self> {
        let c = config.borrow().clone();
        let stats = Arc::new(ProxyStats::default());
        Arc::new(ProxyContext {
            cancel: CancelRegistry::new(c.node_id),
            scram: ScramVerifiers::new(),
            pool: pool::Pool::new(Arc::clone(&stats), c.pool.max_server_connections),
            stats,
            client_slots: Arc::new(Semaphore::new(c.limits.max_client_connections)),
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
    let counters = ctx.stats.listener(&cfg.name);
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
                static ACCEPT_FAILED: crate::log_limit::LogLimit =
                    crate::log_limit::LogLimit::new(std::time::Duration::from_secs(10));
                if let Some(more) = ACCEPT_FAILED.admit() {
                    tracing::warn!(listener = %cfg.name, error = %e, more_since_last_line = more, "accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&client_keepalive()) {
            tracing::debug!(%peer, error = %e, "cannot enable TCP keepalive");
        }
        let Ok(permit) = Arc::clone(&ctx.client_slots).try_acquire_owned() else {
            counters
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(reject(stream, "53300", "sorry, too many clients already"));
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let cfg = Arc::clone(&cfg);
        let guard = stats::ClientGuard::new(Arc::clone(&counters));
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            if let Err(e) = session::serve_client(stream, cfg, ctx).await {
                tracing::debug!(%peer, error = %e, "session ended with error");
            }
        });
    }
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

async fn reject(mut stream: TcpStream, code: &str, message: &str) {
    let mut out = BytesMut::new();
    message::write_error(&mut out, "FATAL", code, message);
    let _ = stream.write_all(&out).await;
}
