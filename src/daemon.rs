//! `pgcast run`: wires configuration, health, proxy listeners, the admin socket and metrics
//! together, and handles SIGHUP (reload), SIGTERM/SIGINT (drain and exit) and the admin
//! socket's `drain`/`undrain` (withdraw and stay up, announce again).

mod drain;
mod supervise;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::admin::{self, Control};
use crate::anycast::{AnycastError, Speakers};
use crate::config::{merge_reload, Config, ConfigError, ReloadReport};
use crate::health;
use crate::proxy::catalog::Catalogs;
use crate::proxy::{self, ProxyContext};
use crate::status::StatusSources;
use drain::Anycast;
use supervise::CriticalTasks;
pub use supervise::TaskExit;

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
    #[error("[tls]: {0}")]
    Tls(#[from] proxy::tls::TlsError),
    #[error("{0}")]
    BackendTls(#[from] crate::backend_tls::BackendTlsError),
    #[error("{0}: every anycast prefix was withdrawn (fail closed)")]
    TaskFailed(TaskExit),
}

/// Where the parts other than the proxy run: each on a runtime of its own, so that neither the
/// proxy's load nor a health check's CPU-bound login delays the routing protocols' timers.
pub struct Runtimes {
    /// Backend health checks and the listener self-check.
    pub health: Handle,
    /// The OSPF, BGP and BFD speakers and their coupling to the verdicts.
    pub routing: Handle,
}

/// Runs until SIGTERM/SIGINT, or until a task that decides the announcement ends (then every
/// prefix is withdrawn and the error says which task: the process must exit non-zero). The
/// proxy runs on the calling runtime; health and routing on theirs (`runtimes`).
pub async fn run(config_path: &Path, runtimes: Runtimes) -> Result<(), DaemonError> {
    let config = Arc::new(Config::load_private(config_path)?);
    log_warnings(&config);
    raise_nofile_limit(&config);
    let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
    let (listener_sockets, bound) = bind_listeners(&config).await?;
    let (paused_tx, paused_rx) = watch::channel(false);

    let mut critical = CriticalTasks::default();
    let catalogs = Catalogs::new(&config.routing);
    // The health database's functions are loaded at start; others when a client uses them.
    catalogs.for_database(&config.health.database);
    // The self-check registers its probes' sources here and the proxy lets them in without a
    // pre-login place: strangers cannot crowd out the check of the listeners they flood.
    let self_probes = health::ProbeSources::new();
    // Before the health checker and the function refresher, which connect with it too.
    let backend_tls = Arc::new(crate::backend_tls::CurrentBackendTls::new(
        &config.backend_tls,
    )?);
    let health = {
        let _health = runtimes.health.enter();
        health::spawn(
            config_rx.clone(),
            bound,
            paused_rx,
            Arc::clone(&self_probes),
            Arc::clone(&backend_tls),
        )
    };
    critical.add("health checker", health.task);
    let cluster_rx = health.view;
    // On the health runtime: its logins to the primary do not load the proxy's workers.
    proxy::catalog_refresh::spawn(
        &runtimes.health,
        config_rx.clone(),
        cluster_rx.clone(),
        Arc::clone(&catalogs),
        Arc::clone(&backend_tls),
    );
    let tls = Arc::new(proxy::tls::ServerTls::new(config.tls.as_ref())?);
    let ctx = ProxyContext::new(
        config_rx.clone(),
        cluster_rx.clone(),
        catalogs,
        self_probes,
        tls,
        backend_tls,
    );
    proxy::pool::spawn_pruner(Arc::clone(&ctx.pool), config_rx.clone());
    proxy::scram_verifiers::spawn_refresh(Arc::clone(&ctx.scram), config_rx.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut listener_tasks = CriticalTasks::default();
    for ((name, socket), l) in listener_sockets.iter().zip(&config.listeners) {
        let task = tokio::spawn(proxy::run_listener(
            Arc::clone(socket),
            l.clone(),
            Arc::clone(&ctx),
            stop_rx.clone(),
        ));
        listener_tasks.add(format!("listener {name}"), task);
    }
    // After the listeners are bound: nothing is announced that could not be served.
    raise_speaker_priority(&runtimes.routing, config.speakers_realtime_priority).await;
    let mut speakers = {
        let _routing = runtimes.routing.enter();
        Speakers::start(&config, cluster_rx.clone(), health.heartbeat)?
    };
    critical.extend(speakers.critical_tasks());
    let (reload_tx, reload_rx) = watch::channel(None);
    let sources = Arc::new(StatusSources {
        config: config_rx.clone(),
        cluster: cluster_rx,
        proxy: Arc::clone(&ctx),
        anycast: speakers.status_source(),
        reload: reload_rx,
    });
    let mut commands = serve_admin_and_metrics(&config, sources, &stop_rx).await?;
    tracing::info!(node = %config.node_name, "pgcast ready");

    let anycast = Anycast {
        config: config_rx,
        listeners: listener_sockets,
        paused: paused_tx,
        ctx: &ctx,
        speakers: &speakers,
    };
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let failure = loop {
        tokio::select! {
            _ = hup.recv() => {
                let report = reload(config_path, &config_tx, anycast.speakers, &ctx).await;
                reload_tx.send_replace(Some(report));
            }
            _ = term.recv() => break None,
            _ = int.recv() => break None,
            exit = critical.first_exit() => break Some(exit),
            exit = listener_tasks.first_exit() => break Some(exit),
            Some(request) = commands.recv() => {
                // One at a time: a SIGTERM during a drain is handled after it.
                let reply = match request.command {
                    Control::Drain => anycast.operator_drain().await,
                    Control::Undrain => anycast.operator_undrain().await,
                };
                let _ = request.reply.send(reply);
            }
        }
    };
    if let Some(exit) = failure {
        return fail_closed(exit, &speakers, &stop_tx, &config).await;
    }
    anycast.shut_down(&stop_tx, listener_tasks).await;
    speakers.shutdown().await;
    let _ = std::fs::remove_file(&config.admin_socket);
    Ok(())
}

/// A critical task ended: withdraw every prefix straight through the speakers, stop taking
/// clients, and return the error that makes the process exit non-zero.
async fn fail_closed(
    exit: TaskExit,
    speakers: &Speakers,
    stop_tx: &watch::Sender<bool>,
    config: &Config,
) -> Result<(), DaemonError> {
    tracing::error!(
        task = %exit.task,
        how = %exit.how,
        "a task that decides the anycast announcement ended: withdrawing every prefix and \
         exiting, so that the service manager restarts pgcast"
    );
    speakers.withdraw_now(withdrawal_limit(config)).await;
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_file(&config.admin_socket);
    Err(DaemonError::TaskFailed(exit))
}

/// How long a withdrawal may take to be sent: OSPF holds a new Router-LSA back for
/// MinLSInterval after the previous origination.
fn withdrawal_limit(config: &Config) -> Duration {
    let ospf_hold = config
        .ospf
        .as_ref()
        .map_or(Duration::ZERO, |o| o.min_ls_interval);
    ospf_hold + Duration::from_secs(1)
}

/// Binds every listener; returns the sockets and where each is bound (port 0 resolved), which
/// the self-check probes.
async fn bind_listeners(
    config: &Config,
) -> Result<(Vec<(String, Arc<TcpListener>)>, Vec<(String, SocketAddr)>), DaemonError> {
    let mut sockets = Vec::new();
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
        sockets.push((l.name.clone(), Arc::new(socket)));
    }
    Ok((sockets, bound))
}

/// The admin socket, and the metrics endpoint when configured; returns the channel of the
/// admin socket's commands.
async fn serve_admin_and_metrics(
    config: &Config,
    sources: Arc<StatusSources>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<mpsc::Receiver<admin::AdminRequest>, DaemonError> {
    let admin_socket = admin::bind_admin(&config.admin_socket).await?;
    let (command_tx, commands) = mpsc::channel(4);
    tokio::spawn(admin::serve_admin(
        admin_socket,
        Arc::clone(&sources),
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
        tokio::spawn(admin::serve_metrics(socket, sources, stop_rx.clone()));
    }
    Ok(commands)
}

/// Runs the speakers' thread (the single worker of `routing`) under SCHED_RR at `priority`;
/// 0 leaves it alone. A failure (no root, no CAP_SYS_NICE) is a warning: the speakers work,
/// only their timers may slip on a busy host.
async fn raise_speaker_priority(routing: &Handle, priority: u8) {
    if priority == 0 {
        return;
    }
    let on_worker =
        routing.spawn(async move { crate::sys::set_current_thread_round_robin(priority) });
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

/// What `check-config` would warn about, in the log at start and after each reload.
fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!("configuration: {w}");
    }
}

/// SIGHUP: loads the file and applies what can change at run time; says by name what it
/// applied and what waits for a restart (in the log and in `pgcast status`).
async fn reload(
    path: &Path,
    config_tx: &watch::Sender<Arc<Config>>,
    speakers: &Speakers,
    ctx: &ProxyContext,
) -> ReloadReport {
    let at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let new = match Config::load_private(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
            return ReloadReport {
                at_unix,
                error: Some(e.to_string()),
                ..ReloadReport::default()
            };
        }
    };
    log_warnings(&new);
    let old = config_tx.borrow().clone();
    let (merged, mut report) = merge_reload(&old, new);
    report.at_unix = at_unix;
    if merged.bfd != old.bfd {
        speakers.set_bfd_timers(&merged.bfd).await;
    }
    for what in &report.restart_needed {
        tracing::warn!("reload: {what} changed: restart needed to apply; not applied");
    }
    // Read again at every reload, changed or not: that is how a renewed certificate is put
    // in force. New handshakes use it; open sessions keep theirs.
    if let Err(e) = ctx.backend_tls.reload(&merged.backend_tls) {
        tracing::error!(error = %e, "reload: [backend_tls] not applied; the running one stays");
        report
            .failed
            .push(format!("[backend_tls]: {e} (the running one stays)"));
    }
    match ctx.tls.reload(merged.tls.as_ref()) {
        Ok(true) => report
            .applied
            .push("[tls] certificate and key (read again)".into()),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "reload: [tls] not applied; the running certificate stays");
            report
                .failed
                .push(format!("[tls]: {e} (the running certificate stays)"));
        }
    }
    if report.applied.is_empty() && report.restart_needed.is_empty() {
        tracing::info!("configuration reloaded: nothing changed");
    } else if !report.applied.is_empty() {
        tracing::info!(applied = %report.applied.join(", "), "configuration reloaded");
    }
    let sslmodes = |c: &Config| c.backends.iter().map(|b| b.sslmode).collect::<Vec<_>>();
    let tls_changed = merged.backend_tls != old.backend_tls || sslmodes(&merged) != sslmodes(&old);
    config_tx.send_replace(Arc::new(merged));
    if tls_changed {
        // Idle connections opened the old way are of no use now (the pool key holds the
        // sslmode, so none would serve a session of the new one); close them at once.
        ctx.pool.close_all_idle();
    }
    report
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

/// Raises the open-files soft limit to the hard limit and warns when even that is below what
/// the configured limits can use: a descriptor per pre-login connection, three per logged-in
/// client (its socket, a primary and a replica connection), and some for the rest.
fn raise_nofile_limit(config: &Config) {
    let l = &config.limits;
    let wanted = (l.max_prelogin_connections + 3 * l.max_client_connections + 256) as u64;
    match crate::sys::raise_nofile_limit() {
        Ok(n) => {
            if n.soft < wanted {
                tracing::warn!(
                    soft = n.soft,
                    hard = n.hard,
                    wanted,
                    "the open-files limit is below what [limits] can use: a flood can run \
                     pgcast out of descriptors (raise LimitNOFILE)"
                );
            } else if n.soft != n.soft_before {
                tracing::info!(
                    from = n.soft_before,
                    to = n.soft,
                    "open-files soft limit raised"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}
