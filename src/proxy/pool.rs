//! Backend connections kept between client sessions.
//!
//! A connection is keyed by everything that shaped its session at start-up: the backend, the
//! user, the database and every other startup parameter the client sent (`DISCARD ALL` resets
//! a session to exactly those values, so a reused connection is indistinguishable from a new
//! one). Session pooling checks a connection out when a client session needs it and back in
//! when the session ends; a transaction-pooling mode would use the same check-out/check-in at
//! transaction boundaries, with the reset done per transaction instead of per session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stream::Writer;
use bytes::BytesMut;

use super::backend::{BackendReader, BackendStartup};
use super::message;
use super::server_budget::{BackendBudget, BudgetExhausted, ServerBudget, ServerPermit};
use super::stats::BackendCounters;
use super::stats::ProxyStats;
use super::ProxyError;
use crate::config::{PoolConfig, PoolMode, SslMode};

/// An authenticated backend connection, outside any session.
pub struct ServerConn {
    pub reader: BackendReader,
    pub wr: Writer,
    pub startup: BackendStartup,
    pub created: Instant,
    /// Its share of the backend's `pool.max_server_connections`, kept while idle too.
    pub permit: ServerPermit,
    /// Protocol-level prepared statements on it (name -> hash of the Parse), which the next
    /// session of a transaction pool may use; 0 for one whose text is unknown.
    pub prepared: HashMap<String, u64>,
}

/// What a connection needs before the next session may have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The end of a session: back to the start-up state.
    DiscardAll,
    /// The end of a transaction of a session that changed settings.
    Settings,
    /// The end of a transaction of a session that changed nothing outside it.
    Nothing,
}

/// Past this many, a transaction-pool connection's prepared statements are deallocated when
/// it comes back (a bound on server memory; they are prepared again when used).
const MAX_STATEMENTS_PER_CONNECTION: usize = 256;

impl ServerConn {
    /// Closes the connection politely (Terminate), without waiting.
    fn close(mut self) {
        let mut out = BytesMut::new();
        message::write_terminate(&mut out);
        self.wr.try_write_now(&out);
    }

    /// The peer has not closed the connection nor sent anything unexpected while idle.
    fn looks_alive(&mut self) -> bool {
        let mut probe = [0u8; 64];
        match self.reader.rd.try_read_now(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            // EOF, or a message nobody asked for (e.g. FATAL from an administrator's
            // pg_terminate_backend): not reusable.
            Ok(_) => false,
        }
    }
}

/// What [`Pool::acquire`] found.
pub enum Acquired {
    Pooled(ServerConn),
    /// The right to open a new connection.
    Open(ServerPermit),
}

/// What identifies interchangeable connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: String,
    pub host: String,
    pub port: u16,
    /// Startup parameters, user and database included, in the client's order.
    pub params: Vec<(String, String)>,
    /// How the connection was opened: one opened in clear text never serves a session that
    /// asks for TLS (after a reload changed it, say).
    pub sslmode: SslMode,
}

struct Idle {
    conn: ServerConn,
    since: Instant,
}

/// The idle connections of every key.
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    stats: Arc<ProxyStats>,
    /// Server connections per backend, in sessions and idle here.
    pub budget: ServerBudget,
    /// What logins of each key were told, for logins that open no connection.
    pub greetings: super::greeting::Greetings,
}

impl Pool {
    pub fn new(stats: Arc<ProxyStats>, max_server_connections: Option<usize>) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            stats,
            budget: ServerBudget::new(max_server_connections),
            greetings: Default::default(),
        })
    }

    /// Closes the longest-idle pooled connection to `backend` (of any user), freeing its
    /// share of the backend's budget. False if there was none.
    pub fn evict_idle(&self, backend: &str) -> bool {
        let evicted = {
            let mut map = self.lock();
            map.iter_mut()
                .filter(|(k, list)| k.backend == backend && !list.is_empty())
                .min_by_key(|(_, list)| list[0].since)
                .map(|(_, list)| list.remove(0).conn)
        };
        let Some(conn) = evicted else {
            return false;
        };
        self.count_idle(backend, -1);
        conn.close();
        true
    }

    /// Closes every idle connection (their TLS settings changed: the next session opens new
    /// ones the new way).
    pub fn close_all_idle(&self) {
        let backends: HashSet<String> = self.lock().keys().map(|k| k.backend.clone()).collect();
        for b in backends {
            while self.evict_idle(&b) {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_idle(&self, backend: &str, delta: i64) {
        self.stats
            .backend(backend)
            .idle_connections
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// The most recently used live connection for `key`, if any.
    pub fn checkout(&self, key: &PoolKey, cfg: &PoolConfig) -> Option<ServerConn> {
        if cfg.mode == PoolMode::None {
            return None;
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut map = self.lock();
            let list = map.get_mut(key)?;
            let mut found = None;
            while let Some(mut idle) = list.pop() {
                if expired(&idle, cfg, now) || !idle.conn.looks_alive() {
                    stale.push(idle.conn);
                    continue;
                }
                found = Some(idle.conn);
                break;
            }
            found
        };
        let taken = stale.len() as i64 + i64::from(found.is_some());
        self.count_idle(&key.backend, -taken);
        for c in stale {
            c.close();
        }
        if found.is_some() {
            self.stats.pool_reused.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Resets a connection a session no longer needs and keeps it for the next one; closes it
    /// if it cannot be reset cleanly or is not wanted.
    pub fn checkin(
        self: &Arc<Self>,
        key: PoolKey,
        mut conn: ServerConn,
        cfg: PoolConfig,
        how: Reset,
    ) {
        if cfg.mode == PoolMode::None
            || cfg.max_idle_per_key == 0
            || conn.created.elapsed() >= cfg.max_lifetime
        {
            conn.close();
            return;
        }
        let sql = match how {
            Reset::DiscardAll => "DISCARD ALL",
            // RESET ALL leaves the session authorization alone (DISCARD ALL resets it first).
            Reset::Settings if conn.prepared.len() > MAX_STATEMENTS_PER_CONNECTION => {
                "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL"
            }
            Reset::Settings => "SET SESSION AUTHORIZATION DEFAULT; RESET ALL",
            Reset::Nothing if conn.prepared.len() > MAX_STATEMENTS_PER_CONNECTION => {
                "DEALLOCATE ALL"
            }
            // The hot path of transaction pooling: no round trip.
            Reset::Nothing => return self.put(key, conn, &cfg),
        };
        if sql.contains("DISCARD ALL") || sql.contains("DEALLOCATE ALL") {
            conn.prepared.clear();
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            // Bounded: a backend that stops answering must not keep the task forever.
            let reset = tokio::time::timeout(Duration::from_secs(5), reset(conn, sql)).await;
            match reset {
                Ok(Ok(conn)) => pool.put(key, conn, &cfg),
                Ok(Err(e)) => tracing::debug!(backend = %key.backend, error = %e, "not pooled"),
                Err(_) => tracing::debug!(backend = %key.backend, "reset timed out; not pooled"),
            }
        });
    }

    fn put(&self, key: PoolKey, conn: ServerConn, cfg: &PoolConfig) {
        let backend = key.backend.clone();
        let rejected = {
            let mut map = self.lock();
            let list = map.entry(key).or_default();
            if list.len() >= cfg.max_idle_per_key {
                Some(conn)
            } else {
                list.push(Idle {
                    conn,
                    since: Instant::now(),
                });
                None
            }
        };
        match rejected {
            Some(c) => c.close(),
            None => {
                self.count_idle(&backend, 1);
                // A session waiting for this backend may take it (or close it for its own).
                if let Some(b) = self.budget.backend(&backend) {
                    b.freed.notify_one();
                }
            }
        }
    }

    /// A connection for `key`: a pooled one, or a permit to open one. At the backend's cap it
    /// closes an idle connection of another key, else waits for one to come back or close,
    /// in arrival order (a newcomer does not pass sessions already waiting), up to
    /// `cfg.checkout_timeout`.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        cfg: &PoolConfig,
        counters: &BackendCounters,
    ) -> Result<Acquired, BudgetExhausted> {
        let Some(budget) = self.budget.backend(&key.backend) else {
            return Ok(match self.checkout(key, cfg) {
                Some(c) => Acquired::Pooled(c),
                None => Acquired::Open(ServerPermit::unlimited()),
            });
        };
        let queue_empty = counters.clients_waiting.load(Ordering::Acquire) == 0;
        if queue_empty {
            if let Some(got) = self.take_now(key, cfg, &budget) {
                return Ok(got);
            }
        }
        let started = tokio::time::Instant::now();
        let deadline = started + cfg.checkout_timeout;
        counters.clients_waiting.fetch_add(1, Ordering::AcqRel);
        let got = loop {
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a connection freed meanwhile is not missed.
            freed.as_mut().enable();
            if let Some(got) = self.take_now(key, cfg, &budget) {
                break Some(got);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break None;
            }
        };
        counters.clients_waiting.fetch_sub(1, Ordering::AcqRel);
        let waited_ms = started.elapsed().as_millis() as u64;
        counters
            .longest_wait_ms
            .fetch_max(waited_ms, Ordering::Relaxed);
        got.ok_or_else(|| {
            counters.checkout_timeouts.fetch_add(1, Ordering::Relaxed);
            BudgetExhausted {
                backend: key.backend.clone(),
                cap: budget.cap(),
                waited_ms,
            }
        })
    }

    /// A pooled connection, a permit under the cap, or a permit freed by closing idle
    /// connections of other keys.
    fn take_now(
        &self,
        key: &PoolKey,
        cfg: &PoolConfig,
        budget: &Arc<BackendBudget>,
    ) -> Option<Acquired> {
        if let Some(c) = self.checkout(key, cfg) {
            return Some(Acquired::Pooled(c));
        }
        if let Some(p) = budget.try_take() {
            return Some(Acquired::Open(p));
        }
        while self.evict_idle(&key.backend) {
            if let Some(p) = budget.try_take() {
                return Some(Acquired::Open(p));
            }
        }
        None
    }

    /// Closes idle connections past their idle timeout or lifetime.
    pub fn prune(&self, cfg: &PoolConfig) {
        let now = Instant::now();
        let mut closed: Vec<(String, ServerConn)> = Vec::new();
        {
            let mut map = self.lock();
            for (key, list) in map.iter_mut() {
                let mut i = 0;
                while i < list.len() {
                    let drop_it = list
                        .get(i)
                        .is_some_and(|idle| expired(idle, cfg, now) || cfg.mode == PoolMode::None);
                    if drop_it {
                        let idle = list.swap_remove(i);
                        closed.push((key.backend.clone(), idle.conn));
                    } else {
                        i += 1;
                    }
                }
            }
            map.retain(|_, list| !list.is_empty());
        }
        for (backend, conn) in closed {
            self.count_idle(&backend, -1);
            conn.close();
        }
    }
}

fn expired(idle: &Idle, cfg: &PoolConfig, now: Instant) -> bool {
    now.duration_since(idle.since) >= cfg.idle_timeout
        || now.duration_since(idle.conn.created) >= cfg.max_lifetime
}

/// Returns the session to its start-up state: `DISCARD ALL` closes prepared statements,
/// portals, temporary tables, advisory locks and LISTENs and resets every setting; after a
/// transaction, `RESET ALL` undoes the client's session SETs (the transaction pool keeps the
/// prepared statements, which the next client may use). The ParameterStatus messages it
/// causes update what the next client will be told.
async fn reset(mut conn: ServerConn, sql: &str) -> Result<ServerConn, ProxyError> {
    let mut out = BytesMut::new();
    message::write_query(&mut out, sql);
    super::stream::send(&mut conn.wr, &out).await?;
    let mut failed = false;
    loop {
        let m = conn
            .reader
            .next()
            .await?
            .ok_or_else(|| ProxyError::BackendUnavailable("closed during reset".into()))?;
        match m.tag {
            b'E' => failed = true,
            b'S' => update_parameter(&mut conn.startup.parameter_status, m),
            b'Z' => {
                let idle = m.body().first() == Some(&b'I');
                if failed || !idle {
                    return Err(ProxyError::BackendUnavailable(format!(
                        "{sql} did not leave an idle session"
                    )));
                }
                return Ok(conn);
            }
            // CommandComplete, notices, notifications sent before the UNLISTEN took effect.
            _ => {}
        }
    }
}

/// Replaces (or adds) the ParameterStatus with the same name as `m`.
fn update_parameter(list: &mut Vec<message::Message>, m: message::Message) {
    let name = |msg: &message::Message| -> Vec<u8> {
        msg.body()
            .split(|b| *b == 0)
            .next()
            .unwrap_or_default()
            .to_vec()
    };
    let new_name = name(&m);
    match list.iter_mut().find(|old| name(old) == new_name) {
        Some(old) => *old = m,
        None => list.push(m),
    }
}

/// Closes expired idle connections every second.
pub fn spawn_pruner(
    pool: Arc<Pool>,
    config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let cfg = config.borrow().pool.clone();
            pool.prune(&cfg);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(backend: &str) -> PoolKey {
        PoolKey {
            backend: backend.into(),
            host: "127.0.0.1".into(),
            port: 5432,
            params: vec![("user".into(), "u".into())],
            sslmode: SslMode::Disable,
        }
    }

    fn capped(timeout_ms: u64) -> (Arc<Pool>, PoolConfig, Arc<BackendCounters>) {
        let stats = Arc::new(ProxyStats::default());
        let counters = stats.backend("pg1");
        let cfg = PoolConfig {
            mode: PoolMode::Session,
            connect: crate::config::ServerConnect::OnDemand,
            max_idle_per_key: 10,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            max_server_connections: Some(1),
            checkout_timeout: Duration::from_millis(timeout_ms),
        };
        (Pool::new(stats, Some(1)), cfg, counters)
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_sessions_wait_in_line_then_get_53300_naming_the_backend() {
        let (pool, cfg, counters) = capped(500);
        let Ok(Acquired::Open(first)) = pool.acquire(&key("pg1"), &cfg, &counters).await else {
            panic!("under the cap");
        };
        let (p, c, k) = (Arc::clone(&pool), cfg.clone(), Arc::clone(&counters));
        let waiter = tokio::spawn(async move { p.acquire(&key("pg1"), &c, &k).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiting session gets the freed share"
        );
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);

        let Ok(Acquired::Open(_held)) = pool.acquire(&key("pg1"), &cfg, &counters).await else {
            panic!("free again");
        };
        let Err(full) = pool.acquire(&key("pg1"), &cfg, &counters).await else {
            panic!("past the cap");
        };
        assert_eq!(
            (full.backend.as_str(), full.cap, full.waited_ms),
            ("pg1", 1, 500)
        );
        assert!(full.to_string().contains("backend pg1 "), "{full}");
        assert_eq!(counters.checkout_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(counters.longest_wait_ms.load(Ordering::Relaxed), 500);
        // Another backend has a budget of its own.
        let other = pool
            .acquire(&key("pg2"), &cfg, &stats_of(&pool, "pg2"))
            .await;
        assert!(matches!(other, Ok(Acquired::Open(_))));
    }

    fn stats_of(pool: &Pool, backend: &str) -> Arc<BackendCounters> {
        pool.stats.backend(backend)
    }

    fn status(name: &str, value: &str) -> message::Message {
        let mut out = BytesMut::new();
        message::write_message(&mut out, b'S', |b| {
            message::put_cstr(b, name);
            message::put_cstr(b, value);
        });
        message::decode_message(&mut out, 1 << 20)
            .ok()
            .flatten()
            .expect("a complete message")
    }

    #[test]
    fn parameter_status_is_replaced_by_name() {
        let mut list = vec![
            status("application_name", "psql"),
            status("TimeZone", "UTC"),
        ];
        update_parameter(&mut list, status("application_name", ""));
        update_parameter(&mut list, status("is_superuser", "off"));
        let names: Vec<Vec<u8>> = list.iter().map(|m| m.body().to_vec()).collect();
        assert_eq!(
            names,
            vec![
                b"application_name\0\0".to_vec(),
                b"TimeZone\0UTC\0".to_vec(),
                b"is_superuser\0off\0".to_vec()
            ]
        );
    }
}
