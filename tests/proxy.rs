//! The proxy against a real PostgreSQL 15 primary with two streaming replicas.
//! Where a statement ran is checked with `on_standby()` (a STABLE wrapper of
//! `pg_is_in_recovery()`, which pgcast itself sends to the primary on `auto` listeners) and
//! `inet_server_port()`.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::client::{
    cancelled, connect, connect_listening, next_notification, raw_exchange, simple_value,
};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;
use futures_util::StreamExt;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// One cluster shared by the tests of this file (none of them changes its topology).
fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start(2);
        c.psql(
            &c.primary,
            DATABASE,
            &format!(
                "SET ROLE {SCRAM_USER};
                 CREATE TABLE items (id serial PRIMARY KEY, v text);
                 INSERT INTO items (v) VALUES ('seed');
                 CREATE SEQUENCE s;
                 CREATE FUNCTION bump() RETURNS bool VOLATILE LANGUAGE sql
                   AS 'INSERT INTO items (v) VALUES (''bump'') RETURNING pg_is_in_recovery()';
                 CREATE FUNCTION on_standby() RETURNS bool STABLE LANGUAGE sql
                   AS 'SELECT pg_is_in_recovery()';"
            ),
        );
        for r in &c.replicas {
            c.wait_replica_caught_up(&c.primary, r);
        }
        c
    })
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let client = connect(&p.auto()).await.unwrap();
    let row = client
        .query_one("SELECT on_standby(), inet_server_port()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "a plain read runs on a replica");
    let port: i32 = row.get(1);
    assert!(
        c.replicas.iter().any(|r| r.port as i32 == port),
        "port {port} is a replica"
    );

    let row = client
        .query_one(
            "INSERT INTO items (v) VALUES ('w') RETURNING (SELECT on_standby())",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "a write runs on the primary");
    let row = client.query_one("SELECT on_standby()", &[]).await.unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "read-your-writes: after a write the session reads from the primary"
    );

    let other = connect(&p.auto()).await.unwrap();
    assert!(other
        .query_one("SELECT on_standby()", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    let s = p.status().expect("status");
    assert!(
        s.routed.replica >= 2 && s.routed.primary >= 1,
        "{:?}",
        s.routed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_listener_rules() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    // (statement, runs on a replica?) — each on a fresh session, so read-your-writes is not involved.
    let cases: &[(&str, bool)] = &[
        ("SELECT on_standby()", true),
        ("VALUES (on_standby())", true),
        ("SELECT on_standby() FROM generate_series(1, 1)", true),
        ("SELECT on_standby(), random() >= 0", true),
        ("SELECT on_standby() FROM items LIMIT 1 FOR UPDATE", false),
        ("SELECT on_standby() FROM items LIMIT 1 FOR SHARE", false),
        ("SELECT on_standby() FROM items LIMIT 1 FOR NO KEY UPDATE", false),
        ("SELECT on_standby(), nextval('s')", false),
        ("SELECT bump()", false),
        ("WITH x AS (INSERT INTO items (v) VALUES ('cte') RETURNING 1) SELECT on_standby() FROM x", false),
        ("BEGIN READ ONLY; SELECT on_standby(); COMMIT", true),
        ("BEGIN; SELECT on_standby(); COMMIT", false),
        ("BEGIN; LOCK items IN SHARE MODE; SELECT on_standby(); COMMIT", false),
        ("SELECT on_standby(); SELECT 1 FROM items LIMIT 0; UPDATE items SET v = v WHERE false", false),
        // Questions about the server's role get the primary's answer.
        ("SELECT pg_is_in_recovery()", false),
        ("SELECT on_standby() AND current_setting('transaction_read_only') = 'on'", false),
        // STABLE, but assigns a transaction ID: fails on a standby.
        ("SELECT txid_current() > 0 AND on_standby()", false),
        ("SELECT pg_current_xact_id()::text <> '' AND on_standby()", false),
    ];
    for (sql, replica) in cases {
        let client = connect(&p.auto()).await.unwrap();
        let got = simple_value(&client, sql).await;
        assert_eq!(
            got == "t",
            *replica,
            "{sql} ran on the wrong backend (on_standby = {got})"
        );
    }

    // Server-state questions use the primary without starting read-your-writes or pinning.
    let client = connect(&p.auto()).await.unwrap();
    assert_eq!(
        simple_value(&client, "SHOW transaction_read_only").await,
        "off"
    );
    assert_eq!(
        simple_value(&client, "SELECT pg_is_in_recovery()").await,
        "f"
    );
    assert_eq!(
        simple_value(&client, "SELECT on_standby()").await,
        "t",
        "no read-your-writes, no pin"
    );
    // set_config(..., false) changes the session: pinned to the primary.
    simple_value(
        &client,
        "SELECT set_config('application_name', 'pinned', false)",
    )
    .await;
    assert_eq!(
        simple_value(
            &client,
            "SELECT current_setting('application_name') || ':' || on_standby()"
        )
        .await,
        "pinned:false"
    );

    // Transactions opened by separate messages stay where they started.
    let client = connect(&p.auto()).await.unwrap();
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT on_standby()").await, "t");
    client.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT on_standby()").await, "f");
    client.batch_execute("COMMIT").await.unwrap();

    // SELECT INTO creates a table: it must have run on the primary.
    let client = connect(&p.auto()).await.unwrap();
    client
        .batch_execute("SELECT 1 AS a INTO selected_into")
        .await
        .unwrap();
    assert_eq!(
        c.psql(&c.primary, DATABASE, "SELECT count(*) FROM selected_into"),
        "1"
    );

    // A session-level SET is replayed on the replica connection the session uses later.
    let client = connect(&p.auto()).await.unwrap();
    client
        .batch_execute("SET application_name = 'replayed'")
        .await
        .unwrap();
    assert_eq!(
        simple_value(
            &client,
            "SELECT current_setting('application_name') || ':' || on_standby()"
        )
        .await,
        "replayed:true"
    );

    // A temp table pins the session to the primary: reading it later must work.
    let client = connect(&p.auto()).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE t1 (x int); INSERT INTO t1 VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        simple_value(&client, "SELECT count(*)::text || on_standby() FROM t1").await,
        "1false"
    );
}

/// A function created or replaced through pgcast is a write at once: unknown, or forgotten
/// until the database's functions are reloaded (soon after the DDL, not at the next refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_changed_through_pgcast_are_writes_until_reloaded() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let admin = connect(&p.auto()).await.unwrap();
    // A session that never wrote, so read-your-writes is not involved. Opened before the DDL:
    // its query then follows the DDL by one round trip, well inside the 0.5 s before the
    // catalog reload (a new SCRAM login on a loaded machine was not).
    let fresh = connect(&p.auto()).await.unwrap();
    admin
        .batch_execute(
            "CREATE FUNCTION flip() RETURNS bool STABLE LANGUAGE sql AS 'SELECT pg_is_in_recovery()'",
        )
        .await
        .unwrap();
    assert_eq!(
        simple_value(&fresh, "SELECT flip()").await,
        "f",
        "unknown: primary"
    );
    for r in &c.replicas {
        c.wait_replica_caught_up(&c.primary, r);
    }
    let started = std::time::Instant::now();
    loop {
        let fresh = connect(&p.auto()).await.unwrap();
        if simple_value(&fresh, "SELECT flip()").await == "t" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "STABLE flip() never ran on a replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION flip() RETURNS bool VOLATILE LANGUAGE sql \
             AS 'SELECT pg_is_in_recovery()'",
        )
        .await
        .unwrap();
    for _ in 0..10 {
        let fresh = connect(&p.auto()).await.unwrap();
        assert_eq!(
            simple_value(&fresh, "SELECT flip()").await,
            "f",
            "VOLATILE now"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_role_listeners() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let ro = connect(&p.conninfo(p.replica_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .unwrap();
    assert_eq!(simple_value(&ro, "SELECT on_standby()").await, "t");
    let e = ro
        .batch_execute("INSERT INTO items (v) VALUES ('no')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "25006", "a replica listener never writes");
    // After its first statement the session only relays bytes (`passthrough.rs`): the
    // replica's own refusal reaches the client all the same.
    assert!(
        p.log()
            .contains("session relays bytes from now on connection=Replica"),
        "{}",
        p.log()
    );
    // Why the defaults send these non-VOLATILE functions to the primary: a standby refuses
    // them (the replica listener sends everything to a replica).
    for (f, code) in [
        ("txid_current()", "25006"),
        ("pg_current_xact_id()", "25006"),
        ("pg_walfile_name('0/0')", "55000"),
    ] {
        let e = ro.batch_execute(&format!("SELECT {f}")).await.expect_err(f);
        assert_eq!(sqlstate(&e), code, "{f} on a standby");
    }
    assert_eq!(
        simple_value(&ro, "SELECT txid_current_if_assigned() IS NULL").await,
        "t",
        "the _if_assigned variant works on a standby"
    );
    let rw = connect(&p.conninfo(p.primary_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .unwrap();
    assert_eq!(simple_value(&rw, "SELECT on_standby()").await, "f");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_named_statements_and_pipelining() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let client = connect(&p.auto()).await.unwrap();
    let stmt = client
        .prepare("SELECT on_standby(), $1::int + 1")
        .await
        .unwrap();
    for i in 0..3 {
        let row = client.query_one(&stmt, &[&i]).await.unwrap();
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, i32>(1), i + 1);
    }
    client
        .execute("INSERT INTO items (v) VALUES ($1)", &[&"ext"])
        .await
        .unwrap();
    // The statement was prepared on the replica; after the write it runs on the primary, where
    // pgcast must prepare it first without the client noticing.
    let row = client.query_one(&stmt, &[&41]).await.unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i32>(1), 42);

    // Pipelining: many requests in flight on one connection, answers in order.
    let fresh = connect(&p.auto()).await.unwrap();
    let stmt = fresh.prepare("SELECT $1::int * 2").await.unwrap();
    let futures = (0..50).map(|i| {
        let fresh = &fresh;
        let stmt = &stmt;
        async move {
            fresh
                .query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32 * 2);
    }
    drop(stmt);
    // Errors keep their SQLSTATE, and the session goes on.
    let e = fresh
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    assert_eq!(
        fresh
            .query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let client = connect(&p.auto()).await.unwrap();
    let sink = client.copy_in("COPY items (v) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"copy-a\ncopy-b\ncopy-c\n"))
        .await
        .unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 3);
    let stream = client
        .copy_out("COPY (SELECT v FROM items WHERE v LIKE 'copy-%' ORDER BY v) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let data: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(String::from_utf8(data).unwrap(), "copy-a\ncopy-b\ncopy-c\n");
    // COPY TO from a fresh session reads a replica.
    for r in &c.replicas {
        c.wait_replica_caught_up(&c.primary, r);
    }
    let fresh = connect(&p.auto()).await.unwrap();
    let stream = fresh
        .copy_out("COPY (SELECT on_standby()) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].as_ref().unwrap()[..], b"t\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_real_backend_pid() {
    let c = cluster();
    // Connecting at login, the client is told its server process's real PID.
    let p = Pgcast::start(c, "[pool]\nconnect = \"at_login\"\n");
    let (listener, mut rx) = connect_listening(&p.auto()).await.unwrap();
    listener.batch_execute("LISTEN pgcast_test").await.unwrap();
    let notifier = connect(&p.auto()).await.unwrap();
    let pid: i32 = notifier
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    notifier
        .batch_execute("NOTIFY pgcast_test, 'hello'")
        .await
        .unwrap();
    let n = next_notification(&mut rx).await;
    assert_eq!(n.channel(), "pgcast_test");
    assert_eq!(n.payload(), "hello");
    assert_eq!(
        n.process_id(),
        pid,
        "the notifying PID is the one pg_backend_pid() reported"
    );
    // The PID is the real one: pg_stat_activity on the primary knows it.
    let known = c.psql(
        &c.primary,
        DATABASE,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
    );
    assert_eq!(known, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_running_query() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    for sql in ["SELECT pg_sleep(30)", "SELECT pg_sleep(30), nextval('s')"] {
        let client = connect(&p.auto()).await.unwrap();
        assert_eq!(cancelled(client, sql).await, "57014", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_md5_authentication() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    connect(&p.conninfo(p.auto_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .unwrap();
    connect(&p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD))
        .await
        .unwrap();
    for (user, pw) in [(SCRAM_USER, "wrong"), (MD5_USER, "wrong"), ("nobody", "x")] {
        let Err(e) = connect(&p.conninfo(p.auto_port, user, pw)).await else {
            panic!("login as {user} with a wrong password must fail");
        };
        assert_eq!(sqlstate(&e), "28P01", "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages() {
    let c = cluster();
    let p = Pgcast::start(c, "[limits]\nmax_message_bytes = 4096\n");
    // Protocol 2.0 is refused like PostgreSQL does. (After an SSLRequest in the same write
    // it is "unencrypted data after SSL request": tests/strangers.rs.)
    let out = raw_exchange(p.auto_port, &[0, 0, 0, 8, 0, 2, 0, 0]).await;
    assert_eq!(out.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&out).contains("0A000"));
    // A length that makes no sense.
    let out = raw_exchange(p.auto_port, &[0, 0, 0, 3, 1, 2, 3]).await;
    assert_eq!(out.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&out).contains("08P01"));

    let victim = connect(&p.auto()).await.unwrap();
    let bystander = connect(&p.auto()).await.unwrap();
    let big = format!("SELECT '{}'", "x".repeat(10_000));
    let e = victim.simple_query(&big).await.unwrap_err();
    assert_eq!(sqlstate(&e), "08P01");
    assert!(victim.is_closed() || victim.simple_query("SELECT 1").await.is_err());
    assert_eq!(
        simple_value(&bystander, "SELECT 1").await,
        "1",
        "other sessions are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_the_cli() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &p.auto_port.to_string(),
        ])
        .args(["-U", SCRAM_USER, "-d", DATABASE])
        .args([
            "-c",
            "SELECT on_standby()",
            "-c",
            "\\copy (SELECT 1 UNION SELECT 2) TO STDOUT",
        ])
        .env("PGPASSWORD", SCRAM_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t\n1\n2\n");

    let bin = env!("CARGO_BIN_EXE_pgcast");
    let out = std::process::Command::new(bin)
        .args(["status", "--json", "--admin"])
        .arg(&p.admin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "healthy cluster: exit 0");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["backends"].as_array().map(|a| a.len()), Some(3));
    let out = std::process::Command::new(bin)
        .args(["status", "-c"])
        .arg(&p.config_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Backends")
            && table.contains("primary")
            && table.contains("none configured"),
        "{table}"
    );

    let out = std::process::Command::new(bin)
        .args(["check-config", "-c"])
        .arg(&p.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let bad = p.config_path.with_file_name("bad.toml");
    common::pgcast::write_config(
        &bad,
        &std::fs::read_to_string(&p.config_path)
            .unwrap()
            .replace("role = \"auto\"", "role = \"writer\""),
    );
    let out = std::process::Command::new(bin)
        .args(["check-config", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("role"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .args(["status", "--admin", "/nonexistent/pgcast.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no daemon: exit 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_transaction_read_only_after_begin_uses_a_replica() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let client = connect(&p.auto()).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .unwrap();
    assert_eq!(simple_value(&client, "SELECT on_standby()").await, "t");
    assert_eq!(
        simple_value(&client, "SELECT current_setting('transaction_read_only')").await,
        "on"
    );
    client.batch_execute("COMMIT").await.unwrap();
    // A BEGIN followed by anything else runs on the primary, as one transaction.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT on_standby()").await, "f");
    let a = simple_value(&client, "SELECT txid_current_if_assigned() IS NULL").await;
    client
        .batch_execute("INSERT INTO items (v) VALUES ('tx')")
        .await
        .unwrap();
    let b = simple_value(&client, "SELECT txid_current()::text").await;
    assert_eq!(
        simple_value(&client, "SELECT txid_current()::text").await,
        b,
        "same transaction"
    );
    assert_eq!(a, "t");
    client.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_metrics_trust_and_limits() {
    let c = cluster();
    let metrics_port = common::pg_cluster::free_port();
    // The listener self-check runs (every 100 ms in tests/common): its probes never take a
    // logged-in slot, so the counts below are exact.
    let p = Pgcast::start(
        c,
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[limits]\nmax_client_connections = 3\nstartup_timeout_ms = 3000\n"),
    );
    // Admin socket is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&p.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Metrics in Prometheus text format.
    connect(&p.auto())
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let body = raw_exchange(metrics_port, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("pgcast_backend_up{backend=\"pg1\",role=\"primary\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("pgcast_routed_total{target=\"replica\"}"),
        "{body}"
    );

    // A client that never finishes start-up is dropped after startup_timeout_ms (3 s: a
    // SCRAM login of a debug build on a loaded CI machine took longer than 0.5 s).
    let out = raw_exchange(p.auto_port, &[0, 0, 0]).await;
    assert!(String::from_utf8_lossy(&out).contains("57014"), "{out:?}");

    // max_client_connections = 3: the fourth gets 53300.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&p.auto()).await.unwrap());
    }
    let Err(e) = connect(&p.auto()).await else {
        panic!("a fourth client must be refused")
    };
    assert_eq!(sqlstate(&e), "53300");
    let body = raw_exchange(metrics_port, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("pgcast_connections_refused_total{reason=\"clients_full\"} 1"),
        "{body}"
    );
    // Full is not dead: after 5 self-check rounds with every slot taken, every listener
    // still reads as accepting (its probes need no slot).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = p.status().expect("status");
    assert!(s.listeners.iter().all(|l| l.accepting), "{:?}", s.listeners);
    drop(held);

    // SIGHUP: a new trust user is applied; a listener change is reported as not applied.
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let text = text.replacen("role = \"primary\"", "role = \"replica\"", 1)
        + "\n[[users]]\nname = \"postgres\"\nauth = \"trust\"\n";
    std::fs::write(&p.config_path, text).unwrap();
    p.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let trusted = loop {
        match connect(&format!(
            "host=127.0.0.1 port={} user=postgres dbname=app",
            p.auto_port
        ))
        .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "reload not applied: {e}\n{}",
                    p.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        simple_value(&trusted, "SELECT current_user").await,
        "postgres"
    );
    assert!(
        p.log()
            .contains("reload: [[listener]] changed: restart needed to apply"),
        "{}",
        p.log()
    );
    // `pgcast status` says the same, by name.
    let report = p
        .wait_until("the reload's report", |s| s.reload.is_some())
        .reload
        .expect("a reload report");
    assert_eq!(report.restart_needed, ["[[listener]]"], "{report:?}");
    assert_eq!(report.applied, ["[[user]]"], "{report:?}");
    assert_eq!(report.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_the_session() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    // A SET inside a transaction on the primary pins the session: later reads still see it.
    let client = connect(&p.auto()).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET search_path = pg_catalog, public")
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        simple_value(&client, "SELECT current_setting('search_path')").await,
        "pg_catalog, public"
    );
    // Session state inside a read-only transaction on a replica is refused, not lost.
    let client = connect(&p.auto()).await.unwrap();
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(simple_value(&client, "SELECT on_standby()").await, "t");
    let e = client
        .batch_execute("SET work_mem = '8MB'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    client.batch_execute("ROLLBACK").await.unwrap();
    // RESET ALL is replayed like a SET: the replica connection follows.
    let client = connect(&p.auto()).await.unwrap();
    client
        .batch_execute("SET application_name = 'before'")
        .await
        .unwrap();
    client.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(
        simple_value(
            &client,
            "SELECT current_setting('application_name') || ':' || on_standby()"
        )
        .await,
        ":true"
    );
    // SERIALIZABLE read-only transactions cannot run on a hot standby: they use the primary.
    let client = connect(&p.auto()).await.unwrap();
    assert_eq!(
        simple_value(
            &client,
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; SELECT on_standby(); COMMIT"
        )
        .await,
        "f"
    );
}

/// A client that asks for a database that does not exist makes pgcast try to load its
/// functions; the load fails with 3D000 and the database is forgotten (not retried for ever,
/// with a warning every 30 s), so every used database counts as loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_forgotten() {
    let c = cluster();
    let p = Pgcast::start(c, "");
    let url = p
        .auto()
        .replace(&format!("dbname={DATABASE}"), "dbname=no_such_db");
    assert_ne!(url, p.auto(), "conninfo names the database");
    let e = connect(&url).await.expect_err("no such database");
    assert_eq!(sqlstate(&e), "3D000");
    p.wait_until("the missing database forgotten", |s| {
        s.statement_cache.functions_loaded
    });
    let log = p.log();
    assert!(
        log.contains("database does not exist; forgetting its functions"),
        "{log}"
    );
    assert!(!log.contains("cannot load functions"), "{log}");
}
