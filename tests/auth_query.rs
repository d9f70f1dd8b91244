//! `[auth_query]` against a real PostgreSQL 15 primary and replica: users that are not in the
//! configuration are looked up on the primary through a function, the answer is cached for
//! the TTL (a cache hit does not ask again), and a user the lookup no longer returns cannot
//! log in once its entry expired.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::client::{connect, simple_value, sqlstate};
use common::pg_cluster::{PgCluster, DATABASE};
use common::pgcast::Pgcast;

const CACHED: &str = "aq_cached";
const REVOKED: &str = "aq_revoked";
const PASSWORD: &str = "looked-up";

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// The lookup function counts its calls per user name and returns a role's stored password
/// only while the name is in `pgcast_auth.allowed`.
fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start(1);
        c.create_roles("scram-sha-256", &[CACHED, REVOKED], PASSWORD);
        c.psql(
            &c.primary,
            DATABASE,
            &format!(
                "CREATE SCHEMA pgcast_auth;
                 CREATE TABLE pgcast_auth.allowed (name text PRIMARY KEY);
                 CREATE TABLE pgcast_auth.calls (name text);
                 INSERT INTO pgcast_auth.allowed VALUES ('{CACHED}'), ('{REVOKED}');
                 CREATE FUNCTION pgcast_auth.lookup(u text) RETURNS text
                   LANGUAGE sql VOLATILE SECURITY DEFINER AS $$
                     INSERT INTO pgcast_auth.calls VALUES (u);
                     SELECT rolpassword FROM pg_authid
                      WHERE rolname = u AND u IN (SELECT name FROM pgcast_auth.allowed);
                   $$;"
            ),
        );
        c.wait_replica_caught_up(&c.primary, &c.replicas[0]);
        c
    })
}

fn auth_query(ttl_ms: u64) -> String {
    format!("\n[auth_query]\nquery = \"SELECT pgcast_auth.lookup($1)\"\nttl_ms = {ttl_ms}\n")
}

fn lookups(c: &PgCluster, name: &str) -> i64 {
    c.psql(
        &c.primary,
        DATABASE,
        &format!("SELECT count(*) FROM pgcast_auth.calls WHERE name = '{name}'"),
    )
    .parse()
    .expect("a count")
}

fn revoke(c: &PgCluster, name: &str) {
    c.psql(
        &c.primary,
        DATABASE,
        &format!("DELETE FROM pgcast_auth.allowed WHERE name = '{name}'"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looked_up_user_logs_in_and_a_cache_hit_does_not_ask_again() {
    let c = cluster();
    // A TTL far beyond the test: every answer below comes from the cache after the first.
    let rules = "\n[[access]]\naddress = \"all\"\nuser = [\"aq_rejected\"]\nmethod = \"reject\"\n\
                 \n[[access]]\naddress = \"all\"\nmethod = \"scram-sha-256\"\n";
    let p = Pgcast::start(c, &(auth_query(3_600_000) + rules));
    let login = p.conninfo(p.auto_port, CACHED, PASSWORD);
    let client = connect(&login)
        .await
        .unwrap_or_else(|e| panic!("looked up: {e}\n{}", p.log()));
    let port = simple_value(&client, "SELECT inet_server_port()").await;
    assert_eq!(
        port,
        c.replicas[0].port.to_string(),
        "a read on the replica"
    );
    let port = simple_value(
        &client,
        "SELECT inet_server_port() FROM pg_advisory_xact_lock(1)",
    )
    .await;
    assert_eq!(port, c.primary.port.to_string(), "a write on the primary");
    assert_eq!(lookups(c, CACHED), 1);

    // Removed from the lookup, but cached: still logs in, and nothing is asked.
    revoke(c, CACHED);
    let again = connect(&login).await.expect("a cache hit");
    assert_eq!(simple_value(&again, "SELECT current_user").await, CACHED);
    let e = connect(&p.conninfo(p.auto_port, CACHED, "wrong"))
        .await
        .expect_err("a wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(lookups(c, CACHED), 1, "cache hits do not query the primary");

    // An unknown user is asked once, then answered from the cache too.
    for _ in 0..2 {
        let e = connect(&p.conninfo(p.auto_port, "aq_nobody", "x"))
            .await
            .expect_err("unknown");
        assert_eq!(sqlstate(&e), "28P01");
    }
    assert_eq!(lookups(c, "aq_nobody"), 1);

    // A client the access rules refuse costs no lookup.
    let e = connect(&p.conninfo(p.auto_port, "aq_rejected", "x"))
        .await
        .expect_err("rejected");
    assert_eq!(sqlstate(&e), "28000");
    assert_eq!(lookups(c, "aq_rejected"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_cannot_log_in_once_its_entry_expired() {
    let c = cluster();
    let p = Pgcast::start(c, &auth_query(200));
    let login = p.conninfo(p.primary_port, REVOKED, PASSWORD);
    let client = connect(&login)
        .await
        .unwrap_or_else(|e| panic!("looked up: {e}\n{}", p.log()));
    assert_eq!(simple_value(&client, "SELECT current_user").await, REVOKED);

    revoke(c, REVOKED);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match connect(&login).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "still logs in\n{}", p.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(sqlstate(&refused), "28P01", "{refused}");
    assert!(lookups(c, REVOKED) >= 2, "asked again after the TTL");
    // The session already in goes on.
    assert_eq!(simple_value(&client, "SELECT 1").await, "1");
}
