//! IPv6 on the proxy's side: listeners on an IPv6 address, backends at IPv6 addresses (health
//! checks, sessions, cancel requests), and `pgcast status` writing them as `[addr]:port`.
//! The anycast speakers are IPv4 only (OSPFv2, BGP with IPv4 unicast).

mod common;

use common::client::{cancelled, connect, simple_value};
use common::pg_cluster::{PgCluster, SCRAM_PASSWORD, SCRAM_USER};
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
