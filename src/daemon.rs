//! `pgcast run`: wires configuration, health, proxy listeners, the admin socket and metrics
//! together, and handles SIGHUP (reload), SIGTERM/SIGINT (drain and exit) and the admin
//! socket's `drain`/`undrain` (withdraw and stay up, announce again).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::admin::{self, CommandReply, Control};
use crate::anycast::announce::Drain;
use crate::anycast::{thread_priority, AnycastError, Speakers};
use crate::config::{Config, ConfigError};
use crate::health;
use crate::proxy::catalog::Catalogs;
use crate::proxy::{self, ProxyContext};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address} (listener {name}): {source}")]
    Bind {
        name: String,
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Anycast(#[from] AnycastError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// How long SIGTERM waits for client sessions to finish before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the parts other than the proxy run: each on a runtime of its own, so that neither the
/// proxy's load nor a health check's CPU-bound login delays the routing protocols' timers.
pub struct Runtimes {
    /// Backend health checks and the listener self-check.
    pub health: Handle,
    /// The OSPF, BGP and BFD speakers and their coupling to the verdicts.
    pub routing: Handle,
}

/// Runs until SIGTERM/SIGINT. The proxy runs on the calling runtime; health and routing on
/// theirs (`runtimes`).
pub async fn run(config_path: &Path, runtimes: Runtimes) -> Result<(), DaemonError> {
    let config = Arc::new(Config::load(config_path)?);
    let (config_tx, config_rx) = watch::channel(Arc::clone(&config));

    let mut listener_sockets = Vec::new();
    // Where each listener is bound (port 0 resolved): the self-check probes it there.
    let mut bound = Vec::new();
    for l in &config.listeners {
        let bind_error = |source| DaemonError::Bind {
            name: l.name.clone(),
            address: l.address.to_string(),
            source,
        };
        let socket = TcpListener::bind(l.address).await.map_err(bind_error)?;
        bound.push((l.name.clone(), socket.local_addr().map_err(bind_error)?));
        tracing::info!(listener = %l.name, address = %l.address, role = %l.role, "listening");
        listener_sockets.push((l.name.clone(), Arc::new(socket)));
    }
    let (paused_tx, paused_rx) = watch::channel(false);

    let catalogs = Catalogs::new(&config.routing);
    // The health database's functions are loaded at start; others when a client uses them.
    catalogs.for_database(&config.health.database);
    let cluster_rx = {
        let _health = runtimes.health.enter();
        health::spawn(config_rx.clone(), bound, paused_rx)
    };
    // On the health runtime: its logins to the primary do not load the proxy's workers.
    proxy::catalog_refresh::spawn(
        &runtimes.health,
        config_rx.clone(),
        cluster_rx.clone(),
        Arc::clone(&catalogs),
    );
    let ctx = ProxyContext::new(config_rx.clone(), cluster_rx, catalogs);
    proxy::pool::spawn_pruner(Arc::clone(&ctx.pool), config_rx.clone());
    proxy::scram_verifiers::spawn_refresh(Arc::clone(&ctx.scram), config_rx.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut listener_tasks = Vec::new();
    for ((_, socket), l) in listener_sockets.iter().zip(&config.listeners) {
        listener_tasks.push(tokio::spawn(proxy::run_listener(
            Arc::clone(socket),
            l.clone(),
            Arc::clone(&ctx),
            stop_rx.clone(),
        )));
    }
    // After the listeners are bound: nothing is announced that could not be served.
    raise_speaker_priority(&runtimes.routing, config.speakers_realtime_priority).await;
    let routing = {
        let _routing = runtimes.routing.enter();
        Speakers::start(&config, ctx.cluster.clone())?
    };
    let _ = ctx.routing.set(routing.status_source());
    let admin_socket = admin::bind_admin(&config.admin_socket).await?;
    let (command_tx, mut commands) = mpsc::channel(4);
    tokio::spawn(admin::serve_admin(
        admin_socket,
        Arc::clone(&ctx),
        command_tx,
        stop_rx.clone(),
    ));
    if let Some(addr) = config.metrics_listen {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                name: "metrics".into(),
                address: addr.to_string(),
                source,
            })?;
        tokio::spawn(admin::serve_metrics(
            socket,
            Arc::clone(&ctx),
            stop_rx.clone(),
        ));
    }
    tracing::info!(node = %config.node_name, "pgcast ready");

    let mut anycast = Anycast {
        config: &config,
        listeners: listener_sockets,
        paused: paused_tx,
        ctx: &ctx,
        routing: &routing,
    };
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(config_path, &config_tx),
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(request) = commands.recv() => {
                // One at a time: a SIGTERM during a drain is handled after it.
                let reply = match request.command {
                    Control::Drain => anycast.operator_drain().await,
                    Control::Undrain => anycast.operator_undrain().await,
                };
                let _ = request.reply.send(reply);
            }
        }
    }

    if !config.prefixes.is_empty() {
        let converged = anycast.routing.drain_state() == Drain::Operator;
        anycast.withdraw(Drain::Shutdown).await;
        // After an operator's drain the routers moved clients away long ago.
        if !converged {
            tokio::time::sleep(config.drain.withdraw_grace).await;
        }
    }
    tracing::info!("shutting down: no new clients");
    let _ = stop_tx.send(true);
    for t in listener_tasks {
        let _ = t.await;
    }
    // Closes the listening sockets.
    anycast.listeners.clear();
    wait_for_sessions(&|| anycast.open_sessions(), DRAIN_TIMEOUT, 50).await;
    routing.shutdown().await;
    let _ = std::fs::remove_file(&config.admin_socket);
    Ok(())
}

/// What a drain works on: the listeners to pause, the sessions to wait for, the routing.
struct Anycast<'a> {
    config: &'a Config,
    listeners: Vec<(String, Arc<TcpListener>)>,
    /// Tells the self-check that the listeners drop SYNs on purpose.
    paused: watch::Sender<bool>,
    ctx: &'a ProxyContext,
    routing: &'a Speakers,
}

impl Anycast<'_> {
    fn open_sessions(&self) -> usize {
        self.config.limits.max_client_connections - self.ctx.client_slots.available_permits()
    }

    /// Withdraws every prefix (`cause`: SIGTERM or an operator's drain). The listeners are
    /// paused first and the sessions in flight get `drain.quiesce` to end, because the
    /// router's ECMP is stateless: once the prefix is withdrawn, packets of a session still
    /// open here are hashed to another balancer, which resets it. A paused listener drops
    /// SYNs instead of refusing them, so those clients retry, and their retry reaches another
    /// balancer once the withdrawal has converged. Returns whether every speaker confirmed
    /// the withdrawal. The listeners stay paused.
    async fn withdraw(&self, cause: Drain) -> bool {
        self.paused.send_replace(true);
        for (name, socket) in &self.listeners {
            if let Err(e) = proxy::pause_accepting(socket) {
                tracing::warn!(listener = %name, error = %e, "cannot pause the listener");
            }
        }
        tracing::info!(
            sessions = self.open_sessions(),
            ?cause,
            "draining: new connections paused, waiting for sessions in flight"
        );
        // Polled every 5 ms: the withdrawal waits for this, and short sessions end in ms.
        let left = wait_for_sessions(&|| self.open_sessions(), self.config.drain.quiesce, 5).await;
        if left > 0 {
            tracing::warn!(
                sessions = left,
                "withdrawing with sessions still open: their clients will see resets"
            );
        }
        tracing::info!(?cause, "draining: withdrawing anycast prefixes");
        let limit = self
            .config
            .ospf
            .as_ref()
            .map_or(Duration::ZERO, |o| o.min_ls_interval)
            + Duration::from_secs(1);
        match cause {
            Drain::Shutdown => self.routing.withdraw_all(limit).await,
            Drain::Operator | Drain::Serving => self.routing.drain(cause, limit).await,
        }
    }

    /// `pgcast drain`: withdraw, wait `drain.withdraw_grace` for the routers, then accept new
    /// connections again (only clients that use this balancer's own address still reach it)
    /// and stay up until `pgcast undrain`.
    async fn operator_drain(&self) -> CommandReply {
        if self.config.prefixes.is_empty() {
            return reply(
                false,
                "nothing to drain: no [[prefix]] is configured".into(),
            );
        }
        if self.routing.drain_state() == Drain::Operator {
            return reply(true, "already drained".into());
        }
        let confirmed = self.withdraw(Drain::Operator).await;
        // Paused until the routers have moved the address elsewhere: a SYN accepted before
        // that could start a session whose next packets the new route takes to another
        // balancer (seen in the lab: resumed right after the withdrawal, such sessions were
        // reset).
        tokio::time::sleep(self.config.drain.withdraw_grace).await;
        for (name, socket) in &self.listeners {
            if let Err(e) = proxy::resume_accepting(socket) {
                tracing::warn!(listener = %name, error = %e, "cannot resume the listener");
            }
        }
        self.paused.send_replace(false);
        let prefixes = self.prefix_list();
        tracing::info!(%prefixes, confirmed, "drained by the operator");
        if confirmed {
            let open = self.open_sessions();
            reply(
                true,
                format!("drained: {prefixes} withdrawn; {open} client sessions open here"),
            )
        } else {
            reply(
                false,
                format!(
                    "drained, but not every speaker confirmed withdrawing {prefixes}: see pgcast status"
                ),
            )
        }
    }

    /// `pgcast undrain`: announce again as health allows.
    async fn operator_undrain(&self) -> CommandReply {
        if self.routing.drain_state() != Drain::Operator {
            return reply(true, "not drained".into());
        }
        let verdicts = self.routing.undrain().await;
        let summary: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let what = if v.announce { "announced" } else { "withdrawn" };
                format!("{}/{} {what} ({})", v.prefix, v.prefix_len, v.reason)
            })
            .collect();
        tracing::info!(prefixes = %summary.join("; "), "undrained by the operator");
        reply(true, format!("undrained: {}", summary.join("; ")))
    }

    fn prefix_list(&self) -> String {
        let list: Vec<String> = self
            .config
            .prefixes
            .iter()
            .map(|p| format!("{}/{}", p.address, p.prefix_len))
            .collect();
        list.join(", ")
    }
}

/// Runs the speakers' thread (the single worker of `routing`) under SCHED_RR at `priority`;
/// 0 leaves it alone. A failure (no root, no CAP_SYS_NICE) is a warning: the speakers work,
/// only their timers may slip on a busy host.
async fn raise_speaker_priority(routing: &Handle, priority: u8) {
    if priority == 0 {
        return;
    }
    let on_worker =
        routing.spawn(async move { thread_priority::set_current_thread_round_robin(priority) });
    match on_worker.await {
        Ok(Ok(())) => tracing::info!(priority, "routing speakers run under SCHED_RR"),
        Ok(Err(e)) => tracing::warn!(
            priority,
            error = %e,
            "cannot give the routing speakers real-time priority; on a busy host BFD may flap"
        ),
        Err(e) => tracing::warn!(error = %e, "routing priority task failed"),
    }
}

fn reply(ok: bool, message: String) -> CommandReply {
    CommandReply { ok, message }
}

/// Waits until `open_sessions()` is 0 on two polls in a row or `limit` has passed, polling
/// every `poll_ms`; returns how many sessions are still open. Two polls, because a handshake
/// that completed just before the listener's pause is accepted (and counted) a moment later.
async fn wait_for_sessions(
    open_sessions: &impl Fn() -> usize,
    limit: Duration,
    poll_ms: u64,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut idle_polls = 0;
    while idle_polls < 2 && tokio::time::Instant::now() < deadline {
        idle_polls = if open_sessions() == 0 {
            idle_polls + 1
        } else {
            0
        };
        if idle_polls < 2 {
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        }
    }
    open_sessions()
}

/// SIGHUP: applies what can change at run time and says what could not be applied.
fn reload(path: &Path, config_tx: &watch::Sender<Arc<Config>>) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            return;
        }
    };
    let old = config_tx.borrow().clone();
    let (merged, not_applied) = merge_reload(&old, new);
    for what in &not_applied {
        tracing::warn!("reload: {what} changed but needs a restart; not applied");
    }
    tracing::info!(
        applied = "backends, weights, health, users, routing rules, peers",
        "configuration reloaded"
    );
    config_tx.send_replace(Arc::new(merged));
}

/// Keeps the parts of `old` that cannot change without a restart; returns their names.
pub fn merge_reload(old: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut not_applied = Vec::new();
    if new.listeners != old.listeners {
        not_applied.push("listeners");
        new.listeners = old.listeners.clone();
    }
    if new.admin_socket != old.admin_socket {
        not_applied.push("admin.socket");
        new.admin_socket = old.admin_socket.clone();
    }
    if new.metrics_listen != old.metrics_listen {
        not_applied.push("metrics.listen");
        new.metrics_listen = old.metrics_listen;
    }
    if new.node_id != old.node_id
        || new.node_name != old.node_name
        || new.speakers_realtime_priority != old.speakers_realtime_priority
    {
        not_applied.push("node");
        new.node_id = old.node_id;
        new.node_name = old.node_name.clone();
        new.speakers_realtime_priority = old.speakers_realtime_priority;
    }
    if new.limits.max_client_connections != old.limits.max_client_connections {
        not_applied.push("limits.max_client_connections");
        new.limits.max_client_connections = old.limits.max_client_connections;
    }
    if new.ospf != old.ospf {
        not_applied.push("ospf");
        new.ospf = old.ospf.clone();
    }
    if new.prefixes != old.prefixes {
        not_applied.push("prefix");
        new.prefixes = old.prefixes.clone();
    }
    if new.routing.statement_cache_size != old.routing.statement_cache_size {
        not_applied.push("routing.statement_cache_size");
        new.routing.statement_cache_size = old.routing.statement_cache_size;
    }
    (new, not_applied)
}

/// Where `pgcast status` finds the admin socket: `--admin`, else the config's.
pub fn admin_socket_path(
    admin: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = admin {
        return Ok(p);
    }
    let path = config.unwrap_or(Path::new("/etc/pgcast/pgcast.toml"));
    Ok(Config::load(path)?.admin_socket)
}
