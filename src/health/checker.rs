//! The health actor: checker tasks that probe backends, and the supervisor that owns the
//! [`ClusterState`], applies config reloads and publishes the [`ClusterView`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use super::cluster::{parse_lsn, ClusterState, ClusterView, Probe};
use super::self_check::{spawn_listener_checks, SelfCheckResult};
use super::HealthError;
use crate::config::{BackendConfig, Config, HealthConfig};
use crate::proxy::catalog::Catalogs;

/// One query answers everything we need on primaries and replicas alike.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     pg_last_wal_receive_lsn()::text, \
     EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

const VOLATILE_SQL: &str = "SELECT DISTINCT proname::text FROM pg_proc WHERE provolatile = 'v'";

type ProbeResult = (String, u64, Result<Probe, String>);

/// Starts the health actor: backend checkers, and a self-check of each bound listener
/// (`listeners`: name and bound address; none are checked while `paused` is true). Returns
/// the verdict channel and the supervisor's task, which runs until the config channel
/// closes: the daemon treats its end as fatal, and every reader of the verdict channel must
/// treat the channel's closing as "unhealthy".
pub fn spawn(
    mut config_rx: watch::Receiver<Arc<Config>>,
    catalogs: Arc<Catalogs>,
    listeners: Vec<(String, SocketAddr)>,
    paused: watch::Receiver<bool>,
) -> (watch::Receiver<Arc<ClusterView>>, JoinHandle<()>) {
    let config = config_rx.borrow_and_update().clone();
    let mut state = ClusterState::new(&config);
    let (view_tx, view_rx) = watch::channel(Arc::new(state.view()));
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(256);
    let (self_tx, mut self_rx) = mpsc::channel::<SelfCheckResult>(64);
    let self_checks = spawn_listener_checks(listeners, config_rx.clone(), paused, self_tx);

    let supervisor = tokio::spawn(async move {
        let mut checkers: HashMap<String, (BackendConfig, u64, JoinHandle<()>)> = HashMap::new();
        let mut generation = 0u64;
        let mut config = config;
        sync_checkers(&config, &mut checkers, &mut generation, &probe_tx, false);
        let _functions = spawn_function_refresher(config_rx.clone(), view_tx.subscribe(), catalogs);
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
                    let health_changed = new_config.health != config.health;
                    config = new_config;
                    state.reconfigure(&config);
                    sync_checkers(&config, &mut checkers, &mut generation, &probe_tx, health_changed);
                    publish(&view_tx, &state);
                }
                never = crate::fault::panic_when_triggered("health") => never,
            }
        }
        for (_, (_, _, h)) in checkers {
            h.abort();
        }
        for h in self_checks {
            h.abort();
        }
    });
    (view_rx, supervisor)
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
    if old.read_set != new.read_set {
        tracing::info!(read_set = ?new.read_set, "read set changed");
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

/// Starts checkers for new or changed backends and stops those that went away.
fn sync_checkers(
    config: &Arc<Config>,
    checkers: &mut HashMap<String, (BackendConfig, u64, JoinHandle<()>)>,
    generation: &mut u64,
    probe_tx: &mpsc::Sender<ProbeResult>,
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
        let unchanged = checkers
            .get(&b.name)
            .is_some_and(|(old, _, _)| old.host == b.host && old.port == b.port);
        // A change of health settings restarts every checker so the new interval applies.
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
            *generation,
            probe_tx.clone(),
        ));
        checkers.insert(b.name.clone(), (b.clone(), *generation, handle));
    }
}

async fn run_checker(
    backend: BackendConfig,
    health: HealthConfig,
    generation: u64,
    tx: mpsc::Sender<ProbeResult>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result =
            match tokio::time::timeout(health.timeout, probe_once(&backend, &health, &mut client))
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

async fn connect(
    host: &str,
    port: u16,
    database: &str,
    health: &HealthConfig,
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
    let (client, connection) = cfg.connect(NoTls).await.map_err(HealthError::Connect)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn probe_once(
    backend: &BackendConfig,
    health: &HealthConfig,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<Probe, HealthError> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(connect(&backend.host, backend.port, &health.database, health).await?);
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

/// Keeps each database's set of VOLATILE functions in step with the primary's `pg_proc`: when
/// a database is first used, whenever the primary changes, and every `health.function_refresh`.
/// A failed load is retried with a doubling delay (from `health.interval` up to 30 s, or the
/// refresh period if shorter), whatever else wakes the loop: a primary that refuses logins
/// (max_connections reached) must not get one from every balancer per health probe. Each
/// database backs off on its own: one the health user may not connect to does not hold back
/// the others.
fn spawn_function_refresher(
    mut config_rx: watch::Receiver<Arc<Config>>,
    mut view_rx: watch::Receiver<Arc<ClusterView>>,
    catalogs: Arc<Catalogs>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // database -> (primary it was loaded from, when)
        let mut loaded: HashMap<String, (String, tokio::time::Instant)> = HashMap::new();
        let mut retries: HashMap<String, LoadRetry> = HashMap::new();
        loop {
            let config = config_rx.borrow_and_update().clone();
            let primary = view_rx
                .borrow_and_update()
                .primary_backend()
                .map(|b| (b.name.clone(), b.host.clone(), b.port));
            let is_fresh = |loaded: &HashMap<String, (String, tokio::time::Instant)>,
                            db: &str,
                            primary: &str| {
                loaded.get(db).is_some_and(|(from, at)| {
                    from == primary && at.elapsed() < config.health.function_refresh
                })
            };
            let mut all_loaded = false;
            if let Some((name, host, port)) = &primary {
                for (db, _) in catalogs.databases() {
                    let retry = retries.entry(db.clone()).or_default();
                    retry.follow_primary(name);
                    if is_fresh(&loaded, &db, name) || !retry.due() {
                        continue;
                    }
                    match load_volatile(host, *port, &db, &config.health).await {
                        Ok(set) => {
                            tracing::info!(primary = %name, database = %db, functions = set.len(), "loaded volatile functions");
                            catalogs.set_volatile(&db, set);
                            loaded.insert(db, (name.clone(), tokio::time::Instant::now()));
                            retry.succeeded();
                        }
                        Err(e) => {
                            let delay = retry.failed(&config.health);
                            tracing::warn!(primary = %name, database = %db, error = %e, retry_in = ?delay, "cannot load volatile functions");
                        }
                    }
                }
                all_loaded = catalogs
                    .databases()
                    .iter()
                    .all(|(db, _)| is_fresh(&loaded, db, name));
            }
            let wait = if all_loaded {
                config.health.function_refresh
            } else {
                // The soonest retry among the databases backing off.
                let soonest = retries.values().filter_map(LoadRetry::until_due).min();
                soonest
                    .unwrap_or_default()
                    .max(config.health.interval.max(Duration::from_millis(200)))
            };
            tokio::select! {
                r = view_rx.changed() => if r.is_err() { return },
                r = config_rx.changed() => {
                    if r.is_err() { return }
                    catalogs.set_overrides(&config_rx.borrow().routing);
                    loaded.clear();
                }
                _ = catalogs.new_database.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// When the function refresher may try a failed load again.
#[derive(Debug, Default)]
struct LoadRetry {
    primary: Option<String>,
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl LoadRetry {
    /// A new primary is worth a try at once.
    fn follow_primary(&mut self, name: &str) {
        if self.primary.as_deref() != Some(name) {
            self.primary = Some(name.to_string());
            self.succeeded();
        }
    }

    fn due(&self) -> bool {
        self.next.is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    /// How long until the next try, while backing off.
    fn until_due(&self) -> Option<Duration> {
        self.next
            .map(|t| t.saturating_duration_since(tokio::time::Instant::now()))
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// Records a failure; returns the delay before the next try.
    fn failed(&mut self, health: &HealthConfig) -> Duration {
        let base = health.interval.max(Duration::from_millis(200));
        let cap = health
            .function_refresh
            .min(Duration::from_secs(30))
            .max(base);
        self.failures = self.failures.saturating_add(1);
        let delay = base
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(cap);
        self.next = Some(tokio::time::Instant::now() + delay);
        delay
    }
}

async fn load_volatile(
    host: &str,
    port: u16,
    database: &str,
    health: &HealthConfig,
) -> Result<HashSet<String>, HealthError> {
    let client = connect(host, port, database, health).await?;
    let rows = tokio::time::timeout(health.timeout * 4, client.query(VOLATILE_SQL, &[]))
        .await
        .map_err(|_| HealthError::Timeout(health.timeout * 4))?
        .map_err(HealthError::Query)?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(interval_ms: u64, refresh_ms: u64) -> HealthConfig {
        let cfg = Config::parse(
            &format!(
                "[admin]\nsocket = \"/tmp/x.sock\"\n[health]\ninterval_ms = {interval_ms}\nfunction_refresh_ms = {refresh_ms}\n[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nrole = \"auto\"\n[[backends]]\nname = \"pg1\"\nhost = \"h\"\n"
            ),
            std::path::Path::new("t.toml"),
        )
        .expect("valid");
        cfg.health
    }

    #[tokio::test]
    async fn failed_loads_back_off_doubling_up_to_a_cap_and_a_new_primary_resets() {
        let h = health(200, 60_000);
        let mut r = LoadRetry::default();
        r.follow_primary("pg1");
        assert!(r.due());
        let delays: Vec<u64> = (0..10).map(|_| r.failed(&h).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert!(!r.due(), "the last failure set the next try 30 s away");
        assert!(r.until_due().is_some_and(|d| d > Duration::from_secs(29)));
        r.follow_primary("pg1");
        assert!(!r.due(), "the same primary: still waiting");
        r.follow_primary("pg2");
        assert!(r.due(), "a new primary is tried at once");
        // A refresh period shorter than 30 s caps the delay; never below the interval.
        let h = health(500, 2_000);
        let mut r = LoadRetry::default();
        let delays: Vec<u64> = (0..4).map(|_| r.failed(&h).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 2000]);
        r.succeeded();
        assert!(r.due());
        assert_eq!(r.until_due(), None, "not backing off");
    }
}
