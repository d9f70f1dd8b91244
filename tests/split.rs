//! Session-level fidelity of the read/write split against a real PostgreSQL 15 primary and
//! replica: each case runs through pgcast's `auto` listener and directly on the primary, and
//! must give the same results and SQLSTATEs.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::client::{connect, simple_value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;
use common::raw::{self, errors, value, Raw};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// No extra configuration: the defaults are what is tested.
const READ_FUNCTIONS: &str = "";

/// Functions the safety-net test turns from harmless STABLE readers into VOLATILE writers
/// behind pgcast's back (directly on the primary, after pgcast loaded its function catalog),
/// as another session or balancer would: until the next catalog refresh pgcast still takes
/// them for reads and sends them to a replica, which refuses them.
const SNEAKY: [&str; 4] = ["sneaky_simple", "sneaky_ext", "sneaky_tx", "sneaky_again"];

fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start(1);
        let mut sql = format!(
            "SET ROLE {SCRAM_USER};
             CREATE TABLE log (v text);
             CREATE TABLE uniq (id int PRIMARY KEY);
             GRANT ALL ON log, uniq TO {MD5_USER};"
        );
        // Where a statement ran: pg_is_in_recovery() itself always gets the primary's
        // answer through an auto listener (a role question), so tests ask a STABLE wrapper.
        sql.push_str(
            "CREATE FUNCTION on_standby() RETURNS bool STABLE LANGUAGE sql
               AS 'SELECT pg_is_in_recovery()';",
        );
        for f in SNEAKY {
            sql.push_str(&format!(
                "CREATE FUNCTION {f}() RETURNS bool STABLE LANGUAGE sql AS 'SELECT false';"
            ));
        }
        c.psql(&c.primary, DATABASE, &sql);
        c.wait_replica_caught_up(&c.primary, &c.replicas[0]);
        c
    })
}

fn primary_conninfo(c: &PgCluster) -> String {
    c.primary.conninfo(SCRAM_USER, SCRAM_PASSWORD, DATABASE)
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Runs statements one simple Query each; the last value or the SQLSTATE of each.
async fn run(conninfo: &str, statements: &[&str]) -> Vec<String> {
    let client = connect(conninfo).await.unwrap();
    let mut out = Vec::new();
    for sql in statements {
        let r = match client.simple_query(sql).await {
            Ok(msgs) => msgs
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .next_back()
                .unwrap_or_else(|| "ok".into()),
            Err(e) => code(&e),
        };
        out.push(r);
    }
    out
}

/// The same statements through pgcast and on the primary give the same answers.
async fn same_as_primary(p: &Pgcast, statements: &[&str]) -> Vec<String> {
    let via = run(&p.auto(), statements).await;
    let direct = run(&primary_conninfo(cluster()), statements).await;
    assert_eq!(via, direct, "{statements:?}");
    via
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_begin_follows_the_transaction_mode() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    // Until the functions are known every call counts as a write (on_standby() included).
    connect(&p.auto()).await.unwrap();
    p.wait_until("functions loaded", |s| s.statement_cache.functions_loaded);
    // Ends the read-only transaction, then writes: must not run on a replica.
    let got = same_as_primary(
        &p,
        &[
            "BEGIN",
            "SET TRANSACTION READ ONLY; COMMIT; INSERT INTO log VALUES ('after commit') \
             RETURNING (SELECT on_standby())",
        ],
    )
    .await;
    assert_eq!(got, ["ok", "f"]);
    // READ WRITE before the first query of a BEGIN READ ONLY transaction is legal.
    let got = same_as_primary(
        &p,
        &[
            "BEGIN READ ONLY",
            "SET TRANSACTION READ WRITE",
            "INSERT INTO log VALUES ('rw') RETURNING (SELECT on_standby())",
            "COMMIT",
        ],
    )
    .await;
    assert_eq!(got, ["ok", "ok", "f", "ok"]);
    // ...but not after it (25001 on both, not the standby's 0A000).
    let got = same_as_primary(
        &p,
        &[
            "BEGIN READ ONLY",
            "SELECT 1",
            "SET TRANSACTION READ WRITE",
            "ROLLBACK",
        ],
    )
    .await;
    assert_eq!(got, ["ok", "1", "25001", "ok"]);
    // A read-only transaction still runs on the replica.
    let got = run(
        &p.auto(),
        &["BEGIN READ ONLY", "SELECT on_standby()", "COMMIT"],
    )
    .await;
    assert_eq!(got, ["ok", "t", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_session_default_stays_on_the_primary() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    for set in [
        "SET default_transaction_isolation = 'serializable'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        let got = same_as_primary(
            &p,
            &[
                set,
                "SELECT count(*) >= 0 FROM log",
                "SHOW transaction_isolation",
                "SELECT on_standby()",
            ],
        )
        .await;
        assert_eq!(got, ["ok", "t", "serializable", "f"], "{set}");
    }
    // default_transaction_read_only: writes fail as on the primary, reads still work.
    let got = same_as_primary(
        &p,
        &[
            "SET default_transaction_read_only = on",
            "INSERT INTO log VALUES ('ro')",
            "SELECT count(*) >= 0 FROM log",
        ],
    )
    .await;
    assert_eq!(got, ["ok", "25006", "t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_replica_refuses_runs_again_on_the_primary() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    let retried = |p: &Pgcast| p.status().expect("status").routed.retried_on_primary;
    assert_eq!(retried(&p), 0);
    // Connect once so the database's functions are loaded, then replace the readers behind
    // pgcast's back.
    connect(&p.auto()).await.unwrap();
    p.wait_until("functions loaded", |s| s.statement_cache.functions_loaded);
    let mut sql = String::new();
    for f in SNEAKY {
        sql.push_str(&format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS bool VOLATILE LANGUAGE sql
               AS 'INSERT INTO log VALUES (''{f}'') RETURNING pg_is_in_recovery()';"
        ));
    }
    c.psql(
        &c.primary,
        DATABASE,
        &format!("SET ROLE {SCRAM_USER}; {sql}"),
    );
    c.wait_replica_caught_up(&c.primary, &c.replicas[0]);

    // Simple protocol: the client gets the function's result, from the primary.
    let client = connect(&p.auto()).await.unwrap();
    assert_eq!(simple_value(&client, "SELECT sneaky_simple()").await, "f");
    assert_eq!(retried(&p), 1);
    // Learned: the next call goes to the primary at once.
    let client = connect(&p.auto()).await.unwrap();
    assert_eq!(simple_value(&client, "SELECT sneaky_simple()").await, "f");
    assert_eq!(retried(&p), 1);

    // Extended protocol (Parse/Bind/Execute/Sync).
    let client = connect(&p.auto()).await.unwrap();
    let row = client.query_one("SELECT sneaky_ext()", &[]).await.unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(retried(&p), 2);

    // Inside a read-only transaction: never re-run; the same error as on the primary.
    let got = same_as_primary(&p, &["BEGIN READ ONLY", "SELECT sneaky_tx()", "ROLLBACK"]).await;
    assert_eq!(got, ["ok", "25006", "ok"]);
    assert_eq!(retried(&p), 2);

    // After rows of an earlier statement reached the client: not re-run either.
    let client = connect(&p.auto()).await.unwrap();
    let e = client
        .simple_query("SELECT 1; SELECT sneaky_again()")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    assert_eq!(retried(&p), 2);

    let logged = simple_value(
        &connect(&primary_conninfo(c)).await.unwrap(),
        "SELECT string_agg(v, ',' ORDER BY v) FROM log WHERE v LIKE 'sneaky%'",
    )
    .await;
    assert_eq!(logged, "sneaky_ext,sneaky_simple,sneaky_simple");
    assert!(
        p.log().contains("ran it on the primary"),
        "logged once per shape:\n{}",
        p.log()
    );
}

/// The protocol steps psycopg 3 takes for a prepared statement, then SQL DEALLOCATE.
fn deallocate_steps(port: u16) -> Vec<String> {
    let mut r = Raw::connect(port, MD5_USER, MD5_PASSWORD, DATABASE);
    let mut out = Vec::new();
    let mut step = |r: &mut Raw, bytes: Vec<u8>| {
        r.send(&bytes);
        let msgs = r.until_ready();
        let e = errors(&msgs);
        out.push(if e.is_empty() {
            value(&msgs).unwrap_or_else(|| "ok".into())
        } else {
            e.join(",")
        });
    };
    step(
        &mut r,
        [raw::parse("_pg3_0", "SELECT 1 + $1::int"), raw::sync()].concat(),
    );
    let run = [raw::bind("_pg3_0", &["1"]), raw::execute(), raw::sync()].concat();
    step(&mut r, run.clone());
    step(&mut r, raw::query("DEALLOCATE _pg3_0"));
    step(&mut r, run.clone());
    step(
        &mut r,
        [raw::parse("_pg3_0", "SELECT 10 + $1::int"), raw::sync()].concat(),
    );
    step(&mut r, run);
    step(&mut r, raw::query("DEALLOCATE ALL"));
    step(&mut r, raw::query("DEALLOCATE _pg3_0"));
    out
}

#[test]
fn sql_deallocate_of_a_protocol_statement() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    let via = deallocate_steps(p.auto_port);
    let direct = deallocate_steps(c.primary.port);
    assert_eq!(via, direct);
    assert_eq!(via, ["ok", "2", "ok", "26000", "ok", "11", "ok", "26000"]);
}

/// libpq's pipeline (psycopg's test_pipeline_communicate_uniqviol): Bind/Describe/Execute
/// without Sync or Flush; the client waits for the results, which PostgreSQL flushes with
/// the unique violation.
fn pipeline_steps(port: u16, first: i32) -> Vec<String> {
    let mut r = Raw::connect(port, MD5_USER, MD5_PASSWORD, DATABASE);
    assert!(errors(&r.simple("BEGIN")).is_empty());
    r.send(
        &[
            raw::parse("insertion", "INSERT INTO uniq VALUES ($1) RETURNING id"),
            raw::sync(),
        ]
        .concat(),
    );
    assert!(errors(&r.until_ready()).is_empty());
    let (a, b) = (first.to_string(), (first + 1).to_string());
    let mut pipeline = Vec::new();
    for id in [&a, &b, &a, &b] {
        pipeline.extend(
            [
                raw::bind("insertion", &[id]),
                raw::describe_portal(),
                raw::execute(),
            ]
            .concat(),
        );
    }
    r.send(&pipeline);
    let mut got = Vec::new();
    while let Some((tag, body)) = r.read() {
        got.push(match tag {
            b'D' => raw::first_value(&body).replace(&a, "a").replace(&b, "b"),
            b'E' => raw::sqlstate(&body),
            other => (other as char).to_string(),
        });
        if tag == b'E' {
            break;
        }
    }
    r.send(&raw::sync());
    let end = r.until_ready();
    got.push(format!(
        "Z{}",
        end.last().map(|m| m.1[0] as char).unwrap_or('?')
    ));
    assert!(errors(&r.simple("ROLLBACK")).is_empty());
    got
}

#[test]
fn pipeline_without_sync_gets_its_error() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    let via = pipeline_steps(p.auto_port, 1);
    let direct = pipeline_steps(c.primary.port, 1);
    assert_eq!(via, direct);
    assert_eq!(
        via,
        ["2", "T", "a", "C", "2", "T", "b", "C", "2", "T", "23505", "ZE"]
    );
}

#[test]
fn a_server_fatal_reaches_the_client_once() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    let mut r = Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
    let pid = value(&r.simple("SELECT pg_backend_pid()")).unwrap();
    c.psql(
        &c.primary,
        DATABASE,
        &format!("SELECT pg_terminate_backend({pid})"),
    );
    let msgs = r.drain(Duration::from_secs(3));
    assert_eq!(errors(&msgs), ["57P01"], "{msgs:?}");
}

/// Queries pipelined before Terminate, in one write.
fn terminate_steps(port: u16) -> Vec<String> {
    let mut r = Raw::connect(port, MD5_USER, MD5_PASSWORD, DATABASE);
    r.send(
        &[
            raw::query("SELECT pg_sleep(0.3)::text || 'slept'"),
            raw::query("SELECT count(*) FROM log WHERE false"),
            raw::terminate(),
        ]
        .concat(),
    );
    r.drain(Duration::from_secs(5))
        .iter()
        .map(|(tag, body)| match tag {
            b'D' => raw::first_value(body),
            b'E' => raw::sqlstate(body),
            other => (*other as char).to_string(),
        })
        .collect()
}

#[test]
fn terminate_after_pipelined_queries_keeps_their_replies() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    let via = terminate_steps(p.auto_port);
    let direct = terminate_steps(c.primary.port);
    assert_eq!(via, direct);
    assert_eq!(via, ["T", "slept", "C", "Z", "T", "0", "C", "Z"]);
}

/// Runs statements one extended-protocol query each; the first value or the SQLSTATE of each.
async fn run_extended(conninfo: String, steps: &[&str]) -> Vec<String> {
    let client = connect(&conninfo).await.unwrap();
    let mut out = Vec::new();
    for sql in steps {
        out.push(match client.query(*sql, &[]).await {
            Ok(rows) => rows
                .first()
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|| "ok".into()),
            Err(e) => code(&e),
        });
    }
    out
}

/// The extended protocol's BEGIN READ ONLY is deferred like the simple one's: `SET
/// TRANSACTION READ WRITE` before the first query works as on the primary; a statement that
/// fails to parse after a BEGIN aborts the transaction, as on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_begin_read_only_is_deferred() {
    let c = cluster();
    let p = Pgcast::start(c, READ_FUNCTIONS);
    connect(&p.auto()).await.unwrap();
    p.wait_until("functions loaded", |s| s.statement_cache.functions_loaded);
    let read_write = [
        "BEGIN READ ONLY",
        "SET TRANSACTION READ WRITE",
        "INSERT INTO log VALUES ('ext') RETURNING (SELECT on_standby())::text",
        "COMMIT",
    ];
    let via = run_extended(p.auto(), &read_write).await;
    assert_eq!(via, run_extended(primary_conninfo(c), &read_write).await);
    assert_eq!(via, ["ok", "ok", "false", "ok"]);
    let aborted = ["BEGIN", "SELECT 1; SELECT 2", "SELECT 'after'", "ROLLBACK"];
    let via = run_extended(p.auto(), &aborted).await;
    assert_eq!(via, run_extended(primary_conninfo(c), &aborted).await);
    assert_eq!(via, ["ok", "42601", "25P02", "ok"]);
}
