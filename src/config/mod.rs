//! Configuration: TOML parsed with serde (`deny_unknown_fields`) into raw structs, then validated
//! into typed values. Every error names the key and the line of the file it came from.

mod access;
mod anycast;
mod bgp;
mod cluster;
mod community;
mod peers;
mod pool;
pub mod reload;
mod secrets;
mod tls;
mod users;
pub use access::{AccessMethod, AccessRule, NameSet};
pub use anycast::{
    DrainConfig, HmacKeyPreparation, OspfAuth, OspfConfig, OspfExternal, OspfInterfaceConfig,
    OspfNetwork, PrefixConfig, Requirement, WhenUnhealthy,
};
pub use bgp::{BfdConfig, BgpConfig, BgpNeighborConfig};
pub use cluster::host_port;
pub use community::{LargeCommunity, StandardCommunity, AS_TRANS};
pub use peers::Peer;
pub use pool::{PoolConfig, PoolMode, ServerConnect};
pub use reload::{merge_reload, ReloadReport};
pub use tls::{BackendTlsConfig, ListenerTls, SslMode, TlsConfig};
pub use users::{AuthQueryConfig, ClientAuthMethod, PasswordHash, UserConfig};

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error(
        "{path}: mode {mode:04o}: {how}, but it holds secrets ({keys}); pgcast refuses it as \
         ssh refuses an open private key. Fix: chmod 600 {path} (or 640, owned by root and the \
         group pgcast runs as)"
    )]
    Exposed {
        path: String,
        mode: u32,
        how: &'static str,
        keys: String,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Role of a client listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Everything goes to the primary.
    Primary,
    /// Read-only, balanced over healthy replicas.
    Replica,
    /// Read/write split by parsing SQL.
    Auto,
}

impl fmt::Display for ListenerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerRole::Primary => "primary",
            ListenerRole::Replica => "replica",
            ListenerRole::Auto => "auto",
        })
    }
}

/// After a write, how long a session's reads stay on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadYourWrites {
    /// Until the end of the transaction that wrote (autocommit writes: not at all).
    Transaction,
    /// For the rest of the session.
    Session,
    /// For a time window after the last write.
    Window(Duration),
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    node: Option<Spanned<RawNode>>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pool: Option<Spanned<pool::RawPool>>,
    #[serde(default)]
    health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    routing: Option<Spanned<RawRouting>>,
    #[serde(default)]
    tls: Option<Spanned<tls::RawTls>>,
    #[serde(default)]
    backend_tls: Option<Spanned<tls::RawBackendTls>>,
    #[serde(default)]
    listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    backends: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    users: Vec<Spanned<users::RawUser>>,
    #[serde(default)]
    access: Vec<Spanned<access::RawAccess>>,
    #[serde(default)]
    auth_query: Option<Spanned<users::RawAuthQuery>>,
    #[serde(default)]
    ospf: Option<Spanned<anycast::RawOspf>>,
    #[serde(default)]
    prefix: Vec<Spanned<anycast::RawPrefix>>,
    #[serde(default)]
    drain: Option<Spanned<anycast::RawDrain>>,
    #[serde(default)]
    peers: Vec<Spanned<peers::RawPeer>>,
    #[serde(default)]
    bgp: Option<Spanned<bgp::RawBgp>>,
    #[serde(default)]
    bfd: Option<Spanned<bgp::RawBfd>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    /// 0..=255: identifies this balancer inside the cancel keys it issues.
    id: Option<i64>,
    name: Option<String>,
    speakers_realtime_priority: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_client_connections: Option<i64>,
    max_prelogin_connections: Option<i64>,
    max_prelogin_per_source: Option<i64>,
    startup_timeout_ms: Option<i64>,
    max_message_bytes: Option<i64>,
    connect_timeout_ms: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval_ms: Option<i64>,
    timeout_ms: Option<i64>,
    rise: Option<i64>,
    fall: Option<i64>,
    max_replica_lag_bytes: Option<i64>,
    max_replica_lag_ms: Option<i64>,
    replica_lag_return_percent: Option<i64>,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
    function_refresh_ms: Option<i64>,
    self_check: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    read_your_writes: Option<String>,
    read_your_writes_window_ms: Option<i64>,
    read_functions: Option<Vec<String>>,
    write_functions: Option<Vec<String>>,
    fallback_reads_to_primary: Option<bool>,
    statement_cache_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    address: String,
    role: ListenerRole,
    tls: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    host: String,
    port: Option<i64>,
    weight: Option<i64>,
    sslmode: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub node_id: u8,
    pub node_name: String,
    /// SCHED_RR priority of the thread that runs the OSPF, BGP and BFD speakers (0: the
    /// normal scheduler).
    pub speakers_realtime_priority: u8,
    pub admin_socket: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub limits: LimitsConfig,
    pub pool: PoolConfig,
    pub health: HealthConfig,
    pub routing: RoutingConfig,
    /// The certificate clients are offered (none: no TLS).
    pub tls: Option<TlsConfig>,
    /// TLS towards the backends.
    pub backend_tls: BackendTlsConfig,
    pub listeners: Vec<ListenerConfig>,
    pub backends: Vec<BackendConfig>,
    /// Shared (Arc) with the sessions of each user: a login takes a reference, not a copy.
    pub users: Vec<Arc<UserConfig>>,
    /// `[[access]]` rules, first match wins; none: each user's `auth` applies.
    pub access: Vec<AccessRule>,
    /// Where users not in `users` are looked up (none: they cannot log in).
    pub auth_query: Option<AuthQueryConfig>,
    /// What `check-config` and the daemon warn about (a valid file that is likely a mistake
    /// or a risk), each as `FILE:LINE: KEY: message`.
    pub warnings: Vec<String>,
    pub ospf: Option<OspfConfig>,
    pub prefixes: Vec<PrefixConfig>,
    pub drain: DrainConfig,
    /// Where CancelRequests for keys issued by other balancers are forwarded.
    pub peers: Vec<Peer>,
    pub bgp: Option<BgpConfig>,
    pub bfd: BfdConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Logged-in clients across all listeners (a slot is taken once authentication succeeded).
    pub max_client_connections: usize,
    /// Connections in start-up and authentication across all listeners, apart from the
    /// logged-in ones (`src/proxy/prelogin.rs`).
    pub max_prelogin_connections: usize,
    /// Of those, how many one source address (an IPv6 /64) may hold.
    pub max_prelogin_per_source: usize,
    pub startup_timeout: Duration,
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub max_replica_lag_bytes: Option<u64>,
    pub max_replica_lag: Option<Duration>,
    /// A replica that exceeded a lag limit (for `fall` probes) returns to the read set once its
    /// lag is at most this percentage of every limit (for `rise` probes): 1..=100.
    pub replica_lag_return_percent: u32,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub function_refresh: Duration,
    /// Whether each listener is probed through its own socket (a connection and an
    /// SSLRequest): a listener that does not answer cannot serve, whatever the backends say.
    pub self_check: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    pub read_your_writes: ReadYourWrites,
    pub read_functions: Vec<String>,
    pub write_functions: Vec<String>,
    pub fallback_reads_to_primary: bool,
    pub statement_cache_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub role: ListenerRole,
    pub tls: ListenerTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    /// Its own `sslmode`, else `[backend_tls]`'s.
    pub sslmode: SslMode,
}

/// Built-in VOLATILE functions that never write: they may run on a replica. Users extend or
/// shrink this with `routing.read_functions` (which replaces it when given). An entry applies
/// only to the `pg_catalog` function of that name: a user function of the same name in another
/// schema is judged by its own volatility. `pg_is_in_recovery` and `pg_last_*` are still sent
/// to the primary on `auto` listeners (they ask about the server's state) but do not count as
/// writes.
pub const DEFAULT_READ_FUNCTIONS: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "pg_sleep",
    "pg_is_in_recovery",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
];

/// Functions that must run on the primary connection although PostgreSQL does not mark them
/// VOLATILE (or that must be writes even before the functions are loaded):
/// `pg_backend_pid()` must return the PID the client got in BackendKeyData; the rest fail on a
/// hot standby (<https://www.postgresql.org/docs/15/hot-standby.html>: no transaction ID can
/// be assigned and no WAL written during recovery). `txid_current` and `pg_current_xact_id` are
/// STABLE but assign a transaction ID (PostgreSQL 15 standby: 25006 "cannot execute
/// pg_current_xact_id() during recovery"; their `_if_assigned` variants and
/// `txid_current_snapshot` work there); `pg_walfile_name[_offset]` are IMMUTABLE but refuse to
/// run during recovery (55000 "recovery is in progress"); tests/proxy.rs checks both. The
/// others are
/// VOLATILE already and listed so that they are writes before the load and in every schema.
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "pg_backend_pid",
    "txid_current",
    "pg_current_xact_id",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_notify",
    "nextval",
    "setval",
];

impl Config {
    /// The `sslmode` of the backend at `host:port` (`[backend_tls]`'s for an unknown one).
    pub fn sslmode_of(&self, host: &str, port: u16) -> SslMode {
        self.backends
            .iter()
            .find(|b| b.host == host && b.port == port)
            .map_or(self.backend_tls.sslmode, |b| b.sslmode)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // The file may hold passwords: its text is wiped once parsed.
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&zeroize::Zeroizing::new(text), path)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Validator { text, path: shown }.validate(raw, path)
    }

    pub fn user(&self, name: &str) -> Option<&Arc<UserConfig>> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

struct Validator<'a> {
    text: &'a str,
    path: String,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn ms(
        &self,
        span: &std::ops::Range<usize>,
        key: &str,
        value: Option<i64>,
        default_ms: u64,
        min_ms: u64,
    ) -> Result<Duration, ConfigError> {
        let v = value.unwrap_or(default_ms as i64);
        if v < min_ms as i64 {
            return Err(self.err(
                span.clone(),
                key,
                format!("must be at least {min_ms} ms, got {v}"),
            ));
        }
        Ok(Duration::from_millis(v as u64))
    }

    fn count(
        &self,
        span: &std::ops::Range<usize>,
        key: &str,
        value: Option<i64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(default as i64);
        if v < min as i64 || v > max as i64 {
            return Err(self.err(
                span.clone(),
                key,
                format!("must be between {min} and {max}, got {v}"),
            ));
        }
        Ok(v as u64)
    }

    fn validate(&self, raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let (node_span, node) = split(raw.node);
        let node_id = self.count(&node_span, "node.id", node.id, 0, 0, 255)? as u8;
        let node_name = node.name.unwrap_or_else(|| format!("pgcast-{node_id}"));
        let speakers_realtime_priority = self.count(
            &node_span,
            "node.speakers_realtime_priority",
            node.speakers_realtime_priority,
            10,
            0,
            99,
        )? as u8;

        let admin = raw.admin.ok_or_else(|| {
            self.err(
                0..0,
                "admin.socket",
                "missing: the [admin] section with `socket` is required",
            )
        })?;
        let admin_socket = PathBuf::from(&admin.get_ref().socket);
        if admin.get_ref().socket.is_empty() {
            return Err(self.err(admin.span(), "admin.socket", "must not be empty"));
        }

        let metrics_listen = match raw.metrics {
            Some(m) => match &m.get_ref().listen {
                Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|e| {
                    self.err(
                        m.span(),
                        "metrics.listen",
                        format!("not an address:port ({e})"),
                    )
                })?),
                None => None,
            },
            None => None,
        };

        let (ls, l) = split(raw.limits);
        let limits = LimitsConfig {
            max_client_connections: self.count(
                &ls,
                "limits.max_client_connections",
                l.max_client_connections,
                1000,
                1,
                1_000_000,
            )? as usize,
            // Twice the logged-in default: every logged-in client can reconnect at once (after
            // a failover or a restart) with room to spare.
            max_prelogin_connections: self.count(
                &ls,
                "limits.max_prelogin_connections",
                l.max_prelogin_connections,
                2048,
                1,
                1_000_000,
            )? as usize,
            // An application host reconnecting a large pool at once fits; one address takes at
            // most an eighth of the default budget, so filling it takes eight.
            max_prelogin_per_source: self.count(
                &ls,
                "limits.max_prelogin_per_source",
                l.max_prelogin_per_source,
                256,
                1,
                1_000_000,
            )? as usize,
            startup_timeout: self.ms(
                &ls,
                "limits.startup_timeout_ms",
                l.startup_timeout_ms,
                10_000,
                10,
            )?,
            // PostgreSQL itself caps a message at 1 GiB; a proxy should be stricter by default.
            max_message_bytes: self.count(
                &ls,
                "limits.max_message_bytes",
                l.max_message_bytes,
                64 << 20,
                1024,
                1 << 30,
            )? as usize,
            connect_timeout: self.ms(
                &ls,
                "limits.connect_timeout_ms",
                l.connect_timeout_ms,
                5_000,
                10,
            )?,
        };

        if limits.max_prelogin_per_source > limits.max_prelogin_connections {
            return Err(self.err(
                ls,
                "limits.max_prelogin_per_source",
                format!(
                    "{} is more than limits.max_prelogin_connections ({})",
                    limits.max_prelogin_per_source, limits.max_prelogin_connections
                ),
            ));
        }

        let pool = self.pool(raw.pool)?;

        let (hs, h) = split(raw.health);
        let health = HealthConfig {
            interval: self.ms(&hs, "health.interval_ms", h.interval_ms, 500, 10)?,
            timeout: self.ms(&hs, "health.timeout_ms", h.timeout_ms, 2_000, 10)?,
            rise: self.count(&hs, "health.rise", h.rise, 2, 1, 100)? as u32,
            fall: self.count(&hs, "health.fall", h.fall, 3, 1, 100)? as u32,
            max_replica_lag_bytes: match h.max_replica_lag_bytes {
                Some(v) if v < 0 => {
                    return Err(self.err(
                        hs.clone(),
                        "health.max_replica_lag_bytes",
                        "must not be negative",
                    ))
                }
                Some(v) => Some(v as u64),
                None => Some(16 << 20),
            },
            max_replica_lag: match h.max_replica_lag_ms {
                Some(v) if v < 0 => {
                    return Err(self.err(
                        hs.clone(),
                        "health.max_replica_lag_ms",
                        "must not be negative",
                    ))
                }
                Some(v) => Some(Duration::from_millis(v as u64)),
                None => Some(Duration::from_secs(10)),
            },
            replica_lag_return_percent: self.count(
                &hs,
                "health.replica_lag_return_percent",
                h.replica_lag_return_percent,
                80,
                1,
                100,
            )? as u32,
            user: h.user.unwrap_or_else(|| "postgres".to_string()),
            password: h.password,
            database: h.database.unwrap_or_else(|| "postgres".to_string()),
            function_refresh: self.ms(
                &hs,
                "health.function_refresh_ms",
                h.function_refresh_ms,
                60_000,
                100,
            )?,
            self_check: h.self_check.unwrap_or(true),
        };
        let (rs, r) = split(raw.routing);
        let read_your_writes = match r.read_your_writes.as_deref().unwrap_or("session") {
            "session" => ReadYourWrites::Session,
            "transaction" => ReadYourWrites::Transaction,
            "window" => ReadYourWrites::Window(self.ms(
                &rs,
                "routing.read_your_writes_window_ms",
                r.read_your_writes_window_ms,
                2_000,
                1,
            )?),
            other => {
                return Err(self.err(
                    rs,
                    "routing.read_your_writes",
                    format!("expected \"session\", \"transaction\" or \"window\", got {other:?}"),
                ))
            }
        };
        let routing = RoutingConfig {
            read_your_writes,
            read_functions: r.read_functions.unwrap_or_else(|| {
                DEFAULT_READ_FUNCTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            write_functions: r.write_functions.unwrap_or_else(|| {
                DEFAULT_WRITE_FUNCTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            fallback_reads_to_primary: r.fallback_reads_to_primary.unwrap_or(true),
            statement_cache_size: self.count(
                &rs,
                "routing.statement_cache_size",
                r.statement_cache_size,
                10_000,
                0,
                10_000_000,
            )? as usize,
        };

        let tls = self.tls(raw.tls)?;
        let listeners = self.listeners(raw.listeners, tls.is_some())?;
        let (backend_tls_span, backend_tls) = self.backend_tls(raw.backend_tls)?;
        let backends = self.backends(raw.backends, &backend_tls, backend_tls_span)?;
        let users = self.users(raw.users)?;
        let mut warnings = Vec::new();
        let access = self.access(raw.access, &listeners, &mut warnings)?;
        let auth_query = self.auth_query(raw.auth_query, &health.database)?;
        let ospf = self.ospf(raw.ospf)?;
        let names: Vec<String> = listeners.iter().map(|l| l.name.clone()).collect();
        let prefixes = self.prefixes(raw.prefix, &names, raw.bgp.is_some())?;
        let drain = self.drain(raw.drain)?;
        let peers = self.peers(raw.peers, node_id, &listeners, &prefixes)?;
        let ipv6_prefix = prefixes.iter().map(|p| p.address).find(IpAddr::is_ipv6);
        let bgp = self.bgp(raw.bgp, ospf.as_ref().map(|o| o.router_id), ipv6_prefix)?;
        let bfd = self.bfd(raw.bfd)?;

        Ok(Config {
            path: path.to_path_buf(),
            node_id,
            node_name,
            speakers_realtime_priority,
            admin_socket,
            metrics_listen,
            limits,
            pool,
            health,
            routing,
            tls,
            backend_tls,
            listeners,
            backends,
            users,
            access,
            auth_query,
            warnings,
            ospf,
            prefixes,
            drain,
            peers,
            bgp,
            bfd,
        })
    }
}

fn split<T: Default>(v: Option<Spanned<T>>) -> (std::ops::Range<usize>, T) {
    match v {
        Some(s) => (s.span(), s.into_inner()),
        None => (0..0, T::default()),
    }
}

#[cfg(test)]
mod tests;
