//! IPv6 on the proxy's side: listeners on an IPv6 address, backends at IPv6 addresses (health
//! checks, sessions, cancel requests), and `pgcast status` writing them as `[addr]:port`.
//! The anycast speakers are IPv4 only (OSPFv2, BGP with IPv4 unicast).

mod common;

use common::client::{cancelled, connect, simple_value};
use common::pg_cluster::{PgCluster, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;

/// The harness's configuration with every listener on ::1 and every backend at ::1.
fn over_ipv6(config: String) -> String {
    config
        .replace("address = \"127.0.0.1:", "address = \"[::1]:")
        .replace("host = \"127.0.0.1\"", "host = \"::1\"")
}

fn conninfo_v6(port: u16) -> String {
    format!(
        "host=::1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname=app \
         connect_timeout=10"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_backends_over_ipv6_split_reads_and_writes_and_cancel() {
    let c = PgCluster::start(1);
    // Where a statement ran: pg_is_in_recovery() itself always gets the primary's answer
    // through an auto listener (a role question), so the test asks a STABLE wrapper.
    c.psql(
        &c.primary,
        "app",
        &format!(
            "CREATE TABLE over_v6 (x int); GRANT ALL ON over_v6 TO {SCRAM_USER};
             CREATE FUNCTION on_standby() RETURNS bool STABLE LANGUAGE sql
               AS 'SELECT pg_is_in_recovery()';"
        ),
    );
    c.wait_replica_caught_up(&c.primary, &c.replicas[0]);
    let p = Pgcast::start_edited(&c, "", over_ipv6);
    let status = p.wait_until("both backends up at ::1", |s| {
        s.backends.iter().filter(|b| b.up).count() == 2
    });
    for b in &status.backends {
        assert!(b.address.starts_with("[::1]:"), "{:?}", b.address);
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p.auto_port)).is_err(),
        "the listener is on ::1 only"
    );

    let client = connect(&conninfo_v6(p.auto_port)).await.unwrap();
    let read = simple_value(
        &client,
        "SELECT host(inet_server_addr()) || ' ' || on_standby()::text",
    )
    .await;
    assert_eq!(read, "::1 true", "a read goes to the replica, over IPv6");
    let write = simple_value(
        &client,
        "INSERT INTO over_v6 VALUES (1) \
         RETURNING host(inet_server_addr()) || ' ' || on_standby()::text",
    )
    .await;
    assert_eq!(write, "::1 false", "a write goes to the primary, over IPv6");

    // The cancel request reaches pgcast at ::1 and the backend at ::1.
    assert_eq!(cancelled(client, "SELECT pg_sleep(30)").await, "57014");
}

/// A listener on `[::]` takes IPv4 clients too (as IPv4-mapped IPv6 addresses); the access
/// rules see them as the IPv4 addresses they are, and name IPv6 clients as PostgreSQL would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_listener_matches_ipv4_clients_against_ipv4_rules() {
    fn dual_stack(config: String) -> String {
        config.replace("address = \"127.0.0.1:", "address = \"[::]:")
    }
    let c = PgCluster::start(0);
    let rules = format!(
        "
[[access]]
address = \"127.0.0.1\"
user = [\"{MD5_USER}\"]
method = \"reject\"

[[access]]
address = \"127.0.0.0/8\"
method = \"scram-sha-256\"
"
    );
    let p = Pgcast::start_edited(&c, &rules, dual_stack);

    let v4 = connect(&p.auto())
        .await
        .expect("an IPv4 client matches 127.0.0.0/8");
    assert_eq!(simple_value(&v4, "SELECT 1").await, "1");
    let e = connect(&p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD))
        .await
        .expect_err("rejected");
    let db = e.as_db_error().expect("a FATAL from pgcast");
    assert_eq!(
        db.message(),
        format!(
            "pgcast access rules reject connection for host \"127.0.0.1\", user \"{MD5_USER}\", \
             database \"app\", no encryption"
        ),
        "an IPv4 client is named by its IPv4 address"
    );

    let e = connect(&conninfo_v6(p.auto_port))
        .await
        .expect_err("no rule names ::1");
    let db = e.as_db_error().expect("a FATAL from pgcast");
    assert_eq!(db.code().code(), "28000");
    assert_eq!(
        db.message(),
        format!(
            "no pgcast access rule for host \"::1\", user \"{SCRAM_USER}\", database \"app\", \
             no encryption"
        )
    );
}
