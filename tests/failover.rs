//! Topology changes with a real cluster: a failover followed without a config edit, a split
//! brain that refuses writes, and replicas leaving/returning to the read set with their lag.
//! Each test owns its cluster because it changes it.

mod common;

use std::time::{Duration, Instant};

use common::client::connect;
use common::pg_cluster::{PgCluster, DATABASE, SCRAM_USER};
use common::pgcast::Pgcast;

fn setup(c: &PgCluster) {
    c.psql(
        &c.primary,
        DATABASE,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE ledger (id int PRIMARY KEY);"),
    );
}

/// Inserts `id` through pgcast on a new session; Ok only if the commit was acknowledged.
async fn insert(p: &Pgcast, id: i32) -> Result<(), String> {
    let client = connect(&p.auto()).await.map_err(|e| e.to_string())?;
    client
        .execute("INSERT INTO ledger (id) VALUES ($1)", &[&id])
        .await
        .map(|_| ())
        .map_err(|e| {
            e.as_db_error()
                .map(|d| format!("{}: {}", d.code().code(), d.message()))
                .unwrap_or(e.to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_is_followed_without_config_edit_and_split_brain_refuses_writes() {
    let c = PgCluster::start(2);
    setup(&c);
    let p = Pgcast::start(&c, "");
    let mut acknowledged = Vec::new();
    for id in 0..20 {
        insert(&p, id).await.expect("writes before the failover");
        acknowledged.push(id);
    }
    // Synchronous failover of a well-run cluster: the replica has everything before promotion.
    c.wait_replica_caught_up(&c.primary, c.node("pg2"));
    c.stop(c.node("pg1"));
    p.wait_until("old primary down", |s| s.primary.is_none());
    let e = insert(&p, 1000)
        .await
        .expect_err("no primary: writes are refused");
    assert!(e.starts_with("25006") || e.contains("primary"), "{e}");

    c.promote(c.node("pg2"));
    p.wait_until("pg2 discovered as primary", |s| {
        s.primary.as_deref() == Some("pg2")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 20;
    while id < 40 {
        match insert(&p, id).await {
            Ok(()) => {
                acknowledged.push(id);
                id += 1;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "writes did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // No acknowledged write is lost.
    let on_new_primary = c.psql(
        c.node("pg2"),
        DATABASE,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger",
    );
    let expected: Vec<String> = acknowledged.iter().map(|i| i.to_string()).collect();
    assert_eq!(on_new_primary, expected.join(","));

    // The old primary comes back as a second primary: a split brain. No writes through us.
    c.restart(c.node("pg1"));
    let s = p.wait_until("split brain detected", |s| s.split_brain.len() == 2);
    assert!(s.primary.is_none());
    assert!(
        s.warnings.iter().any(|w| w.contains("SPLIT BRAIN")),
        "{:?}",
        s.warnings
    );
    let e = insert(&p, 2000)
        .await
        .expect_err("split brain: writes are refused");
    assert!(e.contains("split brain"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcast"))
        .args(["status", "--admin"])
        .arg(&p.admin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "degraded: exit 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SPLIT BRAIN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_leaves_the_read_set_and_returns() {
    let c = PgCluster::start(2);
    setup(&c);
    let p = Pgcast::start(&c, "[health]\ninterval_ms = 100\nrise = 1\nfall = 1\nmax_replica_lag_bytes = 8192\ndatabase = \"app\"\n");
    let pg2 = c.node("pg2").clone();
    c.psql(&pg2, DATABASE, "SELECT pg_wal_replay_pause()");
    c.psql(
        &c.primary,
        DATABASE,
        "INSERT INTO ledger SELECT g FROM generate_series(1, 5000) g",
    );
    // pg3 may lag for an instant too while it replays the insert; it must be back in the read
    // set (caught up) while pg2, paused, stays out.
    p.wait_until("pg2 out of the read set while pg3 serves", |s| {
        let pg2_out = s
            .backends
            .iter()
            .any(|b| b.name == "pg2" && !b.in_read_set && b.lag_bytes.unwrap_or(0) > 8192);
        let pg3_in = s.backends.iter().any(|b| b.name == "pg3" && b.in_read_set);
        pg2_out && pg3_in
    });
    for _ in 0..20 {
        let client = connect(&p.auto()).await.unwrap();
        let port: i32 = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        assert_ne!(
            port, pg2.port as i32,
            "no read lands on the lagging replica"
        );
    }
    c.psql(&pg2, DATABASE, "SELECT pg_wal_replay_resume()");
    p.wait_until("pg2 back in the read set", |s| {
        s.backends.iter().any(|b| b.name == "pg2" && b.in_read_set)
    });
    // One line per change, with the lag and the limit.
    let log = p.log();
    let left: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("replica leaves the read set") && l.contains("pg2"))
        .collect();
    assert_eq!(left.len(), 1, "{log}");
    assert!(
        left[0].contains("> max_replica_lag_bytes 8192 for 1 consecutive probe"),
        "{}",
        left[0]
    );
    eprintln!("{}", left[0]);
    let joined: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("replica joins the read set") && l.contains("pg2"))
        .collect();
    assert!(
        joined
            .iter()
            .any(|l| l.contains("(80% of max_replica_lag_bytes 8192)")),
        "{log}"
    );
    eprintln!("{}", joined.last().unwrap());
}

/// An idle primary is not replica lag: with no writes for 10 s the replica's last replayed
/// commit gets older than `max_replica_lag_ms`, yet it has everything and stays in the read set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_primary_keeps_a_caught_up_replica_in_the_read_set() {
    let c = PgCluster::start(1);
    setup(&c);
    let pg2 = c.node("pg2").clone();
    c.wait_replica_caught_up(&c.primary, &pg2);
    let p = Pgcast::start(
        &c,
        "[health]\ninterval_ms = 100\nrise = 2\nfall = 3\nmax_replica_lag_ms = 1000\ndatabase = \"app\"\n",
    );
    let start = Instant::now();
    let mut max_lag = 0.0f64;
    while start.elapsed() < Duration::from_secs(12) {
        let s = p.status().expect("status");
        let b = s.backends.iter().find(|b| b.name == "pg2").unwrap();
        assert!(
            b.in_read_set,
            "after {:?} idle: {b:?}\nlog:\n{}",
            start.elapsed(),
            p.log()
        );
        max_lag = max_lag.max(b.lag_seconds.unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(100));
    }
    // What PostgreSQL calls the replay age is well past the limit by now.
    let age: f64 = c
        .psql(
            &pg2,
            DATABASE,
            "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())",
        )
        .parse()
        .unwrap();
    assert!(age > 10.0, "replay age {age}");
    assert!(max_lag <= 1.0, "lag_seconds reached {max_lag}");
    let log = p.log();
    assert!(!log.contains("replica leaves the read set"), "{log}");
    eprintln!("replay age {age:.1} s, max lag_seconds seen {max_lag}");
}
