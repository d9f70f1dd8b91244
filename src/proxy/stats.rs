//! Counters the proxy keeps for `pgcast status` and the metrics endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Per-backend counters.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Server connections in use by client sessions.
    pub server_connections: AtomicI64,
    /// Server connections idle in the pool.
    pub idle_connections: AtomicI64,
    /// Units of work (queries or extended-protocol batches) routed here.
    pub queries: AtomicU64,
    /// Sessions waiting for a server connection (a cap reached).
    pub clients_waiting: AtomicI64,
    /// Of those, the ones held back by their user and database's cap
    /// (`pool.max_server_connections_per_user_database`).
    pub clients_waiting_user_database: AtomicI64,
    /// Sessions that waited `pool.checkout_timeout_ms` in vain (53300).
    pub checkout_timeouts: AtomicU64,
    /// Of those, the ones their user and database's cap held back.
    pub checkout_timeouts_user_database: AtomicU64,
    /// The longest wait for a server connection so far, in ms (granted or not).
    pub longest_wait_ms: AtomicU64,
}

/// Per-listener counters.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Logged-in client sessions now.
    pub clients: AtomicI64,
    /// Client sessions that logged in.
    pub accepted: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    backends: Mutex<BTreeMap<String, Arc<BackendCounters>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerCounters>>>,
    pub routed_primary: AtomicU64,
    pub routed_replica: AtomicU64,
    /// Sessions that got a pooled connection instead of opening one.
    pub pool_reused: AtomicU64,
    /// Units a replica refused as writes, run again on the primary.
    pub retried_on_primary: AtomicU64,
    /// Transaction pooling: connections given back between transactions.
    pub transaction_checkins: AtomicU64,
    /// Transaction pooling: sessions that created state that cannot move and so keep their
    /// connections.
    pub pinned_sessions: AtomicU64,
    errors_by_class: Mutex<BTreeMap<String, u64>>,
    pub cancels: CancelCounters,
    pub refused: RefusedCounters,
    pub startup_failures: StartupFailureCounters,
}

/// How a connection ended before it logged in (other than refused at accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupFailure {
    /// Wrong password, unknown user (28P01).
    AuthFailed,
    /// Not the PostgreSQL start-up protocol, or a start-up pgcast refuses (08P01, 0A000, 28000).
    Protocol,
    /// Start-up not finished within `limits.startup_timeout_ms` (57014).
    Timeout,
    /// The client closed the connection, or it failed, during start-up.
    Closed,
}

/// Connections that ended before logging in, by how.
#[derive(Debug, Default)]
pub struct StartupFailureCounters {
    pub auth_failed: AtomicU64,
    pub protocol: AtomicU64,
    pub timeout: AtomicU64,
    pub closed: AtomicU64,
}

impl StartupFailureCounters {
    pub fn count(&self, how: StartupFailure) {
        let c = match how {
            StartupFailure::AuthFailed => &self.auth_failed,
            StartupFailure::Protocol => &self.protocol,
            StartupFailure::Timeout => &self.timeout,
            StartupFailure::Closed => &self.closed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StartupFailureCounts {
        StartupFailureCounts {
            auth_failed: self.auth_failed.load(Ordering::Relaxed),
            protocol: self.protocol.load(Ordering::Relaxed),
            timeout: self.timeout.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }
}

/// Connections that ended before logging in, as reported by `pgcast status` and the metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StartupFailureCounts {
    pub auth_failed: u64,
    pub protocol: u64,
    pub timeout: u64,
    pub closed: u64,
}

/// Why a connection was refused with 53300 (too many connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// At accept: `limits.max_prelogin_connections` connections were in start-up already.
    PreLoginFull,
    /// At accept: its source held `limits.max_prelogin_per_source` of them already.
    PreLoginPerSource,
    /// After authentication: `limits.max_client_connections` clients were logged in.
    ClientsFull,
}

/// Refused connections by reason.
#[derive(Debug, Default)]
pub struct RefusedCounters {
    pub prelogin_full: AtomicU64,
    pub prelogin_per_source: AtomicU64,
    pub clients_full: AtomicU64,
}

impl RefusedCounters {
    pub fn count(&self, why: Refusal) {
        let c = match why {
            Refusal::PreLoginFull => &self.prelogin_full,
            Refusal::PreLoginPerSource => &self.prelogin_per_source,
            Refusal::ClientsFull => &self.clients_full,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RefusedCounts {
        RefusedCounts {
            prelogin_full: self.prelogin_full.load(Ordering::Relaxed),
            prelogin_per_source: self.prelogin_per_source.load(Ordering::Relaxed),
            clients_full: self.clients_full.load(Ordering::Relaxed),
        }
    }
}

/// Refused connections by reason, as reported by `pgcast status` and the metrics endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RefusedCounts {
    pub prelogin_full: u64,
    pub prelogin_per_source: u64,
    pub clients_full: u64,
}

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// A session of this balancer held the key.
    Local,
    /// Handed on to the peer that issued the key.
    Forwarded,
    /// The issuing peer could not be reached.
    ForwardFailed,
    /// Nobody we know holds the key; dropped.
    Unknown,
    /// This balancer was already forwarding the same key; dropped (a repeat, or a loop through
    /// wrong peer addresses).
    Duplicate,
}

/// CancelRequests by outcome.
#[derive(Debug, Default)]
pub struct CancelCounters {
    pub local: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failed: AtomicU64,
    pub unknown: AtomicU64,
    pub duplicate: AtomicU64,
}

impl ProxyStats {
    pub fn count_retry(&self) {
        self.retried_on_primary.fetch_add(1, Ordering::Relaxed);
    }
}

impl CancelCounters {
    pub fn count(&self, outcome: CancelOutcome) {
        let c = match outcome {
            CancelOutcome::Local => &self.local,
            CancelOutcome::Forwarded => &self.forwarded,
            CancelOutcome::ForwardFailed => &self.forward_failed,
            CancelOutcome::Unknown => &self.unknown,
            CancelOutcome::Duplicate => &self.duplicate,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CancelCounts {
        CancelCounts {
            local: self.local.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forward_failed: self.forward_failed.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
        }
    }
}

/// CancelRequests by outcome, as reported by `pgcast status` and the metrics endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CancelCounts {
    pub local: u64,
    pub forwarded: u64,
    pub forward_failed: u64,
    pub unknown: u64,
    pub duplicate: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub server_connections: i64,
    pub idle_connections: i64,
    pub queries: u64,
    pub clients_waiting: i64,
    pub clients_waiting_user_database: i64,
    pub checkout_timeouts: u64,
    pub checkout_timeouts_user_database: u64,
    pub longest_wait_ms: u64,
}

impl ProxyStats {
    pub fn backend(&self, name: &str) -> Arc<BackendCounters> {
        let mut m = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: this runs for every transaction in transaction mode,
        // and the name is allocated only the first time.
        if let Some(c) = m.get(name) {
            return Arc::clone(c);
        }
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
            clients_waiting: c.clients_waiting.load(Ordering::Relaxed),
            clients_waiting_user_database: c.clients_waiting_user_database.load(Ordering::Relaxed),
            checkout_timeouts: c.checkout_timeouts.load(Ordering::Relaxed),
            checkout_timeouts_user_database: c
                .checkout_timeouts_user_database
                .load(Ordering::Relaxed),
            longest_wait_ms: c.longest_wait_ms.load(Ordering::Relaxed),
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
