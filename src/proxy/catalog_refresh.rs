//! The function refresher: keeps each database's function volatility (the [`Catalogs`] the
//! classifier routes function calls by) in step with the primary's `pg_proc`.
//! It follows the primary named by health's [`ClusterView`] and logs in as the health user.
//! The daemon runs it on the health runtime, so that its CPU-bound logins (SCRAM) do not load
//! the proxy's workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::catalog::Catalogs;
use super::classify::FunctionInfo;
use crate::backend_tls::{BackendTls, CurrentBackendTls};
use crate::config::{Config, HealthConfig};
use crate::health::{self, ClusterView, HealthError};

/// Every function name, whether any function of that name is VOLATILE, and whether all of
/// them are built-ins in `pg_catalog` (only then do the configured overrides apply). Every name
/// is loaded, so that a name missing from the result is known to be new (and counts as a write).
const FUNCTIONS_SQL: &str = "SELECT proname::text, bool_or(provolatile = 'v'), \
     bool_and(pronamespace = 'pg_catalog'::regnamespace) FROM pg_proc GROUP BY proname";

/// When the catalog of a database in which a statement may have changed functions is
/// reloaded, after the statement was seen: soon after it ran, and again in case it ran in a
/// transaction that committed later (the regular refresh catches anything later still).
const RELOADS_AFTER_FUNCTION_DDL: [Duration; 2] =
    [Duration::from_millis(500), Duration::from_secs(5)];

/// At most one warning per database per this period about failing loads.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// Keeps each database's set of VOLATILE functions in step with the primary's `pg_proc`: when
/// a database is first used, whenever the primary changes, and every `health.function_refresh`.
/// A failed load is retried with a doubling delay (from `health.interval` up to 30 s, or the
/// refresh period if shorter), whatever else wakes the loop: a primary that refuses logins
/// (max_connections reached) must not get one from every balancer per health probe. Each
/// database backs off on its own: one the health user may not connect to does not hold back
/// the others.
///
/// Runs on `runtime`; the functions of the databases already in `catalogs` (the daemon adds
/// the health database) are loaded as soon as there is a primary.
pub fn spawn(
    runtime: &Handle,
    mut config_rx: watch::Receiver<Arc<Config>>,
    mut view_rx: watch::Receiver<Arc<ClusterView>>,
    catalogs: Arc<Catalogs>,
    tls: Arc<CurrentBackendTls>,
) -> JoinHandle<()> {
    runtime.spawn(async move {
        // database -> (primary it was loaded from, when)
        let mut loaded: HashMap<String, (String, tokio::time::Instant)> = HashMap::new();
        let mut retries: HashMap<String, LoadRetry> = HashMap::new();
        // database -> when to reload it after a statement that may have changed functions
        let mut reloads: HashMap<String, Vec<tokio::time::Instant>> = HashMap::new();
        loop {
            let now = tokio::time::Instant::now();
            for db in catalogs.take_functions_changed() {
                reloads.insert(db, RELOADS_AFTER_FUNCTION_DDL.map(|d| now + d).to_vec());
            }
            reloads.retain(|db, due| {
                if due.first().is_some_and(|t| *t <= now) {
                    due.remove(0);
                    loaded.remove(db);
                }
                !due.is_empty()
            });
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
                    match load_functions(host, *port, &db, &config, &tls.current()).await {
                        Ok(functions) => {
                            tracing::info!(primary = %name, database = %db, functions = functions.len(), "loaded functions");
                            catalogs.set_functions(&db, functions);
                            loaded.insert(db, (name.clone(), tokio::time::Instant::now()));
                            retry.succeeded();
                        }
                        Err(e) if is_missing_database(&e) => {
                            // A client asked for a database that does not exist: forget it, so it
                            // is tried again only if a client uses it again.
                            tracing::info!(primary = %name, database = %db, "database does not exist; forgetting its functions");
                            catalogs.forget(&db);
                            retries.remove(&db);
                            loaded.remove(&db);
                            reloads.remove(&db);
                        }
                        Err(e) => {
                            let delay = retry.failed(&config.health);
                            match retry.warn_now() {
                                Some(suppressed) => tracing::warn!(primary = %name, database = %db, error = %e, retry_in = ?delay, suppressed, "cannot load functions"),
                                None => tracing::debug!(primary = %name, database = %db, error = %e, retry_in = ?delay, "cannot load functions"),
                            }
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
            let wait = reloads
                .values()
                .filter_map(|due| due.first())
                .map(|t| t.saturating_duration_since(tokio::time::Instant::now()))
                .fold(wait, Duration::min);
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
    warned: Option<tokio::time::Instant>,
    suppressed: u32,
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
        self.warned = None;
        self.suppressed = 0;
    }

    /// Whether a failure should be logged as a warning now (at most one per [`WARN_EVERY`]),
    /// with the number of failures not warned about since the last warning.
    fn warn_now(&mut self) -> Option<u32> {
        let now = tokio::time::Instant::now();
        if self
            .warned
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.warned = Some(now);
        Some(std::mem::take(&mut self.suppressed))
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

/// SQLSTATE 3D000 invalid_catalog_name: the database does not exist.
fn is_missing_database(e: &HealthError) -> bool {
    match e {
        HealthError::Connect(e) | HealthError::Query(e) => {
            e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
        }
        _ => false,
    }
}

async fn load_functions(
    host: &str,
    port: u16,
    database: &str,
    config: &Config,
    backend_tls: &BackendTls,
) -> Result<HashMap<String, FunctionInfo>, HealthError> {
    let health = &config.health;
    let tls = (config.sslmode_of(host, port), backend_tls);
    let client = health::connect(host, port, database, health, tls).await?;
    let rows = tokio::time::timeout(health.timeout * 4, client.query(FUNCTIONS_SQL, &[]))
        .await
        .map_err(|_| HealthError::Timeout(health.timeout * 4))?
        .map_err(HealthError::Query)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let info = FunctionInfo {
                may_write: r.try_get(1).ok()?,
                only_pg_catalog: r.try_get(2).ok()?,
            };
            Some((r.try_get::<_, String>(0).ok()?, info))
        })
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

    #[tokio::test(start_paused = true)]
    async fn failure_warnings_are_rate_limited() {
        let mut r = LoadRetry::default();
        assert_eq!(r.warn_now(), Some(0), "the first failure warns");
        for _ in 0..19 {
            tokio::time::advance(Duration::from_secs(30)).await;
            assert_eq!(r.warn_now(), None);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(r.warn_now(), Some(19), "ten minutes later, with the count");
        r.succeeded();
        assert_eq!(r.warn_now(), Some(0), "a success resets it");
    }
}
