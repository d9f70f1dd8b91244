//! `[pool] connect = "on_demand"` (the default) against a real PostgreSQL 15: a session opens
//! no server connection until it has something to run, its client is told a PID pgcast issued
//! (above any Linux PID), and that PID still works where a client uses one: CancelRequest,
//! notifications, `pg_terminate_backend` (which then kills nobody). What an earlier login was
//! told greets the next one; what a fresh connection reports differently reaches the client,
//! and a login the server refuses later ends the session with the server's own error.

mod common;

use std::time::Duration;

use common::client::{self, simple_value as value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER};
use common::pgcast::Pgcast;
use common::raw::{self, Raw};
use tokio_postgres::NoTls;

/// The smallest PID pgcast issues: above Linux's PID_MAX_LIMIT (2^22).
const FIRST_ISSUED_PID: i32 = (1 << 22) + 1;

/// Backends of the test users on the primary (pg_stat_activity).
fn on_primary(c: &PgCluster) -> i64 {
    c.test_user_backends_on_primary()
}

/// Server connections to the primary that sessions hold (`pgcast status`).
fn primary_in_use(p: &Pgcast) -> i64 {
    let s = p.status().expect("status");
    s.backends
        .iter()
        .filter(|b| b.role == "primary")
        .map(|b| b.server_connections)
        .sum()
}

/// 1,000 clients log in to an `auto` listener and send nothing: the primary sees one connection
/// (the first login's, which learned the greeting, pooled). A read runs on a replica and still
/// opens nothing on the primary; the first write opens one there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_logins_open_nothing_and_the_first_write_opens_the_primary() {
    let c = PgCluster::start(1);
    let p = Pgcast::start(&c, "");
    let dsn = p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(client::connect(&dsn).await.expect("login"));
    }
    assert!(on_primary(&c) <= 1, "{} on the primary", on_primary(&c));
    let s = p.status().expect("status");
    let in_use: i64 = s.backends.iter().map(|b| b.server_connections).sum();
    assert_eq!(in_use, 0, "no idle client holds a server connection");

    assert_eq!(value(&idle[1], "SELECT 'read'").await, "read");
    assert_eq!(
        primary_in_use(&p),
        0,
        "a read-only session holds no primary connection"
    );
    assert!(on_primary(&c) <= 1);

    idle[0]
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lazy_touched (x int); INSERT INTO lazy_touched VALUES (1)",
        )
        .await
        .unwrap();
    assert_eq!(
        primary_in_use(&p),
        1,
        "the writer holds the primary connection now"
    );
    assert_eq!(
        on_primary(&c),
        1,
        "the pooled greeting connection was taken"
    );
}

/// The issued PID: cancels reach the running query, notifications carry the notifier's issued
/// PID (the listener's own and another session's), and `pg_terminate_backend` of it kills
/// nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issued_pid_serves_cancel_notifications_and_kills_nobody() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    // The `auto` listener routes every statement; on the `primary` one a session relays
    // bytes once its connection is open (`passthrough.rs`): both must tell the same PIDs.
    for port in [p.auto_port, p.primary_port] {
        issued_pid_serves_cancel_and_notifications(&p, port).await;
    }
}

async fn issued_pid_serves_cancel_and_notifications(p: &Pgcast, port: u16) {
    let (listener_raw, listener_greeting) =
        Raw::connect_greeted(port, MD5_USER, MD5_PASSWORD, DATABASE);
    let (listener_pid, _) = raw::backend_key(&listener_greeting).expect("BackendKeyData");
    assert!(listener_pid >= FIRST_ISSUED_PID, "{listener_pid}");
    drop(listener_raw);

    let dsn = p.conninfo(port, MD5_USER, MD5_PASSWORD);
    let (listener, mut rx) = client::connect_listening(&dsn).await.unwrap();
    listener.batch_execute("LISTEN lazy_chan").await.unwrap();
    let (mut notifier, notifier_greeting) =
        Raw::connect_greeted(port, MD5_USER, MD5_PASSWORD, DATABASE);
    let (notifier_pid, _) = raw::backend_key(&notifier_greeting).expect("BackendKeyData");
    let real: i32 = raw::value(&notifier.simple("SELECT pg_backend_pid()"))
        .expect("a pid")
        .parse()
        .unwrap();
    assert_ne!(
        real, notifier_pid,
        "the server process is not the issued PID"
    );
    assert!(raw::errors(&notifier.simple("NOTIFY lazy_chan, 'other'")).is_empty());
    let n = client::next_notification(&mut rx).await;
    assert_eq!(n.payload(), "other");
    assert_eq!(n.process_id(), notifier_pid, "another session's issued PID");

    // pg_terminate_backend of an issued PID finds no such process and kills nobody.
    let killed = raw::value(&notifier.simple(&format!(
        "SELECT pg_terminate_backend({notifier_pid})::text"
    )));
    assert_eq!(killed.as_deref(), Some("false"));
    assert_eq!(
        raw::value(&notifier.simple("SELECT 'alive'")).as_deref(),
        Some("alive")
    );

    // A CancelRequest with the issued key reaches the running query.
    let token = listener.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = listener.simple_query("SELECT pg_sleep(30)").await;
        (listener, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.unwrap();
    let (listener, r) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time")
        .unwrap();
    let e = r.expect_err("the sleep was cancelled");
    assert_eq!(e.code().map(|c| c.code()), Some("57014"));

    // Its own notification carries its own issued PID.
    listener
        .batch_execute("NOTIFY lazy_chan, 'self'")
        .await
        .unwrap();
    let n = client::next_notification(&mut rx).await;
    assert_eq!(n.payload(), "self");
    assert!(n.process_id() >= FIRST_ISSUED_PID, "{}", n.process_id());
    assert_ne!(n.process_id(), notifier_pid);
}

/// A later login is greeted from memory; the first fresh connection it opens reports a
/// parameter that changed since (here by ALTER ROLE), and the client hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_changed_since_the_greeting_reaches_the_client() {
    let c = PgCluster::start(0);
    // No idle connection kept: the second session's connection is a fresh one.
    let p = Pgcast::start(&c, "[pool]\nmax_idle_per_key = 0\n");
    let (first, greeting) = Raw::connect_greeted(p.auto_port, MD5_USER, MD5_PASSWORD, DATABASE);
    let told = raw::parameters(&greeting);
    assert!(
        told.contains(&("DateStyle".into(), "ISO, MDY".into())),
        "{told:?}"
    );
    drop(first);
    c.psql(
        &c.primary,
        DATABASE,
        &format!("ALTER ROLE {MD5_USER} SET DateStyle = 'SQL, DMY'"),
    );
    let (mut second, greeting) =
        Raw::connect_greeted(p.auto_port, MD5_USER, MD5_PASSWORD, DATABASE);
    assert!(
        raw::parameters(&greeting).contains(&("DateStyle".into(), "ISO, MDY".into())),
        "greeted from memory"
    );
    let reply = second.simple("SHOW DateStyle");
    assert_eq!(raw::value(&reply).as_deref(), Some("SQL, DMY"));
    assert!(
        raw::parameters(&reply).contains(&("DateStyle".into(), "SQL, DMY".into())),
        "the change is reported: {:?}",
        raw::parameters(&reply)
    );
    c.psql(
        &c.primary,
        DATABASE,
        &format!("ALTER ROLE {MD5_USER} RESET DateStyle"),
    );
}

/// A database dropped after a login was greeted: the next login is still greeted from memory,
/// and its first statement gets the server's own FATAL 3D000 and ends the session, as a login
/// would have directly; the login after that meets the server and fails at login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_server_refuses_later_ends_with_its_own_error() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "[pool]\nmax_idle_per_key = 0\n");
    c.psql(&c.primary, DATABASE, "CREATE DATABASE lazy_gone");
    c.psql(
        &c.primary,
        DATABASE,
        &format!("GRANT ALL ON DATABASE lazy_gone TO {MD5_USER}"),
    );
    drop(Raw::connect(
        p.auto_port,
        MD5_USER,
        MD5_PASSWORD,
        "lazy_gone",
    ));
    c.psql(&c.primary, DATABASE, "DROP DATABASE lazy_gone WITH (FORCE)");

    let mut greeted = Raw::connect(p.auto_port, MD5_USER, MD5_PASSWORD, "lazy_gone");
    let reply = greeted.simple("SELECT 1");
    assert_eq!(raw::errors(&reply), ["3D000"], "{reply:?}");
    assert!(
        greeted.drain(Duration::from_secs(2)).is_empty(),
        "the session ended"
    );

    let dsn = p
        .conninfo(p.auto_port, MD5_USER, MD5_PASSWORD)
        .replace(&format!("dbname={DATABASE}"), "dbname=lazy_gone");
    let e = client::connect(&dsn)
        .await
        .expect_err("refused at login now");
    assert_eq!(e.code().map(|c| c.code()), Some("3D000"), "{e}");
}
