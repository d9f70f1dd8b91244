//! Counters the proxy keeps for `pgcast status` and the metrics endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Per-backend counters.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Server connections in use by client sessions.
    pub server_connections: AtomicI64,
    /// Server connections idle in the pool.
    pub idle_connections: AtomicI64,
    /// Units of work (queries or extended-protocol batches) routed here.
    pub queries: AtomicU64,
}

/// Per-listener counters.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub clients: AtomicI64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    backends: Mutex<BTreeMap<String, Arc<BackendCounters>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerCounters>>>,
    pub routed_primary: AtomicU64,
    pub routed_replica: AtomicU64,
    /// Sessions that got a pooled connection instead of opening one.
    pub pool_reused: AtomicU64,
    errors_by_class: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub server_connections: i64,
    pub idle_connections: i64,
    pub queries: u64,
}

impl ProxyStats {
    pub fn backend(&self, name: &str) -> Arc<BackendCounters> {
        let mut m = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(name.to_string()).or_default())
    }

    pub fn listener(&self, name: &str) -> Arc<ListenerCounters> {
        let mut m = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(name.to_string()).or_default())
    }

    /// Counts an error sent to a client, by SQLSTATE class (first two characters).
    pub fn count_error(&self, sqlstate: &str) {
        let class = sqlstate.get(..2).unwrap_or("??").to_string();
        let mut m = self
            .errors_by_class
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(class).or_default() += 1;
    }

    pub fn backend_snapshot(&self, name: &str) -> CountersSnapshot {
        let c = self.backend(name);
        CountersSnapshot {
            server_connections: c.server_connections.load(Ordering::Relaxed),
            idle_connections: c.idle_connections.load(Ordering::Relaxed),
            queries: c.queries.load(Ordering::Relaxed),
        }
    }

    pub fn errors_by_class(&self) -> BTreeMap<String, u64> {
        self.errors_by_class
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// Decrements a gauge when dropped.
pub struct GaugeGuard(pub Arc<BackendCounters>);

impl GaugeGuard {
    pub fn new(c: Arc<BackendCounters>) -> Self {
        c.server_connections.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(c)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.server_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements a listener's client gauge when dropped.
pub struct ClientGuard(pub Arc<ListenerCounters>);

impl ClientGuard {
    pub fn new(c: Arc<ListenerCounters>) -> Self {
        c.clients.fetch_add(1, Ordering::Relaxed);
        c.accepted.fetch_add(1, Ordering::Relaxed);
        ClientGuard(c)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
