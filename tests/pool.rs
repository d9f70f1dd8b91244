//! The backend connection pool against a real PostgreSQL 15: a client's backend session is
//! reset when it leaves and reused by the next client with the same user, database and startup
//! parameters; nothing of the first client's session state reaches the second.

mod common;

use common::client::{self, simple_value as value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;
use common::raw::{self, Raw};
use tokio_postgres::Client;

async fn connect(conninfo: &str) -> Client {
    client::connect(conninfo)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e}"))
}

fn idle_on_primary(p: &Pgcast, at_least: i64) {
    p.wait_until(&format!("{at_least} idle pooled connection(s)"), |s| {
        s.backends
            .iter()
            .any(|b| b.role == "primary" && b.idle_connections >= at_least)
    });
}

/// Waits (at most 5 s) until the primary's server process `pid` has ended.
fn wait_backend_gone(c: &PgCluster, pid: &str, what: &str) {
    let alive = || {
        c.psql(
            &c.primary,
            DATABASE,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .trim()
            == "1"
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: backend {pid} lives on"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pool_resets_and_reuses_backend_connections() {
    let c = PgCluster::start(0);
    c.psql(
        &c.primary,
        DATABASE,
        &format!("GRANT CREATE ON SCHEMA public TO {SCRAM_USER}"),
    );
    let p = Pgcast::start(&c, "");
    let primary = p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD);

    let first = connect(&primary).await;
    let pid = value(&first, "SELECT pg_backend_pid()").await;
    first
        .batch_execute(
            "SET application_name = 'dirty';
             SET statement_timeout = '123s';
             CREATE TEMP TABLE scratch (x int);
             PREPARE leftover AS SELECT 1;
             LISTEN pool_channel;
             SELECT pg_advisory_lock(42);",
        )
        .await
        .unwrap();
    drop(first);
    idle_on_primary(&p, 1);

    let second = connect(&primary).await;
    assert_eq!(
        value(&second, "SELECT pg_backend_pid()").await,
        pid,
        "the second client reuses the first one's backend session"
    );
    assert_eq!(value(&second, "SHOW application_name").await, "");
    assert_eq!(value(&second, "SHOW statement_timeout").await, "0");
    assert_eq!(
        value(
            &second,
            "SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't'"
        )
        .await,
        "0",
        "temporary tables are gone"
    );
    assert_eq!(
        value(&second, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(
        value(&second, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        value(
            &second,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await,
        "0",
        "advisory locks were released"
    );

    // While the pooled connection is in use, another client gets a connection of its own, and
    // a different user never gets this user's connection.
    let third = connect(&primary).await;
    assert_ne!(value(&third, "SELECT pg_backend_pid()").await, pid);
    let other_user = connect(&p.conninfo(p.primary_port, MD5_USER, MD5_PASSWORD)).await;
    assert_ne!(value(&other_user, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(value(&other_user, "SELECT current_user").await, MD5_USER);

    // A client that leaves inside a transaction does not hand its connection to anyone.
    let busy = connect(&primary).await;
    let busy_pid = value(&busy, "SELECT pg_backend_pid()").await;
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    drop(busy);
    drop(second);
    drop(third);
    idle_on_primary(&p, 2);
    let mut seen = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = connect(&primary).await;
        seen.push(value(&c, "SELECT pg_backend_pid()").await);
        clients.push(c);
    }
    assert!(
        !seen.contains(&busy_pid),
        "a connection left in a transaction was reused: {seen:?} contains {busy_pid}"
    );
    let status = p.status().expect("status");
    assert!(status.routed.pool_reused >= 3, "{:?}", status.routed);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_mode_none_opens_a_connection_per_client() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "[pool]\nmode = \"none\"\n");
    let primary = p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD);
    let first = connect(&primary).await;
    let pid = value(&first, "SELECT pg_backend_pid()").await;
    drop(first);
    let second = connect(&primary).await;
    assert_ne!(value(&second, "SELECT pg_backend_pid()").await, pid);
    let s = p.status().expect("status");
    assert!(s.backends.iter().all(|b| b.idle_connections == 0));
    assert_eq!(s.routed.pool_reused, 0);
}

/// Directly, a backend ends with its client. Through the session pool it outlives a client
/// that said goodbye cleanly, but not one that saw an error (a cancel is one) or vanished
/// without Terminate: psycopg_pool's `test_reset_broken` and psycopg's `test_ctrl_c` expect a
/// fresh backend after those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reuse_after_an_error_or_a_client_that_vanished() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    let login = || Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
    let pid_of = |r: &mut Raw| raw::value(&r.simple("SELECT pg_backend_pid()")).expect("a pid");
    let wait_gone = |pid: &str, what: &str| wait_backend_gone(&c, pid, what);

    // Control: after a clean goodbye the next client gets the same backend.
    let mut clean = login();
    let clean_pid = pid_of(&mut clean);
    clean.send(&raw::terminate());
    drop(clean);
    idle_on_primary(&p, 1);
    let mut failing = login();
    assert_eq!(
        pid_of(&mut failing),
        clean_pid,
        "control: a clean goodbye pools"
    );

    assert_eq!(raw::errors(&failing.simple("SELECT 1/0")), ["22012"]);
    assert_eq!(
        pid_of(&mut failing),
        clean_pid,
        "the session goes on after the error"
    );
    failing.send(&raw::terminate());
    drop(failing);
    wait_gone(&clean_pid, "a client that saw an error left");

    let mut vanishing = login();
    let vanished_pid = pid_of(&mut vanishing);
    drop(vanishing); // socket closed, no Terminate
    wait_gone(&vanished_pid, "a client vanished without Terminate");
    let s = p.status().expect("status");
    assert!(
        s.backends.iter().all(|b| b.idle_connections == 0),
        "nothing was pooled: {:?}",
        s.backends
    );
}

/// `pool.max_server_connections` caps this balancer's server connections per backend, in
/// sessions and idle together; a client beyond it waits in line for `checkout_timeout_ms`,
/// then gets PostgreSQL's 53300 naming the backend, and an idle pooled connection of another
/// user makes room at once. Sessions connect at login here, so the wait is the login's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_capped_and_clients_wait_in_line() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(
        &c,
        "[pool]\nconnect = \"at_login\"\nmax_server_connections = 2\ncheckout_timeout_ms = 1000\n",
    );
    let scram = p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD);
    let on_primary = || c.test_user_backends_on_primary();
    let first = connect(&scram).await;
    let second = connect(&scram).await;
    let Err(refused) = client::connect(&scram).await else {
        panic!("a third client got in past the cap");
    };
    let db = refused.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    let primary_name = p.primary_status().name;
    assert!(
        db.message().contains(&format!("backend {primary_name} "))
            && db.message().contains("waited"),
        "names the backend and the wait: {}",
        db.message()
    );
    assert_eq!(on_primary(), 2, "never more than the cap on the primary");

    // A client in line gets the connection a leaving client frees.
    let line = scram.clone();
    let waiter = tokio::spawn(async move { client::connect(&line).await });
    p.wait_until("a client waiting", |s| {
        s.backends.iter().any(|b| b.clients_waiting == 1)
    });
    drop(first);
    let waiter = waiter.await.unwrap().expect("the waiting client gets in");
    assert_eq!(value(&waiter, "SELECT 1").await, "1");
    assert_eq!(on_primary(), 2);

    // Two idle pooled connections fill the cap; another user's login closes one of them.
    drop(waiter);
    drop(second);
    idle_on_primary(&p, 2);
    let other = connect(&p.conninfo(p.primary_port, MD5_USER, MD5_PASSWORD)).await;
    assert_eq!(value(&other, "SELECT current_user").await, MD5_USER);
    assert!(on_primary() <= 2);
    let b = p.primary_status();
    assert_eq!(b.checkout_timeouts, 1, "{b:?}");
    assert!(b.longest_wait_ms >= 1000, "{b:?}");
}

/// On a `primary` listener in session mode a session relays bytes once its connection is open
/// (`passthrough.rs`). A clean goodbye pools the connection; queries sent right before
/// Terminate still get their replies (and then the connection ends, as directly); Terminate in
/// the middle of COPY FROM STDIN closes the connection (the server would wait for the data
/// forever) instead of hanging or pooling it.
#[test]
fn goodbyes_of_a_relayed_session() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    let login = || Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
    let pid_of = |r: &mut Raw| raw::value(&r.simple("SELECT pg_backend_pid()")).expect("a pid");
    let gone = |pid: &str, what: &str| wait_backend_gone(&c, pid, what);

    let mut clean = login();
    let clean_pid = pid_of(&mut clean);
    clean.send(&raw::terminate());
    drop(clean);
    idle_on_primary(&p, 1);

    let mut pipelined = login();
    assert_eq!(
        pid_of(&mut pipelined),
        clean_pid,
        "pooled after a clean goodbye"
    );
    pipelined.send(
        &[
            raw::query("SELECT pg_sleep(0.2)::text || 'slept'"),
            raw::query("SELECT 'second'"),
            raw::terminate(),
        ]
        .concat(),
    );
    let replies: Vec<String> = pipelined
        .drain(std::time::Duration::from_secs(3))
        .iter()
        .map(|(tag, body)| match tag {
            b'D' => raw::first_value(body),
            other => (*other as char).to_string(),
        })
        .collect();
    assert_eq!(replies, ["T", "slept", "C", "Z", "T", "second", "C", "Z"]);
    gone(&clean_pid, "Terminate went to the server after the queries");

    let mut copying = login();
    let copying_pid = pid_of(&mut copying);
    assert!(raw::errors(&copying.simple("CREATE TEMP TABLE relayed (a int)")).is_empty());
    copying.send(&raw::query("COPY relayed FROM STDIN"));
    assert_eq!(copying.read().map(|m| m.0), Some(b'G'), "CopyInResponse");
    copying.send(&raw::copy_data(b"1\n"));
    copying.send(&raw::terminate());
    assert!(copying.drain(std::time::Duration::from_secs(3)).is_empty());
    gone(&copying_pid, "the connection left in COPY");
    let s = p.status().expect("status");
    assert!(
        s.backends.iter().all(|b| b.idle_connections == 0),
        "nothing left mid-COPY or after Terminate was pooled: {:?}",
        s.backends
    );
}
