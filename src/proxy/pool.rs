//! Backend connections kept between client sessions.
//!
//! A connection is keyed by everything that shaped its session at start-up: the backend, the
//! user, the database and every other startup parameter the client sent (`DISCARD ALL` resets
//! a session to exactly those values, so a reused connection is indistinguishable from a new
//! one). Session pooling checks a connection out when a client session needs it and back in
//! when the session ends; a transaction-pooling mode would use the same check-out/check-in at
//! transaction boundaries, with the reset done per transaction instead of per session.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::stream::Writer;
use bytes::BytesMut;

use super::backend::{BackendReader, BackendStartup};
use super::cancel::BackendCancelKey;
use super::message;
use super::server_budget::{ServerBudget, ServerPermit};
use super::slot::PendingUnit;
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
    /// Its shares of `pool.max_server_connections` and
    /// `pool.max_server_connections_per_user_database`, kept while idle too.
    pub permit: ServerPermit,
    /// Protocol-level prepared statements on it (name -> hash of the Parse), which the next
    /// session of a transaction pool may use; 0 for one whose text is unknown.
    pub prepared: HashMap<String, u64>,
    /// Its cancel key, made once at connect: a transaction pool hands the connection to a
    /// session per transaction, which only registers this key.
    pub cancel_key: Arc<BackendCancelKey>,
    /// Its backend's counters, so the pool counts it idle without looking the backend up.
    pub counters: Arc<BackendCounters>,
    /// The room of the reply queue of the session holding it (`Slot::pending`), kept while it
    /// is pooled: a transaction pool builds a slot around it every transaction, and would
    /// otherwise allocate that queue every time.
    pub pending_room: VecDeque<PendingUnit>,
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
    Pooled(Box<ServerConn>),
    /// The right to open a new connection.
    Open(ServerPermit),
}

/// A client's startup parameters, shared by its session and the keys of its connections:
/// a transaction-mode session builds a pool key for every transaction.
pub type StartupParams = Arc<[(String, String)]>;

/// What identifies interchangeable connections. Built with [`PoolKey::new`], which hashes it
/// once: the pool looks a key up twice per transaction in transaction mode, and hashing the
/// startup parameters each time cost more than the rest of the lookup.
#[derive(Debug, Clone)]
pub struct PoolKey {
    pub backend: String,
    pub host: String,
    pub port: u16,
    /// Startup parameters, user and database included, in the client's order.
    pub params: StartupParams,
    /// How the connection was opened: one opened in clear text never serves a session that
    /// asks for TLS (after a reload changed it, say).
    pub sslmode: SslMode,
    hash: u64,
}

/// Keyed per process, like the maps' own hashers: keys come from clients' parameters.
fn key_hasher() -> &'static foldhash::fast::RandomState {
    static HASHER: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    HASHER.get_or_init(Default::default)
}

impl PoolKey {
    pub fn new(
        backend: &str,
        host: &str,
        port: u16,
        params: StartupParams,
        sslmode: SslMode,
    ) -> PoolKey {
        let hash = key_hasher().hash_one((backend, host, port, &*params, sslmode));
        PoolKey {
            backend: backend.to_string(),
            host: host.to_string(),
            port,
            params,
            sslmode,
            hash,
        }
    }

    /// The user and database its connections log in as; the database defaults to the user's
    /// name, as PostgreSQL's does.
    pub fn user_database(&self) -> (&str, &str) {
        let get = |name: &str| {
            self.params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let user = get("user").unwrap_or_default();
        (user, get("database").unwrap_or(user))
    }

    fn same_user_database(&self, other: &PoolKey) -> bool {
        self.backend == other.backend && self.user_database() == other.user_database()
    }
}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PoolKey {
    /// The same key object (a session's key and the pool's copy it adopted) needs no
    /// comparison of the parameters.
    fn eq(&self, other: &PoolKey) -> bool {
        std::ptr::eq(self, other)
            || (self.hash == other.hash
                && self.port == other.port
                && self.sslmode == other.sslmode
                && self.backend == other.backend
                && self.host == other.host
                && (Arc::ptr_eq(&self.params, &other.params) || self.params == other.params))
    }
}

impl Eq for PoolKey {}

/// Also holds, with no connection idle, the keys sessions still use (see [`Pool::intern`]).
type IdleMap = HashMap<Arc<PoolKey>, Vec<Idle>, foldhash::fast::RandomState>;

struct Idle {
    conn: Box<ServerConn>,
    since: Instant,
}

/// The idle connections of every key.
pub struct Pool {
    /// Hashed with foldhash (keyed per process): looked up twice per transaction in
    /// transaction mode, where SipHash over the startup parameters was 15 % of pgcast's
    /// instructions (callgrind).
    idle: Mutex<IdleMap>,
    stats: Arc<ProxyStats>,
    /// Server connections per backend and per (backend, user, database), in sessions and
    /// idle here.
    pub budget: ServerBudget,
    /// What logins of each key were told, for logins that open no connection.
    pub greetings: super::greeting::Greetings,
}

impl Pool {
    pub fn new(stats: Arc<ProxyStats>, budget: ServerBudget) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(IdleMap::default()),
            stats,
            budget,
            greetings: Default::default(),
        })
    }

    /// Closes the longest-idle pooled connection to `backend` (of any user), freeing its
    /// share of the backend's budget. False if there was none.
    pub fn evict_idle(&self, backend: &str) -> bool {
        self.evict_idle_where(|k| k.backend == backend)
    }

    /// Closes the longest-idle pooled connection of the keys `which` picks. False if there
    /// was none.
    fn evict_idle_where(&self, which: impl Fn(&PoolKey) -> bool) -> bool {
        let evicted = {
            let mut map = self.lock();
            map.iter_mut()
                .filter(|(k, list)| which(k) && !list.is_empty())
                .min_by_key(|(_, list)| list[0].since)
                .map(|(_, list)| list.remove(0).conn)
        };
        let Some(conn) = evicted else {
            return false;
        };
        count_idle(&conn, -1);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool's own copy of `key`, for a session to look its connections up with: keys
    /// that are the same object compare without comparing their parameters. The copy stays
    /// while a session holds it or a connection of it is idle (`prune`).
    pub fn intern(&self, key: PoolKey) -> Arc<PoolKey> {
        let mut map = self.lock();
        if let Some((own, _)) = map.get_key_value(&key) {
            return Arc::clone(own);
        }
        let key = Arc::new(key);
        map.insert(Arc::clone(&key), Vec::new());
        key
    }

    /// The most recently used live connection for `key`, if any.
    pub fn checkout(&self, key: &PoolKey, cfg: &PoolConfig) -> Option<Box<ServerConn>> {
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
        for c in stale {
            count_idle(&c, -1);
            c.close();
        }
        if let Some(c) = &found {
            count_idle(c, -1);
            self.stats.pool_reused.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Resets a connection a session no longer needs and keeps it for the next one; closes it
    /// if it cannot be reset cleanly or is not wanted.
    pub fn checkin(
        self: &Arc<Self>,
        key: Arc<PoolKey>,
        mut conn: Box<ServerConn>,
        cfg: &PoolConfig,
        how: Reset,
    ) {
        let now = Instant::now();
        if cfg.mode == PoolMode::None
            || cfg.max_idle_per_key == 0
            || now.duration_since(conn.created) >= cfg.max_lifetime
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
            Reset::Nothing => return self.put(key, conn, cfg, now),
        };
        if sql.contains("DISCARD ALL") || sql.contains("DEALLOCATE ALL") {
            conn.prepared.clear();
        }
        let (pool, cfg) = (Arc::clone(self), cfg.clone());
        tokio::spawn(async move {
            // Bounded: a backend that stops answering must not keep the task forever.
            let reset = tokio::time::timeout(Duration::from_secs(5), reset(conn, sql)).await;
            match reset {
                Ok(Ok(conn)) => pool.put(key, conn, &cfg, Instant::now()),
                Ok(Err(e)) => tracing::debug!(backend = %key.backend, error = %e, "not pooled"),
                Err(_) => tracing::debug!(backend = %key.backend, "reset timed out; not pooled"),
            }
        });
    }

    fn put(&self, key: Arc<PoolKey>, conn: Box<ServerConn>, cfg: &PoolConfig, now: Instant) {
        let mut map = self.lock();
        // Looked up before `entry`, which would take (and here drop) the key.
        let list = match map.get_mut(&*key) {
            Some(list) => list,
            None => map.entry(key).or_default(),
        };
        if list.len() >= cfg.max_idle_per_key {
            drop(map);
            return conn.close();
        }
        count_idle(&conn, 1);
        // A session waiting on either of its caps may take it (or close it for its own). Woken
        // under this lock (which the queues' holders never wait for), it looks once the
        // connection is in.
        let budgets = conn.permit.budgets();
        for b in [&budgets.backend, &budgets.user_database]
            .into_iter()
            .flatten()
        {
            b.waiters.wake_first();
        }
        list.push(Idle { conn, since: now });
    }

    /// Closes idle connections past their idle timeout or lifetime.
    pub fn prune(&self, cfg: &PoolConfig) {
        let now = Instant::now();
        let mut closed: Vec<Box<ServerConn>> = Vec::new();
        {
            let mut map = self.lock();
            for list in map.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    let drop_it = list
                        .get(i)
                        .is_some_and(|idle| expired(idle, cfg, now) || cfg.mode == PoolMode::None);
                    if drop_it {
                        let idle = list.swap_remove(i);
                        closed.push(idle.conn);
                    } else {
                        i += 1;
                    }
                }
            }
            // A key a session still holds stays: it looks its connections up with this copy.
            map.retain(|key, list| !list.is_empty() || Arc::strong_count(key) > 1);
        }
        for conn in closed {
            count_idle(&conn, -1);
            conn.close();
        }
    }
}

fn count_idle(conn: &ServerConn, delta: i64) {
    conn.counters
        .idle_connections
        .fetch_add(delta, Ordering::Relaxed);
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
async fn reset(mut conn: Box<ServerConn>, sql: &str) -> Result<Box<ServerConn>, ProxyError> {
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
            pool.budget.forget_unused();
        }
    });
}

#[path = "pool_acquire.rs"]
mod acquire;

#[cfg(test)]
mod tests {
    use super::*;

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
