//! The cluster as the health checks see it: a pure aggregate of per-backend probe results.
//!
//! Roles are discovered, never configured: a backend that answers `pg_is_in_recovery() = false`
//! is a primary. Exactly one up primary is required for writes; two or more is a split brain and
//! no writes are routed to any of them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
    /// Why an up replica is not in the read set (None when it is, and for other roles).
    pub read_set_reason: Option<String>,
    /// The lag limits' last verdict on this replica (None before its first measurement).
    pub lag_change: Option<LagChange>,
}

/// A change of a replica's standing with the lag limits, after hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagChange {
    /// Within the limits since this change (false: over a limit).
    pub within: bool,
    /// The measurement and the limit it exceeded, or the (return) limits it now meets.
    pub detail: String,
    /// Consecutive probes that decided the change (the very first measurement decides alone).
    pub probes: u32,
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
    /// As a replica: its lag at its last probe, and the lag limits' debouncer.
    lag_bytes: Option<u64>,
    lag: Option<Duration>,
    lag_gate: Hysteresis,
    lag_change: Option<LagChange>,
    /// As a primary: its recent WAL positions, with when they were seen (newest last).
    lsn_history: VecDeque<(Instant, u64)>,
}

/// Primary WAL positions kept per backend: enough to date a replica's replay position over
/// minutes at the usual intervals; beyond that the replay timestamp alone measures the lag.
const LSN_HISTORY: usize = 1024;

impl BackendState {
    /// Forgets what the lag limits decided (the backend is down, a primary, or another server).
    fn reset_lag(&mut self, rise: u32, fall: u32) {
        self.lag_bytes = None;
        self.lag = None;
        self.lag_gate = Hysteresis::new(rise, fall);
        self.lag_change = None;
    }
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
                    lag_bytes: None,
                    lag: None,
                    lag_gate: Hysteresis::new(cfg.health.rise, cfg.health.fall),
                    lag_change: None,
                    lsn_history: VecDeque::new(),
                },
            };
            if state.host != b.host || state.port != b.port {
                // A different server under the same name: start from scratch.
                state.hysteresis = Hysteresis::new(cfg.health.rise, cfg.health.fall);
                state.last = None;
                state.lsn_history.clear();
                state.reset_lag(cfg.health.rise, cfg.health.fall);
            }
            state.host = b.host.clone();
            state.port = b.port;
            state.weight = b.weight;
            state
                .hysteresis
                .set_thresholds(cfg.health.rise, cfg.health.fall);
            state
                .lag_gate
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

    /// Records one probe result, received now. Returns false for an unknown backend name.
    pub fn observe(&mut self, name: &str, result: Result<Probe, String>) -> bool {
        self.observe_at(name, result, Instant::now())
    }

    /// Records one probe result received at `now`. A replica's lag is measured here, once per
    /// probe, against the primary's latest probed WAL position, and fed to its lag debouncer.
    pub fn observe_at(&mut self, name: &str, result: Result<Probe, String>, now: Instant) -> bool {
        let Some(i) = self.backends.iter().position(|b| b.name == name) else {
            return false;
        };
        let (rise, fall) = (self.health.rise, self.health.fall);
        let b = &mut self.backends[i];
        let probe = match result {
            Ok(p) => {
                b.hysteresis.observe(true);
                b.last_error = None;
                if p.in_recovery {
                    b.lsn_history.clear();
                } else if let Some(lsn) = p.lsn {
                    if b.lsn_history.len() >= LSN_HISTORY {
                        b.lsn_history.pop_front();
                    }
                    b.lsn_history.push_back((now, lsn));
                }
                b.last = Some(p.clone());
                Some(p)
            }
            Err(e) => {
                b.hysteresis.observe(false);
                b.last_error = Some(e);
                None
            }
        };
        if !b.hysteresis.is_up() || matches!(&probe, Some(p) if !p.in_recovery) {
            b.reset_lag(rise, fall);
            return true;
        }
        // Up, and either a replica's probe or a failed probe within `fall`: the latter keeps the
        // last measurement and verdict.
        let Some(p) = probe else {
            return true;
        };
        let history = self.primary().map(|pr| &pr.lsn_history);
        let (bytes, lag) = replica_lag(&p, history, now);
        let sample = judge(bytes, lag, &self.health);
        let b = &mut self.backends[i];
        b.lag_bytes = bytes;
        b.lag = lag;
        let ok = match b.lag_gate.state() {
            // Within: stays until over a limit; the first measurement: within the limits.
            Some(true) | None => sample.over.is_none(),
            // Out: returns only below the return margin.
            Some(false) => sample.under.is_some(),
        };
        if b.lag_gate.observe(ok) {
            let within = b.lag_gate.is_up();
            let detail = if within {
                sample.under.unwrap_or(sample.within)
            } else {
                sample.over.unwrap_or_default()
            };
            b.lag_change = Some(LagChange {
                within,
                detail,
                probes: b.lag_gate.probes_for_last_change(),
            });
        }
        true
    }

    /// The one up primary (None when there is none, or several).
    fn primary(&self) -> Option<&BackendState> {
        let mut up = self
            .backends
            .iter()
            .filter(|b| b.hysteresis.is_up() && matches!(&b.last, Some(p) if !p.in_recovery));
        match (up.next(), up.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
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

        let mut backends = Vec::new();
        let mut read_set = Vec::new();
        for b in &self.backends {
            let up = b.hysteresis.is_up();
            let role = match (&b.last, up) {
                (Some(p), true) if !p.in_recovery => Role::Primary,
                (Some(_), true) => Role::Replica,
                _ => Role::Unknown,
            };
            let (lag_bytes, lag) = match role {
                Role::Replica => (b.lag_bytes, b.lag),
                Role::Primary => (Some(0), Some(Duration::ZERO)),
                Role::Unknown => (None, None),
            };
            let within_lag = b.lag_gate.state() != Some(false);
            let in_read_set = role == Role::Replica && within_lag && b.weight > 0;
            if in_read_set {
                read_set.push(b.name.clone());
            }
            let read_set_reason = match (role, &b.lag_change) {
                (Role::Replica, _) if in_read_set => None,
                (Role::Replica, Some(c)) if !c.within => Some(format!(
                    "replica lag: {} for {} consecutive probe{}",
                    c.detail,
                    c.probes,
                    if c.probes == 1 { "" } else { "s" }
                )),
                (Role::Replica, _) => Some("weight 0".to_string()),
                _ => None,
            };
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
                read_set_reason,
                lag_change: if role == Role::Replica {
                    b.lag_change.clone()
                } else {
                    None
                },
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

/// Lag of a replica probed at `now`: bytes behind the primary's latest probed WAL position,
/// and time behind it.
///
/// The time is PostgreSQL's `now() - pg_last_xact_replay_timestamp()`, which overstates the lag
/// whenever the primary writes no commits (idle, or WAL without commits), so:
/// - it is zero once the replica has replayed up to the primary's latest probed position (an
///   idle primary is not lag), or, with no primary to compare with, all it has received;
/// - otherwise it is at most the time since the newest primary probe whose position the
///   replica has replayed: the replica has everything the primary had then.
fn replica_lag(
    p: &Probe,
    primary: Option<&VecDeque<(Instant, u64)>>,
    now: Instant,
) -> (Option<u64>, Option<Duration>) {
    let latest = primary.and_then(|h| h.back()).map(|&(_, lsn)| lsn);
    let Some(replayed) = p.lsn else {
        return (None, p.replay_age);
    };
    let Some(latest) = latest else {
        let caught_up = p.receive_lsn.is_some_and(|rx| replayed >= rx);
        let time = if caught_up {
            Some(Duration::ZERO)
        } else {
            p.replay_age
        };
        return (None, time);
    };
    let bytes = latest.saturating_sub(replayed);
    if bytes == 0 {
        return (Some(0), Some(Duration::ZERO));
    }
    let since_caught_up = primary
        .into_iter()
        .flat_map(|h| h.iter().rev())
        .find(|&&(_, lsn)| lsn <= replayed)
        .map(|&(at, _)| now.saturating_duration_since(at));
    let time = match (since_caught_up, p.replay_age) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (Some(bytes), time)
}

/// One lag measurement against the limits.
#[derive(Debug, Default)]
struct LagSample {
    /// The limits it exceeds, with the measurement (None when within every limit).
    over: Option<String>,
    /// The return limits it meets (None when above the return margin of some limit).
    under: Option<String>,
    /// The limits it meets (without the return margin).
    within: String,
}

/// Compares a lag measurement with `max_replica_lag_bytes`/`_ms`, and with
/// `replica_lag_return_percent` of them. An unknown measure (no primary to compare with, no
/// replayed transaction yet) meets its limit.
fn judge(bytes: Option<u64>, lag: Option<Duration>, h: &HealthConfig) -> LagSample {
    let pct = h.replica_lag_return_percent.clamp(1, 100);
    let mut over = Vec::new();
    let mut under = Vec::new();
    let mut within = Vec::new();
    let mut under_all = true;
    if let (Some(max), Some(b)) = (h.max_replica_lag_bytes, bytes) {
        let ret = (max as u128 * pct as u128 / 100) as u64;
        if b > max {
            over.push(format!("lag_bytes {b} > max_replica_lag_bytes {max}"));
        } else {
            within.push(format!("lag_bytes {b} <= max_replica_lag_bytes {max}"));
        }
        if b <= ret {
            under.push(format!(
                "lag_bytes {b} <= {ret} ({pct}% of max_replica_lag_bytes {max})"
            ));
        } else {
            under_all = false;
        }
    }
    if let (Some(max), Some(l)) = (h.max_replica_lag, lag) {
        let ret = max * pct / 100;
        let (l_s, max_ms, ret_s) = (l.as_secs_f64(), max.as_millis(), ret.as_secs_f64());
        if l > max {
            over.push(format!(
                "lag_seconds {l_s:.3} > max_replica_lag_ms {max_ms}"
            ));
        } else {
            within.push(format!(
                "lag_seconds {l_s:.3} <= max_replica_lag_ms {max_ms}"
            ));
        }
        if l <= ret {
            under.push(format!(
                "lag_seconds {l_s:.3} <= {ret_s:.3} ({pct}% of max_replica_lag_ms {max_ms})"
            ));
        } else {
            under_all = false;
        }
    }
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            "no lag limit applies".to_string()
        } else {
            v.join(", ")
        }
    };
    LagSample {
        over: (!over.is_empty()).then(|| over.join(", ")),
        under: under_all.then(|| or_none(under)),
        within: or_none(within),
    }
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
#[path = "cluster_tests.rs"]
mod tests;
