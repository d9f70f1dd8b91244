//! The status document served on the admin socket, and its rendering as a table.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::anycast::AnycastStatusSource;
use crate::config::{Config, ListenerRole, ReloadReport};
use crate::health::{ClusterView, Role};
use crate::proxy::server_budget::PairAtCap;
use crate::proxy::stats::{CancelCounts, RefusedCounts, StartupFailureCounts};
use crate::proxy::ProxyContext;

/// Where the status document comes from: owned by the daemon, which wires the parts; none of
/// the parts knows the others' status.
pub struct StatusSources {
    pub config: watch::Receiver<Arc<Config>>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    pub proxy: Arc<ProxyContext>,
    pub anycast: AnycastStatusSource,
    /// The last SIGHUP's outcome (None until the first).
    pub reload: watch::Receiver<Option<ReloadReport>>,
}

impl StatusSources {
    /// The document as of now.
    pub fn current(&self) -> Status {
        let config = self.config.borrow().clone();
        let view = self.cluster.borrow().clone();
        let mut status = Status::collect(&config, &view, &self.proxy);
        status.routing = self.anycast.get();
        status.reload = self.reload.borrow().clone();
        status
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node: String,
    /// Every listener can do its full job and there is no split brain.
    pub healthy: bool,
    pub primary: Option<String>,
    pub split_brain: Vec<String>,
    pub warnings: Vec<String>,
    pub listeners: Vec<ListenerStatus>,
    pub backends: Vec<BackendStatus>,
    pub routed: RoutedCounts,
    pub errors_by_sqlstate_class: std::collections::BTreeMap<String, u64>,
    pub statement_cache: CacheStatus,
    pub routing: AnycastStatus,
    /// CancelRequests by outcome (absent in the documents of older versions).
    #[serde(default)]
    pub cancel_requests: CancelCounts,
    /// Connections refused with 53300, by reason (absent in the documents of older versions).
    #[serde(default)]
    pub refused_connections: RefusedCounts,
    /// Connections in start-up and authentication now (absent in older documents).
    #[serde(default)]
    pub prelogin_connections: u64,
    /// Connections that ended before logging in, by how (absent in older documents).
    #[serde(default)]
    pub startup_failures: StartupFailureCounts,
    /// The last reload: what it applied and what waits for a restart (absent before the
    /// first SIGHUP, and in the documents of older versions).
    #[serde(default)]
    pub reload: Option<ReloadReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerStatus {
    pub name: String,
    pub address: String,
    pub role: ListenerRole,
    pub clients: i64,
    pub can_read: bool,
    pub can_write: bool,
    pub reason: String,
    /// The listener answered its self-check (`health.self_check`); absent in older documents.
    #[serde(default = "accepting_by_default")]
    pub accepting: bool,
}

fn accepting_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub role: String,
    pub up: bool,
    pub in_read_set: bool,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub weight: u32,
    /// Server connections in use by client sessions.
    pub server_connections: i64,
    /// Server connections idle in the pool.
    #[serde(default)]
    pub idle_connections: i64,
    /// Sessions waiting for a server connection (a cap reached).
    #[serde(default)]
    pub clients_waiting: i64,
    /// Of those, the ones held back by `pool.max_server_connections_per_user_database`.
    #[serde(default)]
    pub clients_waiting_user_database: i64,
    /// Sessions refused with 53300 after `pool.checkout_timeout_ms`.
    #[serde(default)]
    pub checkout_timeouts: u64,
    /// Of those, the ones `pool.max_server_connections_per_user_database` held back.
    #[serde(default)]
    pub checkout_timeouts_user_database: u64,
    /// The users and databases whose connections to this backend are at
    /// `pool.max_server_connections_per_user_database` now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_databases_at_cap: Vec<PairAtCap>,
    /// The longest wait for a server connection so far, in ms.
    #[serde(default)]
    pub longest_wait_ms: u64,
    pub queries: u64,
    pub last_error: Option<String>,
    /// Why an up replica is not in the read set, e.g. the lag limit it exceeded (absent when
    /// it is, and in the documents of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_set_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RoutedCounts {
    pub primary: u64,
    pub replica: u64,
    /// Client sessions served by a pooled backend connection.
    #[serde(default)]
    pub pool_reused: u64,
    /// Units a replica refused as writes (misclassified reads), run again on the primary.
    #[serde(default)]
    pub retried_on_primary: u64,
    /// Transaction pooling: connections given back between transactions.
    #[serde(default)]
    pub transaction_checkins: u64,
    /// Transaction pooling: sessions pinned to their connections by state that cannot move.
    #[serde(default)]
    pub pinned_sessions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CacheStatus {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    /// The primary's list of VOLATILE functions is known (until then every function call is
    /// treated as a possible write).
    pub functions_loaded: bool,
}

pub use crate::anycast::AnycastStatus;

impl Status {
    /// Builds the document from the current configuration, health view and the proxy's
    /// counters; [`StatusSources::current`] adds the anycast part and the last reload.
    pub fn collect(config: &Config, view: &ClusterView, ctx: &ProxyContext) -> Status {
        let listeners: Vec<ListenerStatus> = config
            .listeners
            .iter()
            .map(|l| {
                let v = view.listener(&l.name);
                ListenerStatus {
                    name: l.name.clone(),
                    address: l.address.to_string(),
                    role: l.role,
                    clients: ctx.stats.listener(&l.name).clients.load(Ordering::Relaxed),
                    can_read: v.is_some_and(|v| v.can_read),
                    can_write: v.is_some_and(|v| v.can_write),
                    reason: v
                        .map(|v| v.full_reason())
                        .unwrap_or_else(|| "no verdict yet".into()),
                    accepting: v.is_some_and(|v| v.accepting),
                }
            })
            .collect();
        let backends = view
            .backends
            .iter()
            .map(|b| {
                let c = ctx.stats.backend_snapshot(&b.name);
                BackendStatus {
                    name: b.name.clone(),
                    address: crate::config::host_port(&b.host, b.port),
                    role: match (b.role, b.up) {
                        (Role::Primary, _) => "primary".into(),
                        (Role::Replica, _) => "replica".into(),
                        (Role::Unknown, _) => "unknown".into(),
                    },
                    up: b.up,
                    in_read_set: b.in_read_set,
                    lag_bytes: b.lag_bytes,
                    lag_seconds: b.lag_seconds,
                    weight: b.weight,
                    server_connections: c.server_connections,
                    idle_connections: c.idle_connections,
                    clients_waiting: c.clients_waiting,
                    clients_waiting_user_database: c.clients_waiting_user_database,
                    checkout_timeouts: c.checkout_timeouts,
                    checkout_timeouts_user_database: c.checkout_timeouts_user_database,
                    user_databases_at_cap: ctx.pool.budget.pairs_at_cap(&b.name),
                    longest_wait_ms: c.longest_wait_ms,
                    queries: c.queries,
                    last_error: b.last_error.clone(),
                    read_set_reason: b.read_set_reason.clone(),
                }
            })
            .collect();
        let mut warnings = Vec::new();
        if !view.split_brain.is_empty() {
            warnings.push(format!(
                "SPLIT BRAIN: {} all claim to be primary; writes are refused",
                view.split_brain.join(", ")
            ));
        }
        let healthy = view.split_brain.is_empty()
            && listeners.iter().all(|l| {
                l.accepting
                    && match l.role {
                        ListenerRole::Replica => l.can_read,
                        ListenerRole::Primary | ListenerRole::Auto => l.can_read && l.can_write,
                    }
            });
        let (entries, hits, misses, functions_loaded) = ctx.catalogs.stats();
        Status {
            node: config.node_name.clone(),
            healthy,
            primary: view.primary.clone(),
            split_brain: view.split_brain.clone(),
            warnings,
            listeners,
            backends,
            routed: RoutedCounts {
                primary: ctx.stats.routed_primary.load(Ordering::Relaxed),
                replica: ctx.stats.routed_replica.load(Ordering::Relaxed),
                pool_reused: ctx.stats.pool_reused.load(Ordering::Relaxed),
                retried_on_primary: ctx.stats.retried_on_primary.load(Ordering::Relaxed),
                transaction_checkins: ctx.stats.transaction_checkins.load(Ordering::Relaxed),
                pinned_sessions: ctx.stats.pinned_sessions.load(Ordering::Relaxed),
            },
            errors_by_sqlstate_class: ctx.stats.errors_by_class(),
            statement_cache: CacheStatus {
                entries,
                hits,
                misses,
                functions_loaded,
            },
            routing: AnycastStatus::default(),
            cancel_requests: ctx.stats.cancels.snapshot(),
            refused_connections: ctx.stats.refused.snapshot(),
            prelogin_connections: ctx.prelogin.in_flight() as u64,
            startup_failures: ctx.stats.startup_failures.snapshot(),
            reload: None,
        }
    }

    /// A table for people, in the spirit of `patronictl list`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pgcast {} — {}",
            self.node,
            if self.healthy { "healthy" } else { "DEGRADED" }
        );
        for w in &self.warnings {
            let _ = writeln!(s, "!! {w}");
        }
        if let Some(r) = &self.reload {
            reload_text(r, &mut s);
        }
        let _ = writeln!(s, "\nListeners");
        let _ = writeln!(
            s,
            "  {:<12} {:<22} {:<8} {:>7}  {:<6} {:<5} {:<5}  reason",
            "name", "address", "role", "clients", "accept", "read", "write"
        );
        for l in &self.listeners {
            let _ = writeln!(
                s,
                "  {:<12} {:<22} {:<8} {:>7}  {:<6} {:<5} {:<5}  {}",
                l.name,
                l.address,
                l.role.to_string(),
                l.clients,
                yes_no(l.accepting),
                yes_no(l.can_read),
                yes_no(l.can_write),
                l.reason
            );
        }
        let _ = writeln!(s, "\nBackends");
        let _ = writeln!(
            s,
            "  {:<10} {:<22} {:<8} {:<6} {:<5} {:>12} {:>9} {:>6} {:>6} {:>5} {:>9}",
            "name",
            "address",
            "role",
            "health",
            "reads",
            "lag bytes",
            "lag s",
            "weight",
            "active",
            "idle",
            "queries"
        );
        for b in &self.backends {
            let _ = writeln!(
                s,
                "  {:<10} {:<22} {:<8} {:<6} {:<5} {:>12} {:>9} {:>6} {:>6} {:>5} {:>9}",
                b.name,
                b.address,
                b.role,
                if b.up { "up" } else { "DOWN" },
                yes_no(b.in_read_set),
                b.lag_bytes
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                b.lag_seconds
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                b.weight,
                b.server_connections,
                b.idle_connections,
                b.queries
            );
            if let Some(e) = &b.last_error {
                let _ = writeln!(s, "    last error: {e}");
            }
            if let Some(r) = &b.read_set_reason {
                let _ = writeln!(s, "    not in the read set: {r}");
            }
            if b.clients_waiting > 0 || b.checkout_timeouts > 0 {
                let _ = writeln!(
                    s,
                    "    server connections full: {} waiting now ({} at their user and database's cap), {} refused (53300; {} at their user and database's cap), longest wait {} ms",
                    b.clients_waiting,
                    b.clients_waiting_user_database,
                    b.checkout_timeouts,
                    b.checkout_timeouts_user_database,
                    b.longest_wait_ms
                );
            }
            if !b.user_databases_at_cap.is_empty() {
                let pairs: Vec<String> = b
                    .user_databases_at_cap
                    .iter()
                    .map(|p| format!("{:?}/{:?}", p.user, p.database))
                    .collect();
                let _ = writeln!(
                    s,
                    "    at pool.max_server_connections_per_user_database (user/database): {}",
                    pairs.join(", ")
                );
            }
        }
        let _ = writeln!(
            s,
            "\nRouted units: primary {}, replica {} (refused by a replica as writes and re-run on the primary: {}); sessions on pooled connections {}; statement cache {} entries ({} hits, {} misses); volatile functions {}",
            self.routed.primary,
            self.routed.replica,
            self.routed.retried_on_primary,
            self.routed.pool_reused,
            self.statement_cache.entries,
            self.statement_cache.hits,
            self.statement_cache.misses,
            if self.statement_cache.functions_loaded { "loaded" } else { "NOT loaded (all function calls go to the primary)" }
        );
        if self.routed.transaction_checkins > 0 || self.routed.pinned_sessions > 0 {
            let _ = writeln!(
                s,
                "Transaction pool: {} connections given back between transactions; {} sessions pinned to their connections",
                self.routed.transaction_checkins, self.routed.pinned_sessions
            );
        }
        let c = &self.cancel_requests;
        let _ = writeln!(
            s,
            "Cancel requests: local {}, forwarded {}, forward failed {}, unknown {}, duplicate {}",
            c.local, c.forwarded, c.forward_failed, c.unknown, c.duplicate
        );
        let r = &self.refused_connections;
        let _ = writeln!(
            s,
            "Connections in start-up: {}; refused (53300): pre-login budget full {}, per-source limit {}, logged-in clients full {}",
            self.prelogin_connections, r.prelogin_full, r.prelogin_per_source, r.clients_full
        );
        let f = &self.startup_failures;
        let _ = writeln!(
            s,
            "Ended before login: authentication failed {}, bad start-up {}, timed out {}, closed by the client {}",
            f.auth_failed, f.protocol, f.timeout, f.closed
        );
        crate::anycast::render::routing_text(&self.routing, &mut s);
        s
    }

    /// Process exit code for `pgcast status`: 0 healthy, 1 degraded.
    pub fn exit_code(&self) -> i32 {
        if self.healthy {
            0
        } else {
            1
        }
    }
}

/// The last reload, when it left something unapplied (or failed); silent otherwise.
fn reload_text(r: &ReloadReport, s: &mut String) {
    if let Some(e) = &r.error {
        let _ = writeln!(s, "!! last reload failed (running configuration kept): {e}");
    }
    if !r.restart_needed.is_empty() {
        let _ = writeln!(
            s,
            "!! changed in the file but not applied (restart needed): {}",
            r.restart_needed.join(", ")
        );
    }
    for f in &r.failed {
        let _ = writeln!(s, "!! last reload could not apply: {f}");
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_status_without_read_set_reason_still_parses() {
        let old = r#"{"name":"pg2","address":"h:5432","role":"replica","up":true,
            "in_read_set":false,"lag_bytes":5,"lag_seconds":0.5,"weight":1,
            "server_connections":0,"queries":0,"last_error":null}"#;
        let b: BackendStatus = serde_json::from_str(old).expect("older document");
        assert_eq!(b.read_set_reason, None);
        let json = serde_json::to_string(&b).unwrap();
        assert!(
            !json.contains("read_set_reason"),
            "absent when none: {json}"
        );
        let with = BackendStatus {
            read_set_reason: Some("replica lag: x".into()),
            ..b
        };
        let back: BackendStatus =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
