//! `[pool] max_server_connections_per_user_database` against a real PostgreSQL 15, in
//! transaction mode: many clients of one user share that user's few server connections
//! (never more on the server), another user is not starved by them, and a client that waits
//! too long gets 53300 naming its user and database, and goes on.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{self, pgbench, simple_value as value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;

/// Server connections per (backend, user, database).
const PAIR_CAP: i64 = 2;
/// Server connections per backend, all users together: room for both users' caps.
const BACKEND_CAP: i64 = 4;

fn capped(timeout_ms: u64) -> String {
    format!(
        "[pool]\nmode = \"transaction\"\nmax_server_connections = {BACKEND_CAP}\n\
         max_server_connections_per_user_database = {PAIR_CAP}\n\
         checkout_timeout_ms = {timeout_ms}\n"
    )
}

/// The server connections of `user` on the primary, as pg_stat_activity shows them.
fn on_primary(c: &PgCluster, user: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'");
    let n = c.psql(&c.primary, DATABASE, &sql);
    n.trim().parse().expect("a count")
}

/// Samples both users' connections every 50 ms until stopped; the most seen of each.
fn watch(c: &PgCluster, stop: &AtomicBool, most: &[AtomicI64; 2]) {
    while !stop.load(Ordering::Relaxed) {
        most[0].fetch_max(on_primary(c, MD5_USER), Ordering::Relaxed);
        most[1].fetch_max(on_primary(c, SCRAM_USER), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 20 pgbench clients of one user run through its 2 server connections without a failed
/// transaction; meanwhile the other user logs in and runs statements without waiting on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_of_one_user_share_its_two_connections_and_another_user_gets_in() {
    let c = Arc::new(PgCluster::start(0));
    pgbench(c.primary.port, &["-i", "-q", "-s", "1"]);
    // Starvation shows as pgcast's own 53300 after this wait (the other user's login fails,
    // and the timeouts counted below are not 0), not as a time this test measures.
    let p = Pgcast::start(&c, &capped(5_000));
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new([AtomicI64::new(0), AtomicI64::new(0)]);
    let watcher = {
        let (c, stop, most) = (Arc::clone(&c), Arc::clone(&stop), Arc::clone(&most));
        std::thread::spawn(move || watch(&c, &stop, &most))
    };
    let port = p.primary_port;
    let bench = tokio::task::spawn_blocking(move || {
        let args = [
            "-n", "-S", "-c", "20", "-j", "2", "-t", "100", "-M", "extended",
        ];
        pgbench(port, &args)
    });
    let other = p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD);
    let mut rounds = 0;
    while !bench.is_finished() {
        let b = client::connect(&other)
            .await
            .expect("the other user logs in");
        assert_eq!(value(&b, "SELECT current_user").await, SCRAM_USER);
        rounds += 1;
    }
    let out = bench.await.expect("pgbench ran");
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(out.contains("2000/2000"), "{out}");
    assert!(
        out.contains("number of failed transactions: 0 (0.000%)"),
        "{out}"
    );
    let (a, b) = (
        most[0].load(Ordering::Relaxed),
        most[1].load(Ordering::Relaxed),
    );
    eprintln!("most seen on the primary: {a} of {MD5_USER}, {b} of {SCRAM_USER}; {rounds} logins of {SCRAM_USER}");
    assert!(
        (1..=PAIR_CAP).contains(&a),
        "{a} connections of {MD5_USER}, cap {PAIR_CAP}"
    );
    assert!(b <= PAIR_CAP, "{b} connections of {SCRAM_USER}");
    assert!(rounds > 0, "the other user got no turn");
    let s = p.status().expect("status");
    let timeouts: u64 = s.backends.iter().map(|b| b.checkout_timeouts).sum();
    assert_eq!(timeouts, 0, "{:?}", s.backends);
}

/// With both of its user's connections in open transactions, a third client of that user
/// waits `checkout_timeout_ms` and gets 53300 naming its user and database (another user
/// still runs); once a transaction ends, its session runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_user_database_cap_gets_53300_and_goes_on() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, &capped(500));
    let dsn = p.conninfo(p.primary_port, MD5_USER, MD5_PASSWORD);
    let mut holders = Vec::new();
    for _ in 0..PAIR_CAP {
        holders.push(client::connect(&dsn).await.expect("holder"));
    }
    let waiter = client::connect(&dsn)
        .await
        .expect("logs in while the cap is free");
    for h in &holders {
        h.batch_execute("BEGIN; SELECT 1").await.unwrap();
    }
    let e = waiter.batch_execute("SELECT 1").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    let expected = format!(
        "user \"{MD5_USER}\" and database \"{DATABASE}\" have all {PAIR_CAP} of their server connections"
    );
    assert!(
        db.message().contains(&expected)
            && db
                .message()
                .contains("max_server_connections_per_user_database")
            && db.message().contains("waited"),
        "{}",
        db.message()
    );
    let other = client::connect(&p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .expect("another user logs in");
    assert_eq!(value(&other, "SELECT 'other'").await, "other");

    let primary = p.primary_status();
    assert_eq!(primary.checkout_timeouts_user_database, 1, "{primary:?}");
    let at_cap: Vec<&str> = primary
        .user_databases_at_cap
        .iter()
        .map(|p| p.user.as_str())
        .collect();
    assert_eq!(at_cap, [MD5_USER], "{primary:?}");

    holders[0].batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&waiter, "SELECT 'on'").await, "on");
    assert_eq!(on_primary(&c, MD5_USER), PAIR_CAP);
}
