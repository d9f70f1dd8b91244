//! The health actor: checker tasks that probe backends, and the supervisor that owns the
//! [`ClusterState`], applies config reloads and publishes the [`ClusterView`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::NoTls;

use super::cluster::{parse_lsn, BackendView, ClusterState, ClusterView, Probe, Role};
use super::self_check::{spawn_listener_checks, ProbeSources, SelfCheckResult};
use super::HealthError;
use crate::backend_tls::{BackendTls, CurrentBackendTls};
use crate::config::{BackendConfig, Config, HealthConfig, SslMode};

/// One query answers everything we need on primaries and replicas alike.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     pg_last_wal_receive_lsn()::text, \
     EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

type ProbeResult = (String, u64, Result<Probe, String>);

/// The running health actor.
pub struct Health {
    /// The verdicts. Its closing means "unhealthy" to every reader.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// When the supervisor's loop last ran (it ticks every health interval): a view that is
    /// not refreshed is stale, whatever it says.
    pub heartbeat: watch::Receiver<Instant>,
    /// The supervisor, which runs until the config channel closes: the daemon treats its end
    /// as fatal.
    pub task: JoinHandle<()>,
}

/// Starts the health actor: backend checkers, and a self-check of each bound listener
/// (`listeners`: name and bound address; none are checked while `paused` is true; the probes'
/// sources are registered in `probes`, which the proxy reads). The checkers connect with the
/// daemon's `[backend_tls]` (`tls`), which a reload replaces.
pub fn spawn(
    mut config_rx: watch::Receiver<Arc<Config>>,
    listeners: Vec<(String, SocketAddr)>,
    paused: watch::Receiver<bool>,
    probes: Arc<ProbeSources>,
    tls: Arc<CurrentBackendTls>,
) -> Health {
    let config = config_rx.borrow_and_update().clone();
    let mut state = ClusterState::new(&config);
    let (view_tx, view_rx) = watch::channel(Arc::new(state.view()));
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(256);
    let (self_tx, mut self_rx) = mpsc::channel::<SelfCheckResult>(64);
    let self_checks = spawn_listener_checks(listeners, config_rx.clone(), paused, probes, self_tx);

    let (heartbeat_tx, heartbeat_rx) = watch::channel(Instant::now());
    let mut beat = tokio::time::interval(config.health.interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let supervisor = tokio::spawn(async move {
        let mut checkers: HashMap<String, (BackendConfig, u64, JoinHandle<()>)> = HashMap::new();
        let mut generation = 0u64;
        let mut config = config;
        let to = Checkers { probe_tx, tls };
        sync_checkers(&config, &mut checkers, &mut generation, &to, false);
        loop {
            tokio::select! {
                Some((name, gen, result)) = probe_rx.recv() => {
                    // Results from a checker that a reload replaced are stale.
                    if checkers.get(&name).map(|c| c.1) != Some(gen) {
                        continue;
                    }
                    if let Err(e) = &result {
                        tracing::debug!(backend = %name, error = %e, "probe failed");
                    }
                    state.observe(&name, result);
                    publish(&view_tx, &state);
                }
                Some((name, result)) = self_rx.recv() => {
                    if let Err(e) = &result {
                        tracing::debug!(listener = %name, error = %e, "self-check failed");
                    }
                    state.observe_listener(&name, result);
                    publish(&view_tx, &state);
                }
                changed = config_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new_config = config_rx.borrow_and_update().clone();
                    let health_changed = new_config.health != config.health
                        || new_config.backend_tls != config.backend_tls;
                    config = new_config;
                    state.reconfigure(&config);
                    sync_checkers(&config, &mut checkers, &mut generation, &to, health_changed);
                    publish(&view_tx, &state);
                }
                _ = beat.tick() => {
                    heartbeat_tx.send_replace(Instant::now());
                }
                never = crate::fault::panic_when_triggered("health") => never,
                _ = crate::fault::triggered("health-stall") => {
                    crate::fault::stall_while_triggered("health-stall");
                }
            }
        }
        for (_, (_, _, h)) in checkers {
            h.abort();
        }
        for h in self_checks {
            h.abort();
        }
    });
    Health {
        view: view_rx,
        heartbeat: heartbeat_rx,
        task: supervisor,
    }
}

fn publish(view_tx: &watch::Sender<Arc<ClusterView>>, state: &ClusterState) {
    let view = state.view();
    view_tx.send_if_modified(|current| {
        if **current == view {
            return false;
        }
        log_changes(current, &view);
        *current = Arc::new(view);
        true
    });
}

fn log_changes(old: &ClusterView, new: &ClusterView) {
    if old.primary != new.primary {
        tracing::warn!(old = ?old.primary, new = ?new.primary, "primary changed");
    }
    if !new.split_brain.is_empty() && old.split_brain != new.split_brain {
        tracing::error!(backends = ?new.split_brain, "SPLIT BRAIN: several backends claim to be primary; no writes are routed");
    }
    for b in &new.backends {
        log_read_set_change(old.backend(&b.name), b, &new.read_set);
    }
    for b in &old.backends {
        if b.in_read_set && new.backend(&b.name).is_none() {
            tracing::info!(backend = %b.name, read_set = ?new.read_set, "replica leaves the read set: removed from the configuration");
        }
    }
    for l in &new.listeners {
        let was = old.listener(&l.name).map(|o| o.accepting);
        if was == Some(l.accepting) {
            continue;
        }
        match (&l.accept_error, l.accepting) {
            (_, true) => tracing::info!(listener = %l.name, "self-check: listener accepting"),
            (Some(e), false) if was.is_some() => {
                tracing::error!(listener = %l.name, error = %e, "self-check: listener NOT ACCEPTING connections; its prefixes are withdrawn")
            }
            _ => {}
        }
    }
}

/// One line when a backend enters or leaves the read set: the lag measured at that probe, the
/// limit that tripped (or the return limits now met) and after how many consecutive probes.
fn log_read_set_change(old: Option<&BackendView>, new: &BackendView, read_set: &[String]) {
    if old.is_some_and(|o| o.in_read_set == new.in_read_set) || (old.is_none() && !new.in_read_set)
    {
        return;
    }
    let lag_bytes = new.lag_bytes.map(|v| v as i64).unwrap_or(-1);
    let lag_seconds = new.lag_seconds.unwrap_or(-1.0);
    // A change of the lag verdict explains the move when it points the same way.
    let lag = new
        .lag_change
        .as_ref()
        .filter(|c| c.within == new.in_read_set);
    let probes = lag.map(|c| c.probes).unwrap_or(0);
    if new.in_read_set {
        let reason = match lag {
            Some(c) if old.is_some_and(|o| o.role == Role::Replica && o.up) => c.detail.clone(),
            _ => "up as a replica within the lag limits".to_string(),
        };
        tracing::info!(backend = %new.name, lag_bytes, lag_seconds, probes, reason = %reason, ?read_set, "replica joins the read set");
    } else {
        let reason = match (&new.read_set_reason, new.role, new.up) {
            (Some(r), _, _) => r.clone(),
            (None, _, false) => {
                format!("down: {}", new.last_error.as_deref().unwrap_or("no answer"))
            }
            (None, Role::Primary, _) => "now a primary".to_string(),
            (None, _, _) => format!("role {:?}", new.role).to_lowercase(),
        };
        tracing::warn!(backend = %new.name, lag_bytes, lag_seconds, probes, reason = %reason, ?read_set, "replica leaves the read set");
    }
}

/// What every checker is given: where to send its results, and the daemon's backend TLS.
struct Checkers {
    probe_tx: mpsc::Sender<ProbeResult>,
    tls: Arc<CurrentBackendTls>,
}

/// Starts checkers for new or changed backends and stops those that went away.
fn sync_checkers(
    config: &Arc<Config>,
    checkers: &mut HashMap<String, (BackendConfig, u64, JoinHandle<()>)>,
    generation: &mut u64,
    to: &Checkers,
    health_changed: bool,
) {
    let wanted: HashSet<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    checkers.retain(|name, (_, _, h)| {
        let keep = wanted.contains(name.as_str());
        if !keep {
            h.abort();
        }
        keep
    });
    for b in &config.backends {
        let unchanged = checkers.get(&b.name).is_some_and(|(old, _, _)| {
            old.host == b.host && old.port == b.port && old.sslmode == b.sslmode
        });
        // A change of health settings restarts every checker so the new interval applies; a
        // change of [backend_tls] too, so that no connection made the old way stays.
        if unchanged && !health_changed {
            continue;
        }
        if let Some((_, _, h)) = checkers.remove(&b.name) {
            h.abort();
        }
        *generation += 1;
        let handle = tokio::spawn(run_checker(
            b.clone(),
            config.health.clone(),
            Arc::clone(&to.tls),
            *generation,
            to.probe_tx.clone(),
        ));
        checkers.insert(b.name.clone(), (b.clone(), *generation, handle));
    }
}

async fn run_checker(
    backend: BackendConfig,
    health: HealthConfig,
    tls: Arc<CurrentBackendTls>,
    generation: u64,
    tx: mpsc::Sender<ProbeResult>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(
            health.timeout,
            probe_once(&backend, &health, &tls, &mut client),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => {
                client = None;
                Err(e.to_string())
            }
            Err(_) => {
                client = None;
                Err(HealthError::Timeout(health.timeout).to_string())
            }
        };
        if tx
            .send((backend.name.clone(), generation, result))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Logs in to `database` on `host:port` as the health user (`health.user`), with the probes'
/// timeout and the backend's TLS (`sslmode`, and `[backend_tls]` as loaded by the daemon: no
/// file is read here). Also used by the proxy's function refresher, which reads `pg_proc` as
/// this user, and by its auth_query lookups.
pub async fn connect(
    host: &str,
    port: u16,
    database: &str,
    health: &HealthConfig,
    tls: (SslMode, &BackendTls),
) -> Result<tokio_postgres::Client, HealthError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(&health.user)
        .dbname(database)
        .application_name("pgcast-health")
        .connect_timeout(health.timeout);
    if let Some(p) = &health.password {
        cfg.password(p);
    }
    let (mode, backend_tls) = tls;
    let client_config = match mode {
        SslMode::Disable => None,
        _ => backend_tls.client_config(mode),
    };
    let client = match client_config {
        None => {
            let (client, connection) = cfg.connect(NoTls).await.map_err(HealthError::Connect)?;
            tokio::spawn(connection);
            client
        }
        Some(c) => {
            // tokio-postgres speaks the SSLRequest; the verifier in `c` checks what sslmode says.
            cfg.ssl_mode(if mode == SslMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone());
            let (client, connection) =
                cfg.connect(connector).await.map_err(HealthError::Connect)?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

async fn probe_once(
    backend: &BackendConfig,
    health: &HealthConfig,
    tls: &CurrentBackendTls,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<Probe, HealthError> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(
            connect(
                &backend.host,
                backend.port,
                &health.database,
                health,
                (backend.sslmode, &tls.current()),
            )
            .await?,
        );
    }
    let Some(c) = client.as_ref() else {
        return Err(HealthError::Timeout(health.timeout));
    };
    let row = c
        .query_one(PROBE_SQL, &[])
        .await
        .map_err(HealthError::Query)?;
    let in_recovery: bool = row.try_get(0).map_err(HealthError::Query)?;
    let lsn_text: Option<String> = row.try_get(1).map_err(HealthError::Query)?;
    let receive_text: Option<String> = row.try_get(2).map_err(HealthError::Query)?;
    let age: Option<f64> = row.try_get(3).map_err(HealthError::Query)?;
    let lsn = lsn_text
        .map(|t| parse_lsn(&t).ok_or(HealthError::BadLsn(t)))
        .transpose()?;
    let receive_lsn = receive_text
        .map(|t| parse_lsn(&t).ok_or(HealthError::BadLsn(t)))
        .transpose()?;
    Ok(Probe {
        in_recovery,
        lsn,
        receive_lsn,
        replay_age: age
            .filter(|a| a.is_finite())
            .map(|a| Duration::from_secs_f64(a.max(0.0))),
    })
}
