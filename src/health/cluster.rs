//! The cluster as the health checks see it: a pure aggregate of per-backend probe results.
//!
//! Roles are discovered, never configured: a backend that answers `pg_is_in_recovery() = false`
//! is a primary. Exactly one up primary is required for writes; two or more is a split brain and
//! no writes are routed to any of them.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, HealthConfig, ListenerRole};

use super::hysteresis::Hysteresis;

/// What one successful probe of a backend returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub in_recovery: bool,
    /// Primary: `pg_current_wal_lsn()`; replica: `pg_last_wal_replay_lsn()`.
    pub lsn: Option<u64>,
    /// Replica: `pg_last_wal_receive_lsn()`.
    pub receive_lsn: Option<u64>,
    /// Replica: `now() - pg_last_xact_replay_timestamp()`.
    pub replay_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    Unknown,
}

/// One backend in the published view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub up: bool,
    pub role: Role,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub in_read_set: bool,
    pub last_error: Option<String>,
}

/// What one listener can do right now: what the backends allow (`can_read`, `can_write`,
/// `reason`) and whether the listener itself answers (`accepting`, from the self-check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerVerdict {
    pub name: String,
    pub role: ListenerRole,
    pub can_read: bool,
    pub can_write: bool,
    pub reason: String,
    /// The last self-checks (after rise/fall) reached the listener; always true when
    /// `health.self_check` is off.
    pub accepting: bool,
    /// Why the listener is not accepting (the last failed self-check, or none yet).
    pub accept_error: Option<String>,
}

impl ListenerVerdict {
    /// `reason`, preceded by the self-check's failure when there is one.
    pub fn full_reason(&self) -> String {
        match (&self.accept_error, self.accepting) {
            (Some(e), false) => format!("not accepting connections: {e}"),
            _ => self.reason.clone(),
        }
    }
}

/// A listener's self-check state.
#[derive(Debug)]
struct ListenerState {
    name: String,
    role: ListenerRole,
    probe: Hysteresis,
    last_error: Option<String>,
}

/// The verdict published on the health `watch` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ClusterView {
    pub backends: Vec<BackendView>,
    pub primary: Option<String>,
    /// Names of backends that all claim to be primary (empty when fine).
    pub split_brain: Vec<String>,
    pub read_set: Vec<String>,
    pub listeners: Vec<ListenerVerdict>,
}

impl ClusterView {
    pub fn backend(&self, name: &str) -> Option<&BackendView> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn primary_backend(&self) -> Option<&BackendView> {
        self.primary.as_deref().and_then(|p| self.backend(p))
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerVerdict> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

#[derive(Debug)]
struct BackendState {
    name: String,
    host: String,
    port: u16,
    weight: u32,
    hysteresis: Hysteresis,
    last: Option<Probe>,
    last_error: Option<String>,
}

/// Aggregates probe results into a [`ClusterView`].
#[derive(Debug)]
pub struct ClusterState {
    backends: Vec<BackendState>,
    health: HealthConfig,
    listeners: Vec<ListenerState>,
    fallback_reads_to_primary: bool,
}

impl ClusterState {
    pub fn new(cfg: &Config) -> Self {
        let mut s = ClusterState {
            backends: Vec::new(),
            health: cfg.health.clone(),
            listeners: Vec::new(),
            fallback_reads_to_primary: cfg.routing.fallback_reads_to_primary,
        };
        s.reconfigure(cfg);
        s
    }

    /// Applies a new configuration, keeping the state of backends that remain.
    pub fn reconfigure(&mut self, cfg: &Config) {
        let mut old = std::mem::take(&mut self.backends);
        for b in &cfg.backends {
            let mut state = match old.iter().position(|o| o.name == b.name) {
                Some(i) => old.swap_remove(i),
                None => BackendState {
                    name: b.name.clone(),
                    host: b.host.clone(),
                    port: b.port,
                    weight: b.weight,
                    hysteresis: Hysteresis::new(cfg.health.rise, cfg.health.fall),
                    last: None,
                    last_error: None,
                },
            };
            if state.host != b.host || state.port != b.port {
                // A different server under the same name: start from scratch.
                state.hysteresis = Hysteresis::new(cfg.health.rise, cfg.health.fall);
                state.last = None;
            }
            state.host = b.host.clone();
            state.port = b.port;
            state.weight = b.weight;
            state
                .hysteresis
                .set_thresholds(cfg.health.rise, cfg.health.fall);
            self.backends.push(state);
        }
        self.health = cfg.health.clone();
        let mut old = std::mem::take(&mut self.listeners);
        for l in &cfg.listeners {
            let mut state = match old.iter().position(|o| o.name == l.name) {
                Some(i) => old.swap_remove(i),
                None => ListenerState {
                    name: l.name.clone(),
                    role: l.role,
                    probe: Hysteresis::new(cfg.health.rise, cfg.health.fall),
                    last_error: None,
                },
            };
            state.role = l.role;
            state.probe.set_thresholds(cfg.health.rise, cfg.health.fall);
            self.listeners.push(state);
        }
        self.fallback_reads_to_primary = cfg.routing.fallback_reads_to_primary;
    }

    /// Records one probe result. Returns false for an unknown backend name.
    pub fn observe(&mut self, name: &str, result: Result<Probe, String>) -> bool {
        let Some(b) = self.backends.iter_mut().find(|b| b.name == name) else {
            return false;
        };
        match result {
            Ok(p) => {
                b.hysteresis.observe(true);
                b.last = Some(p);
                b.last_error = None;
            }
            Err(e) => {
                b.hysteresis.observe(false);
                b.last_error = Some(e);
            }
        }
        true
    }

    /// Records one self-check of a listener. Returns false for an unknown listener name.
    pub fn observe_listener(&mut self, name: &str, result: Result<(), String>) -> bool {
        let Some(l) = self.listeners.iter_mut().find(|l| l.name == name) else {
            return false;
        };
        l.probe.observe(result.is_ok());
        l.last_error = result.err();
        true
    }

    /// The current verdict.
    pub fn view(&self) -> ClusterView {
        let up_primaries: Vec<&BackendState> = self
            .backends
            .iter()
            .filter(|b| b.hysteresis.is_up() && matches!(&b.last, Some(p) if !p.in_recovery))
            .collect();
        let (primary, split_brain) = match up_primaries.as_slice() {
            [one] => (Some(*one), Vec::new()),
            [] => (None, Vec::new()),
            many => (None, many.iter().map(|b| b.name.clone()).collect()),
        };
        let primary_lsn = primary.and_then(|p| p.last.as_ref()).and_then(|p| p.lsn);

        let mut backends = Vec::new();
        let mut read_set = Vec::new();
        for b in &self.backends {
            let up = b.hysteresis.is_up();
            let role = match (&b.last, up) {
                (Some(p), true) if !p.in_recovery => Role::Primary,
                (Some(_), true) => Role::Replica,
                _ => Role::Unknown,
            };
            let (lag_bytes, lag) = match (role, &b.last) {
                (Role::Replica, Some(p)) => replica_lag(p, primary_lsn),
                (Role::Primary, _) => (Some(0), Some(Duration::ZERO)),
                _ => (None, None),
            };
            let within_lag = self
                .health
                .max_replica_lag_bytes
                .is_none_or(|max| lag_bytes.is_none_or(|l| l <= max))
                && self
                    .health
                    .max_replica_lag
                    .is_none_or(|max| lag.is_none_or(|l| l <= max));
            let in_read_set = role == Role::Replica && within_lag && b.weight > 0;
            if in_read_set {
                read_set.push(b.name.clone());
            }
            backends.push(BackendView {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
                weight: b.weight,
                up,
                role,
                lag_bytes,
                lag_seconds: lag.map(|d| d.as_secs_f64()),
                in_read_set,
                last_error: b.last_error.clone(),
            });
        }

        let has_primary = primary.is_some();
        let has_replica = !read_set.is_empty();
        let listeners = self
            .listeners
            .iter()
            .map(|l| {
                let (can_read, can_write, reason) =
                    self.listener_verdict(l.role, has_primary, has_replica, &split_brain);
                let accepting = !self.health.self_check || l.probe.is_up();
                let accept_error = match (&l.last_error, accepting) {
                    (_, true) => None,
                    (Some(e), false) => Some(e.clone()),
                    (None, false) => Some("not checked yet".to_string()),
                };
                ListenerVerdict {
                    name: l.name.clone(),
                    role: l.role,
                    can_read,
                    can_write,
                    reason,
                    accepting,
                    accept_error,
                }
            })
            .collect();

        ClusterView {
            backends,
            primary: primary.map(|p| p.name.clone()),
            split_brain,
            read_set,
            listeners,
        }
    }

    fn listener_verdict(
        &self,
        role: ListenerRole,
        has_primary: bool,
        has_replica: bool,
        split_brain: &[String],
    ) -> (bool, bool, String) {
        let no_primary = if split_brain.is_empty() {
            "no primary is up".to_string()
        } else {
            format!(
                "split brain: {} all claim to be primary",
                split_brain.join(", ")
            )
        };
        match role {
            ListenerRole::Primary => {
                if has_primary {
                    (true, true, "primary is up".into())
                } else {
                    (false, false, no_primary)
                }
            }
            ListenerRole::Replica => {
                if has_replica {
                    (true, false, "replicas in the read set".into())
                } else if has_primary && self.fallback_reads_to_primary {
                    (
                        true,
                        false,
                        "no replica in the read set: reads fall back to the primary".into(),
                    )
                } else {
                    (false, false, "no replica in the read set".into())
                }
            }
            ListenerRole::Auto => {
                let can_read = has_replica || has_primary;
                match (has_primary, can_read) {
                    (true, _) => (true, true, "primary is up".into()),
                    (false, true) => (true, false, format!("{no_primary}: read-only")),
                    (false, false) => (
                        false,
                        false,
                        format!("{no_primary} and no replica in the read set"),
                    ),
                }
            }
        }
    }
}

/// Lag of a replica: bytes behind the primary's current WAL position, and time since the last
/// replayed transaction — but zero when it has replayed all it received, because an idle
/// primary makes the replay timestamp old without any lag.
fn replica_lag(p: &Probe, primary_lsn: Option<u64>) -> (Option<u64>, Option<Duration>) {
    let bytes = match (primary_lsn, p.lsn) {
        (Some(primary), Some(replayed)) => Some(primary.saturating_sub(replayed)),
        _ => None,
    };
    let caught_up = matches!((p.lsn, p.receive_lsn), (Some(r), Some(rx)) if r >= rx);
    let time = if caught_up && bytes.is_none_or(|b| b == 0) {
        Some(Duration::ZERO)
    } else {
        p.replay_age
    };
    (bytes, time)
}

/// Parses a PostgreSQL LSN ("16/B374D848") into a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[admin]
socket = "/tmp/x.sock"
[health]
rise = 1
fall = 1
max_replica_lag_bytes = 1000
{extra}
[[listeners]]
name = "rw"
address = "127.0.0.1:1"
role = "auto"
[[listeners]]
name = "ro"
address = "127.0.0.1:2"
role = "replica"
[[backends]]
name = "pg1"
host = "h1"
[[backends]]
name = "pg2"
host = "h2"
[[backends]]
name = "pg3"
host = "h3"
"#
        );
        Config::parse(&text, Path::new("t.toml")).expect("valid")
    }

    fn primary(lsn: u64) -> Result<Probe, String> {
        Ok(Probe {
            in_recovery: false,
            lsn: Some(lsn),
            receive_lsn: None,
            replay_age: None,
        })
    }

    fn replica(replayed: u64, received: u64, age_s: u64) -> Result<Probe, String> {
        Ok(Probe {
            in_recovery: true,
            lsn: Some(replayed),
            receive_lsn: Some(received),
            replay_age: Some(Duration::from_secs(age_s)),
        })
    }

    #[test]
    fn discovers_roles_and_read_set() {
        let mut c = ClusterState::new(&config(""));
        c.observe("pg1", primary(5000));
        c.observe("pg2", replica(5000, 5000, 600));
        c.observe("pg3", replica(3000, 3500, 2));
        let v = c.view();
        assert_eq!(v.primary.as_deref(), Some("pg1"));
        assert_eq!(
            v.read_set,
            vec!["pg2".to_string()],
            "pg3 lags 2000 bytes > 1000"
        );
        let pg2 = v.backend("pg2").unwrap();
        assert_eq!(pg2.lag_bytes, Some(0));
        assert_eq!(
            pg2.lag_seconds,
            Some(0.0),
            "caught up: an idle primary is not lag"
        );
        assert_eq!(v.backend("pg3").unwrap().lag_bytes, Some(2000));
        let rw = v.listener("rw").unwrap();
        assert!(rw.can_read && rw.can_write);
    }

    #[test]
    fn follows_a_failover_without_config() {
        let mut c = ClusterState::new(&config(""));
        c.observe("pg1", primary(100));
        c.observe("pg2", replica(100, 100, 0));
        c.observe("pg1", Err("connection refused".into()));
        let v = c.view();
        assert_eq!(v.primary, None);
        assert!(!v.listener("rw").unwrap().can_write);
        assert!(
            v.listener("rw").unwrap().can_read,
            "reads continue on the replica"
        );
        c.observe("pg2", primary(200));
        let v = c.view();
        assert_eq!(v.primary.as_deref(), Some("pg2"));
        assert_eq!(v.backend("pg1").unwrap().role, Role::Unknown);
        assert!(v.listener("rw").unwrap().can_write);
    }

    #[test]
    fn two_primaries_is_split_brain_without_writes() {
        let mut c = ClusterState::new(&config(""));
        c.observe("pg1", primary(100));
        c.observe("pg2", primary(100));
        let v = c.view();
        assert_eq!(v.primary, None);
        assert_eq!(v.split_brain, vec!["pg1".to_string(), "pg2".to_string()]);
        let rw = v.listener("rw").unwrap();
        assert!(!rw.can_write);
        assert!(rw.reason.contains("split brain"), "{}", rw.reason);
    }

    #[test]
    fn replica_listener_falls_back_to_primary_when_configured() {
        let mut c = ClusterState::new(&config(""));
        c.observe("pg1", primary(100));
        assert!(c.view().listener("ro").unwrap().can_read);
        let mut c = ClusterState::new(&config("[routing]\nfallback_reads_to_primary = false\n"));
        c.observe("pg1", primary(100));
        assert!(!c.view().listener("ro").unwrap().can_read);
    }

    #[test]
    fn reconfigure_keeps_existing_state() {
        let cfg = config("");
        let mut c = ClusterState::new(&cfg);
        c.observe("pg1", primary(100));
        let mut cfg2 = cfg.clone();
        cfg2.backends[0].weight = 5;
        cfg2.backends.pop();
        c.reconfigure(&cfg2);
        let v = c.view();
        assert_eq!(v.primary.as_deref(), Some("pg1"));
        assert_eq!(v.backends.len(), 2);
        assert_eq!(v.backend("pg1").unwrap().weight, 5);
        assert!(!c.observe("pg3", primary(1)));
    }

    #[test]
    fn listener_self_check_with_rise_and_fall() {
        let mut cfg = config("");
        (cfg.health.rise, cfg.health.fall) = (2, 2);
        let mut c = ClusterState::new(&cfg);
        c.observe("pg1", primary(100));
        let rw = c.view().listener("rw").unwrap().clone();
        assert!(rw.can_write, "the backends allow it");
        assert!(!rw.accepting, "but nothing reached the listener yet");
        assert_eq!(
            rw.full_reason(),
            "not accepting connections: not checked yet"
        );
        assert!(c.observe_listener("rw", Ok(())));
        assert!(
            c.view().listener("rw").unwrap().accepting,
            "the first check decides"
        );
        assert!(c.observe_listener("rw", Err("connect: timed out".into())));
        assert!(c.view().listener("rw").unwrap().accepting, "fall = 2");
        c.observe_listener("rw", Err("connect: Too many open files".into()));
        let rw = c.view().listener("rw").unwrap().clone();
        assert!(!rw.accepting);
        assert_eq!(
            rw.full_reason(),
            "not accepting connections: connect: Too many open files"
        );
        assert!(!c.view().listener("ro").unwrap().accepting, "checked apart");
        c.observe_listener("rw", Ok(()));
        assert!(!c.view().listener("rw").unwrap().accepting, "rise = 2");
        c.observe_listener("rw", Ok(()));
        assert!(c.view().listener("rw").unwrap().accepting);
        assert!(!c.observe_listener("nope", Ok(())));
    }

    #[test]
    fn listener_self_check_off_means_accepting() {
        let mut c = ClusterState::new(&config("self_check = false\n"));
        c.observe("pg1", primary(100));
        let rw = c.view().listener("rw").unwrap().clone();
        assert!(rw.accepting && rw.accept_error.is_none());
    }

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1/"), None);
    }
}
