//! Tests of the pure cluster state: roles, read set, lag hysteresis.
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

/// pg1 primary at a fixed LSN, pg2 a replica: each sample is pg2's lag in bytes (replay
/// age 0), probed every 500 ms after a probe of the primary, with pg2's expected
/// read-set membership after it.
fn run_bytes_table(extra: &str, table: &[(u64, bool)]) -> ClusterState {
    let mut cfg = config(extra);
    (cfg.health.rise, cfg.health.fall) = (2, 3);
    let mut c = ClusterState::new(&cfg);
    let t0 = Instant::now();
    for (i, &(lag, expected)) in table.iter().enumerate() {
        let t = t0 + Duration::from_millis(500 * i as u64);
        c.observe_at("pg1", primary(100_000), t);
        c.observe_at("pg2", replica(100_000 - lag, 100_000 - lag, 0), t);
        let v = c.view();
        assert_eq!(v.backend("pg2").unwrap().lag_bytes, Some(lag));
        assert_eq!(
            v.backend("pg2").unwrap().in_read_set,
            expected,
            "sample {i} (lag {lag} bytes, limit 1000)"
        );
        assert_eq!(v.read_set.contains(&"pg2".to_string()), expected);
    }
    c
}

#[test]
fn lag_leaves_after_fall_probes_over_and_returns_after_rise_probes_under_the_margin() {
    // max_replica_lag_bytes = 1000, fall = 3, rise = 2, return at 80 % = 800 bytes.
    let c = run_bytes_table(
        "",
        &[
            (0, true),
            (1500, true), // 1 over
            (0, true),    // resets
            (1500, true),
            (5000, true),
            (1000, true), // at the limit is within: resets
            (1500, true),
            (1500, true),
            (1500, false), // 3 consecutive over: out
            (900, false),  // within the limit but above 80 %: stays out
            (800, false),  // 1 under the margin
            (1500, false), // resets
            (700, false),
            (900, false), // in the band: resets too
            (700, false),
            (0, true), // 2 consecutive under the margin: back
            (1001, true),
            (900, true),
        ],
    );
    let pg2 = c.view().backend("pg2").unwrap().clone();
    let change = pg2.lag_change.expect("decided");
    assert!(change.within);
    assert_eq!(change.probes, 2);
    assert_eq!(
        change.detail,
        "lag_bytes 0 <= 800 (80% of max_replica_lag_bytes 1000), \
         lag_seconds 0.000 <= 8.000 (80% of max_replica_lag_ms 10000)"
    );
    assert_eq!(pg2.read_set_reason, None);
}

#[test]
fn lag_bursts_shorter_than_fall_never_leave() {
    // The issue's pattern: a mixed write load makes the lag cross the limit for a probe or
    // two at a time; the replica stays.
    let table: Vec<(u64, bool)> = (0..60)
        .map(|i| (if i % 3 == 0 { 0 } else { 4000 }, true))
        .collect();
    run_bytes_table("", &table);
}

#[test]
fn lag_return_percent_100_returns_within_the_limit() {
    run_bytes_table(
        "replica_lag_return_percent = 100\n",
        &[
            (2000, false), // the first measurement decides at once
            (1000, false),
            (1000, true),
            (1001, true),
        ],
    );
}

#[test]
fn out_of_read_set_reason_names_the_limit_and_probes() {
    let c = run_bytes_table("", &[(0, true), (3000, true), (3000, true), (2500, false)]);
    let v = c.view();
    let pg2 = v.backend("pg2").unwrap();
    assert_eq!(
        pg2.read_set_reason.as_deref(),
        Some("replica lag: lag_bytes 2500 > max_replica_lag_bytes 1000 for 3 consecutive probes")
    );
    let change = pg2.lag_change.as_ref().unwrap();
    assert_eq!((change.within, change.probes), (false, 3));
    assert_eq!(v.backend("pg1").unwrap().read_set_reason, None, "a primary");
}

#[test]
fn lag_seconds_table_without_primary() {
    // No primary to compare with: the replay age counts unless the replica replayed all it
    // received. max_replica_lag_ms = 2000, fall = 3, rise = 2, return at 1.6 s.
    let mut cfg = config("max_replica_lag_ms = 2000\n");
    (cfg.health.rise, cfg.health.fall) = (2, 3);
    let mut c = ClusterState::new(&cfg);
    let t0 = Instant::now();
    let table: &[(u64, u64, u64, bool)] = &[
        // (replayed, received, replay age s, in read set)
        (10, 20, 1, true),
        (10, 20, 3, true),
        (10, 20, 3, true),
        (20, 20, 900, true), // caught up with what it received: an idle primary
        (20, 30, 3, true),
        (20, 30, 3, true),
        (20, 30, 3, false),
        (30, 30, 900, false), // 1 under
        (30, 40, 2, false),   // 2 s is within the limit but not under 1.6 s: resets
        (30, 40, 1, false),
        (40, 40, 50, true),
    ];
    for (i, &(replayed, received, age, expected)) in table.iter().enumerate() {
        let t = t0 + Duration::from_millis(500 * i as u64);
        c.observe_at("pg2", replica(replayed, received, age), t);
        let pg2 = c.view().backend("pg2").unwrap().clone();
        assert_eq!(pg2.lag_bytes, None);
        assert_eq!(pg2.in_read_set, expected, "sample {i}");
    }
}

#[test]
fn idle_primary_is_not_lag() {
    // The primary writes nothing for a minute: the last replayed commit gets old, the
    // replica has everything.
    let mut cfg = config("max_replica_lag_ms = 2000\n");
    (cfg.health.rise, cfg.health.fall) = (2, 3);
    let mut c = ClusterState::new(&cfg);
    let t0 = Instant::now();
    for i in 0..120u64 {
        let t = t0 + Duration::from_millis(500 * i);
        // Either order of the probes within an interval.
        if i % 2 == 0 {
            c.observe_at("pg1", primary(5000), t);
            c.observe_at("pg2", replica(5000, 5000, 10 + i / 2), t);
        } else {
            c.observe_at("pg2", replica(5000, 5000, 10 + i / 2), t);
            c.observe_at("pg1", primary(5000), t);
        }
        let pg2 = c.view().backend("pg2").unwrap().clone();
        assert_eq!((pg2.lag_bytes, pg2.lag_seconds), (Some(0), Some(0.0)));
        assert!(pg2.in_read_set, "probe {i}");
    }
}

#[test]
fn wal_without_commits_is_dated_by_the_primary_probes() {
    // The primary writes WAL but no commits (a long transaction, pruning, checkpoints):
    // the replay age grows while the replica follows one probe behind.
    let mut cfg = config("max_replica_lag_ms = 2000\n");
    (cfg.health.rise, cfg.health.fall) = (2, 3);
    let mut c = ClusterState::new(&cfg);
    let t0 = Instant::now();
    c.observe_at("pg1", primary(0), t0);
    c.observe_at("pg2", replica(0, 0, 30), t0);
    for i in 1..60u64 {
        let t = t0 + Duration::from_millis(500 * i);
        c.observe_at("pg1", primary(1000 * i), t);
        c.observe_at("pg2", replica(1000 * (i - 1), 1000 * (i - 1), 30 + i), t);
        let pg2 = c.view().backend("pg2").unwrap().clone();
        assert_eq!(pg2.lag_seconds, Some(0.5), "probe {i}");
        assert!(pg2.in_read_set, "probe {i}");
    }
}

#[test]
fn a_replica_stuck_behind_an_idle_primary_leaves() {
    // Streaming broke after the primary's last write: the replica replayed all it received
    // and the primary no longer moves, but the replica misses its last 500 bytes.
    let mut cfg = config("max_replica_lag_ms = 2000\n");
    (cfg.health.rise, cfg.health.fall) = (2, 3);
    let mut c = ClusterState::new(&cfg);
    let t0 = Instant::now();
    c.observe_at("pg1", primary(4500), t0);
    c.observe_at("pg2", replica(4500, 4500, 0), t0);
    let mut left_at = None;
    for i in 1..20u64 {
        let t = t0 + Duration::from_millis(500 * i);
        c.observe_at("pg1", primary(5000), t);
        c.observe_at("pg2", replica(4500, 4500, 100), t);
        let pg2 = c.view().backend("pg2").unwrap().clone();
        assert_eq!(pg2.lag_bytes, Some(500));
        assert_eq!(pg2.lag_seconds, Some(0.5 * i as f64), "since t0");
        if !pg2.in_read_set && left_at.is_none() {
            left_at = Some(i);
            let reason = pg2.read_set_reason.unwrap();
            assert!(
                reason.contains("> max_replica_lag_ms 2000 for 3 consecutive probes"),
                "{reason}"
            );
        }
    }
    assert_eq!(left_at, Some(7), "over 2 s from probe 5 on, for 3 probes");
}

#[test]
fn down_or_promoted_replica_forgets_its_lag_verdict() {
    let mut c = ClusterState::new(&config(""));
    c.observe("pg1", primary(10_000));
    c.observe("pg2", replica(0, 0, 0));
    assert!(!c.view().backend("pg2").unwrap().in_read_set);
    c.observe("pg2", Err("connection refused".into()));
    let pg2 = c.view().backend("pg2").unwrap().clone();
    assert_eq!((pg2.lag_bytes, pg2.lag_change), (None, None));
    c.observe("pg2", replica(10_000, 10_000, 0));
    assert!(
        c.view().backend("pg2").unwrap().in_read_set,
        "back up: its first measurement decides"
    );
}

#[test]
fn lsn_parsing() {
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    assert_eq!(parse_lsn("nope"), None);
    assert_eq!(parse_lsn("1/"), None);
}
