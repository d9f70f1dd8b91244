//! `[pool] mode = "transaction"` against a real PostgreSQL 15: many clients share a few server
//! connections (never more than the cap on the server), pgbench's three protocols run without
//! a failed transaction, session state follows the client from connection to connection or
//! pins it, and a client that waits too long gets 53300 and goes on.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::client::{self, pgbench, simple_value as value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;

const CAP: i64 = 10;

fn transaction_pool(cap: i64, timeout_ms: u64) -> String {
    format!(
        "[pool]\nmode = \"transaction\"\nmax_server_connections = {cap}\n\
         checkout_timeout_ms = {timeout_ms}\n"
    )
}

fn on_primary(c: &PgCluster) -> i64 {
    c.test_user_backends_on_primary()
}

/// Samples the primary's connections every 50 ms until stopped; the largest count seen.
fn watch_primary(c: &PgCluster, stop: &AtomicBool, most: &AtomicI64) {
    while !stop.load(Ordering::Relaxed) {
        most.fetch_max(on_primary(c), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pgbench_500_clients_share_10_server_connections() {
    let c = PgCluster::start(0);
    pgbench(c.primary.port, &["-i", "-q", "-s", "1"]);
    let p = Pgcast::start(&c, &transaction_pool(CAP, 30_000));
    let (stop, most) = (AtomicBool::new(false), AtomicI64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| watch_primary(&c, &stop, &most));
        for protocol in ["simple", "extended", "prepared"] {
            let out = pgbench(
                p.primary_port,
                &[
                    "-n", "-S", "-c", "500", "-j", "2", "-t", "20", "-M", protocol,
                ],
            );
            let processed = out
                .lines()
                .find(|l| l.starts_with("number of transactions actually processed"))
                .unwrap_or_default();
            assert!(processed.contains("10000/10000"), "{protocol}:\n{out}");
            assert!(
                out.contains("number of failed transactions: 0 (0.000%)"),
                "{protocol}:\n{out}"
            );
            eprintln!("{protocol}: {processed}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let most = most.load(Ordering::Relaxed);
    eprintln!("at most {most} connections of the test users on the primary");
    assert!(most <= CAP, "{most} server connections, cap {CAP}");
    let s = p.status().expect("status");
    assert!(s.routed.transaction_checkins >= 30_000, "{:?}", s.routed);
}

/// State that can move follows the client; state that cannot pins it, and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_the_client_or_pins_it() {
    let c = PgCluster::start(0);
    c.psql(
        &c.primary,
        DATABASE,
        &format!("GRANT CREATE ON SCHEMA public TO {SCRAM_USER}; GRANT {MD5_USER} TO {SCRAM_USER}"),
    );
    // One server connection for everybody: every transaction of every client shares it.
    let p = Pgcast::start(&c, &transaction_pool(1, 10_000));
    let dsn = p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD);
    let a = client::connect(&dsn).await.expect("a");
    let b = client::connect(&dsn).await.expect("b");

    // SET follows a; b never sees it, on the same server connection.
    a.batch_execute("SET application_name = 'client-a'")
        .await
        .unwrap();
    assert_eq!(value(&b, "SHOW application_name").await, "");
    a.batch_execute(&format!("SET ROLE {MD5_USER}"))
        .await
        .unwrap();
    assert_eq!(value(&b, "SELECT current_user").await, SCRAM_USER);
    assert_eq!(value(&a, "SELECT current_user").await, MD5_USER);
    assert_eq!(value(&b, "SELECT current_user").await, SCRAM_USER);
    assert_eq!(value(&a, "SHOW application_name").await, "client-a");
    assert_eq!(value(&b, "SHOW application_name").await, "");

    // Protocol-level prepared statements of both clients, interleaved on one connection.
    let sa = a.prepare("SELECT $1::int + 1").await.unwrap();
    let sb = b.prepare("SELECT $1::int * 10").await.unwrap();
    for i in 0..5 {
        let ra: i32 = a.query_one(&sa, &[&i]).await.unwrap().get(0);
        let rb: i32 = b.query_one(&sb, &[&i]).await.unwrap().get(0);
        assert_eq!((ra, rb), (i + 1, i * 10));
    }
    assert_eq!(p.status().expect("status").routed.pinned_sessions, 0);
    drop(b);

    // Each of these pins its session, which keeps working across transactions.
    let pinning = [
        (
            "temp table",
            "CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (7)",
            "SELECT x::text FROM scratch",
            "7",
        ),
        (
            "SQL PREPARE",
            "PREPARE twice(int) AS SELECT $1 * 2",
            "EXECUTE twice(21)",
            "42",
        ),
        (
            "cursor WITH HOLD",
            "DECLARE held CURSOR WITH HOLD FOR SELECT 5",
            "FETCH held",
            "5",
        ),
        (
            "session advisory lock",
            "SELECT pg_advisory_lock(4242)",
            "SELECT pg_advisory_unlock(4242)::text",
            "true",
        ),
        (
            "LISTEN",
            "LISTEN pool_test",
            "SELECT count(*)::text FROM pg_listening_channels()",
            "1",
        ),
    ];
    drop(a);
    for (n, (what, create, later, expected)) in pinning.iter().enumerate() {
        let s = client::connect(&dsn).await.expect("client");
        s.batch_execute(create)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        s.batch_execute("SELECT 1").await.unwrap();
        assert_eq!(&value(&s, later).await, expected, "{what}");
        assert_eq!(
            p.status().expect("status").routed.pinned_sessions,
            n as u64 + 1,
            "{what} pins"
        );
        // Its connection goes back (reset) when the session ends: the next one can have it.
    }
}

/// At the cap, a client waits for a connection; after `checkout_timeout_ms` it gets 53300
/// naming the backend, and its session goes on once a connection is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_too_long_gets_53300_and_goes_on() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, &transaction_pool(1, 500));
    let dsn = p.conninfo(p.primary_port, MD5_USER, MD5_PASSWORD);
    let holder = client::connect(&dsn).await.expect("holder");
    let waiter = client::connect(&dsn)
        .await
        .expect("waiter: logs in while the cap is free");
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let e = waiter.batch_execute("SELECT 1").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("waited"), "{}", db.message());
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&waiter, "SELECT 'on'").await, "on");
    assert_eq!(on_primary(&c), 1);
}

/// In transaction mode a client that logged in and sends nothing holds no server connection:
/// the first login borrows one to learn the greeting (server parameters) and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_no_server_connection() {
    let c = PgCluster::start(1);
    let p = Pgcast::start(&c, &transaction_pool(50, 10_000));
    let dsn = p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD);
    let rss_kib = || {
        std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .expect("VmRSS")
    };
    let before = rss_kib();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(client::connect(&dsn).await.expect("login"));
    }
    let after = rss_kib();
    eprintln!(
        "500 idle clients: RSS {before} -> {after} KiB ({} bytes per client)",
        (after.saturating_sub(before)) * 1024 / 500
    );
    let held = on_primary(&c);
    assert!(
        held <= 2,
        "{held} server connections on the primary for 500 idle clients (the greeting's, pooled)"
    );
    let s = p.status().expect("status");
    let in_use: i64 = s.backends.iter().map(|b| b.server_connections).sum();
    assert_eq!(in_use, 0, "no server connection is held by an idle client");
    // The first write takes one, and gives it back.
    idle[0]
        .batch_execute("CREATE TABLE IF NOT EXISTS touched (x int); INSERT INTO touched VALUES (1)")
        .await
        .unwrap();
    for r in &c.replicas {
        c.wait_replica_caught_up(&c.primary, r);
    }
    assert_eq!(
        value(&idle[499], "SELECT count(*)::text FROM touched").await,
        "1"
    );
}

/// A connection keeps the statements prepared on it for the next client; a client that binds
/// a name it never prepared still gets PostgreSQL's 26000, not another client's statement,
/// and a client preparing a name another client left there gets no 42P05.
#[test]
fn statements_another_client_left_are_not_the_clients_own() {
    use common::raw::{self, Raw};
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, &transaction_pool(1, 10_000));
    let login = || Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
    let run = |r: &mut Raw, msgs: &[Vec<u8>]| {
        r.send(&msgs.concat());
        r.until_ready()
    };
    let mut first = login();
    let msgs = run(
        &mut first,
        &[raw::parse("s1", "SELECT 'first'"), raw::sync()],
    );
    assert!(raw::errors(&msgs).is_empty(), "{msgs:?}");

    // Same user, same (only) server connection, which still has s1.
    let mut second = login();
    let bound = [raw::bind("s1", &[]), raw::execute(), raw::sync()];
    let msgs = run(&mut second, &bound);
    assert_eq!(raw::errors(&msgs), ["26000"], "{msgs:?}");
    let msgs = run(
        &mut second,
        &[raw::parse("s1", "SELECT 'second'"), raw::sync()],
    );
    assert!(raw::errors(&msgs).is_empty(), "its own s1: {msgs:?}");
    let msgs = run(&mut second, &bound);
    assert_eq!(raw::value(&msgs).as_deref(), Some("second"), "{msgs:?}");

    // The first client's s1 is its own again.
    let msgs = run(&mut first, &bound);
    assert_eq!(raw::value(&msgs).as_deref(), Some("first"), "{msgs:?}");
}
