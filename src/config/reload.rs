//! What a reload (SIGHUP) may change in a running pgcast: a pure merge of the running and the
//! new configuration that keeps, section by section, what only a restart can change, and says
//! by name what it applied and what it did not. Nothing that changed is silently ignored.

use serde::{Deserialize, Serialize};

use super::Config;

/// What one reload did, for the log and `pgcast status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Seconds since the Unix epoch when the reload was attempted.
    pub at_unix: u64,
    /// Sections that changed and are in force now.
    pub applied: Vec<String>,
    /// Sections that changed but keep their running value until pgcast restarts.
    pub restart_needed: Vec<String>,
    /// Why the file could not be loaded at all (the running configuration stays).
    pub error: Option<String>,
    /// What the file asks for but could not be put in force, each with why (e.g. a
    /// certificate file that does not load: the running one stays).
    #[serde(default)]
    pub failed: Vec<String>,
}

/// Whether the running pgcast can apply a change of a section without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    Live,
    Restart,
}

/// Merges `new` into the running `old`: sections that changed and can be applied live come
/// from `new`; the others keep `old`'s value and are named in `restart_needed`.
pub fn merge_reload(old: &Config, mut new: Config) -> (Config, ReloadReport) {
    let mut report = ReloadReport::default();
    // Listed field by field, without `..`: a new field of `Config` does not compile until it
    // is sorted here into live or restart.
    let Config {
        path: _,
        node_id: _,
        node_name: _,
        speakers_realtime_priority: _,
        admin_socket: _,
        metrics_listen: _,
        limits: _,
        pool: _,
        health: _,
        routing: _,
        tls: _,
        backend_tls: _,
        listeners: _,
        backends: _,
        users: _,
        access: _,
        auth_query: _,
        warnings: _,
        ospf: _,
        prefixes: _,
        drain: _,
        peers: _,
        bgp: _,
        bfd: _,
    } = old;
    let mut section = |name: &str, changed: bool, apply: Apply| {
        if changed {
            match apply {
                Apply::Live => report.applied.push(name.to_string()),
                Apply::Restart => report.restart_needed.push(name.to_string()),
            }
        }
        changed && apply == Apply::Restart
    };
    let node_changed = new.node_id != old.node_id
        || new.node_name != old.node_name
        || new.speakers_realtime_priority != old.speakers_realtime_priority;
    if section("[node]", node_changed, Apply::Restart) {
        new.node_id = old.node_id;
        new.node_name = old.node_name.clone();
        new.speakers_realtime_priority = old.speakers_realtime_priority;
    }
    if section(
        "[admin] socket",
        new.admin_socket != old.admin_socket,
        Apply::Restart,
    ) {
        new.admin_socket = old.admin_socket.clone();
    }
    if section(
        "[metrics] listen",
        new.metrics_listen != old.metrics_listen,
        Apply::Restart,
    ) {
        new.metrics_listen = old.metrics_listen;
    }
    if section(
        "[limits] max_client_connections",
        new.limits.max_client_connections != old.limits.max_client_connections,
        Apply::Restart,
    ) {
        new.limits.max_client_connections = old.limits.max_client_connections;
    }
    section("[limits]", new.limits != old.limits, Apply::Live);
    // The caps are sized once, at start: open connections hold shares of them.
    if section(
        "[pool] max_server_connections",
        new.pool.max_server_connections != old.pool.max_server_connections,
        Apply::Restart,
    ) {
        new.pool.max_server_connections = old.pool.max_server_connections;
    }
    if section(
        "[pool] max_server_connections_per_user_database",
        new.pool.max_server_connections_per_user_database
            != old.pool.max_server_connections_per_user_database,
        Apply::Restart,
    ) {
        new.pool.max_server_connections_per_user_database =
            old.pool.max_server_connections_per_user_database;
    }
    section("[pool]", new.pool != old.pool, Apply::Live);
    section("[health]", new.health != old.health, Apply::Live);
    if section(
        "[routing] statement_cache_size",
        new.routing.statement_cache_size != old.routing.statement_cache_size,
        Apply::Restart,
    ) {
        new.routing.statement_cache_size = old.routing.statement_cache_size;
    }
    section("[routing]", new.routing != old.routing, Apply::Live);
    // The files are read again at every SIGHUP anyway (certificate rotation); the daemon
    // reports that reading.
    section("[tls]", new.tls != old.tls, Apply::Live);
    // For connections opened from then on; the files are read again like [tls]'s.
    section(
        "[backend_tls]",
        new.backend_tls != old.backend_tls,
        Apply::Live,
    );
    if section(
        "[[listener]]",
        new.listeners != old.listeners,
        Apply::Restart,
    ) {
        new.listeners = old.listeners.clone();
    }
    section("[[backend]]", new.backends != old.backends, Apply::Live);
    section("[[user]]", new.users != old.users, Apply::Live);
    // Start-up reads the rules from the configuration snapshot of each new connection.
    section("[[access]]", new.access != old.access, Apply::Live);
    // The lookup cache is emptied when the query changes (proxy::auth_query).
    section(
        "[auth_query]",
        new.auth_query != old.auth_query,
        Apply::Live,
    );
    if section("[ospf]", new.ospf != old.ospf, Apply::Restart) {
        new.ospf = old.ospf.clone();
    }
    if section("[[prefix]]", new.prefixes != old.prefixes, Apply::Restart) {
        new.prefixes = old.prefixes.clone();
    }
    section("[drain]", new.drain != old.drain, Apply::Live);
    section("[[peer]]", new.peers != old.peers, Apply::Live);
    if section("[bgp]", new.bgp != old.bgp, Apply::Restart) {
        new.bgp = old.bgp.clone();
    }
    // BFD's timers are renegotiated with a Poll Sequence (RFC 5880 §6.8.3): the daemon hands
    // them to the running sessions.
    section("[bfd]", new.bfd != old.bfd, Apply::Live);
    (new, report)
}
