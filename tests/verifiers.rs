//! Users configured with PostgreSQL's stored password (`pg_authid.rolpassword`) instead of the
//! password, against a real PostgreSQL 15 primary and replica: pgcast checks the client
//! against the hash and logs in to every backend without the password (SCRAM with the
//! client's proven ClientKey; MD5 with the hash).

mod common;

use std::sync::OnceLock;

use common::client::{connect, simple_value, sqlstate};
use common::pg_cluster::{PgCluster, DATABASE};
use common::pgcast::Pgcast;

const SCRAM_ROLE: &str = "hash_scram";
const MD5_ROLE: &str = "hash_md5";
/// A SCRAM role whose password the salt test sets again (the other test keeps its own).
const RESET_ROLE: &str = "hash_scram_reset";
const PASSWORD: &str = "only-the-client-knows";

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// A primary and a replica with the two roles, MD5_ROLE allowed in with md5 by pg_hba.conf.
fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let c = PgCluster::start(1);
        c.create_roles("scram-sha-256", &[SCRAM_ROLE, RESET_ROLE], PASSWORD);
        c.create_roles("md5", &[MD5_ROLE], PASSWORD);
        c.psql(
            &c.primary,
            DATABASE,
            &format!(
                "CREATE TABLE notes (v text);
                 GRANT ALL ON notes TO {SCRAM_ROLE}, {MD5_ROLE};"
            ),
        );
        for node in c.nodes() {
            // Before the catch-all scram-sha-256 line: the harness's pg_hba.conf ends with it.
            let hba = node.data_dir.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            let line = format!("host all {MD5_ROLE} 127.0.0.1/32 md5\n");
            std::fs::write(&hba, format!("{line}{text}")).expect("pg_hba.conf");
        }
        c.wait_replica_caught_up(&c.primary, &c.replicas[0]);
        for node in c.nodes() {
            c.psql(node, "postgres", "SELECT pg_reload_conf()");
        }
        c
    })
}

fn stored(c: &PgCluster, role: &str) -> String {
    c.psql(
        &c.primary,
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
    )
}

fn scram_user(c: &PgCluster, role: &str) -> String {
    format!(
        "\n[[users]]\nname = \"{role}\"\npassword_hash = \"{}\"\n",
        stored(c, role)
    )
}

fn users(c: &PgCluster) -> String {
    let md5 = stored(c, MD5_ROLE);
    let md5_user =
        format!("\n[[users]]\nname = \"{MD5_ROLE}\"\nauth = \"md5\"\npassword_hash = \"{md5}\"\n");
    scram_user(c, SCRAM_ROLE) + &md5_user
}

/// Logs in as `role` and uses the primary and the replica within one session: the replica
/// connection is opened after the login, with what the session kept.
async fn reads_and_writes_as(p: &Pgcast, c: &PgCluster, role: &str) {
    let client = connect(&p.conninfo(p.auto_port, role, PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{role} logs in: {e}\n{}", p.log()));
    let port: i32 = simple_value(&client, "SELECT inet_server_port()")
        .await
        .parse()
        .expect("a port");
    assert_eq!(
        port, c.replicas[0].port as i32,
        "a read runs on the replica"
    );
    assert_eq!(simple_value(&client, "SELECT current_user").await, role);
    let wrote = simple_value(
        &client,
        &format!("INSERT INTO notes VALUES ('{role}') RETURNING inet_server_port()"),
    )
    .await;
    assert_eq!(
        wrote,
        c.primary.port.to_string(),
        "a write runs on the primary"
    );

    let ro = connect(&p.conninfo(p.replica_port, role, PASSWORD))
        .await
        .expect("replica listener");
    assert_eq!(simple_value(&ro, "SELECT pg_is_in_recovery()").await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_with_only_the_stored_hash_log_in_everywhere() {
    let c = cluster();
    let p = Pgcast::start(c, &users(c));
    reads_and_writes_as(&p, c, SCRAM_ROLE).await;
    reads_and_writes_as(&p, c, MD5_ROLE).await;
    for role in [SCRAM_ROLE, MD5_ROLE] {
        let e = connect(&p.conninfo(p.auto_port, role, "wrong"))
            .await
            .expect_err("a wrong password");
        assert_eq!(sqlstate(&e), "28P01", "{role}");
    }
    assert!(
        !p.log().contains(PASSWORD),
        "the password is never logged\n{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_verifier_with_another_salt_is_named() {
    let c = cluster();
    // The verifier of a password set on the primary ...
    let p = Pgcast::start(c, &scram_user(c, RESET_ROLE));
    // ... that is then set again there (same password, new salt): pgcast still checks the
    // client against the old verifier, but its ClientKey no longer fits the backend's.
    c.psql(
        &c.primary,
        "postgres",
        &format!("SET password_encryption = 'scram-sha-256'; ALTER ROLE {RESET_ROLE} PASSWORD '{PASSWORD}'"),
    );
    // A database this role has not used through pgcast yet: no pooled connection to reuse.
    let conninfo = format!(
        "host=127.0.0.1 port={} user={RESET_ROLE} password={PASSWORD} dbname=postgres",
        p.primary_port
    );
    let e = connect(&conninfo)
        .await
        .expect_err("the backend's salt differs");
    let db = e.as_db_error().expect("an error from pgcast");
    assert_eq!(db.code().code(), "28000");
    assert!(
        db.message().contains("another salt or iteration count"),
        "{}",
        db.message()
    );
    assert!(
        p.log().contains("another salt or iteration count"),
        "{}",
        p.log()
    );

    // With the new verifier in the file, it works again.
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let old = stored_in(&text, RESET_ROLE);
    let text = text.replace(&old, &stored(c, RESET_ROLE));
    common::pgcast::write_config(&p.config_path, &text);
    p.signal("HUP");
    p.wait_until("the new verifier is applied", |s| {
        s.reload
            .as_ref()
            .is_some_and(|r| r.applied.contains(&"[[user]]".to_string()))
    });
    let client = connect(&conninfo).await.expect("logs in again");
    assert_eq!(
        simple_value(&client, "SELECT current_user").await,
        RESET_ROLE
    );
}

/// The password_hash of `role` in a config text this file wrote.
fn stored_in(text: &str, role: &str) -> String {
    let at = text
        .find(&format!("name = \"{role}\"\npassword_hash = \""))
        .expect("the user");
    let rest = &text[at..];
    let start = rest.find("SCRAM-SHA-256$").expect("a verifier");
    let len = rest[start..].find('"').expect("closing quote");
    rest[start..start + len].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_opens_connections_with_the_sessions_keys() {
    let c = cluster();
    let p = Pgcast::start(c, &(users(c) + "\n[pool]\nmode = \"transaction\"\n"));
    let login = p.conninfo(p.primary_port, SCRAM_ROLE, PASSWORD);
    let (a, b) = (
        connect(&login).await.expect("a"),
        connect(&login).await.expect("b"),
    );
    // a's open transaction holds its connection, so b's statements run on another one,
    // opened with the keys b proved.
    a.simple_query("BEGIN; SELECT 1").await.expect("a begins");
    for i in 0..3 {
        let n = simple_value(&b, &format!("SELECT {i} FROM pg_advisory_xact_lock({i})")).await;
        assert_eq!(n, i.to_string());
    }
    a.simple_query("COMMIT").await.expect("a commits");
    assert_eq!(simple_value(&a, "SELECT current_user").await, SCRAM_ROLE);
}
