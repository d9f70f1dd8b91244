//! The function refresher: keeps each database's set of VOLATILE functions (the
//! [`Catalogs`] the classifier routes function calls by) in step with the primary's `pg_proc`.
//! It follows the primary named by health's [`ClusterView`] and logs in as the health user.
//! The daemon runs it on the health runtime, so that its CPU-bound logins (SCRAM) do not load
//! the proxy's workers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::catalog::Catalogs;
use crate::config::{Config, HealthConfig};
use crate::health::{self, ClusterView, HealthError};

const VOLATILE_SQL: &str = "SELECT DISTINCT proname::text FROM pg_proc WHERE provolatile = 'v'";

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
) -> JoinHandle<()> {
    runtime.spawn(async move {
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
    let client = health::connect(host, port, database, health).await?;
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
