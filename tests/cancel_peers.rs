//! CancelRequests that reach a balancer other than the one holding the session, as anycast may
//! route them: two pgcast processes (node ids 1 and 2) on loopback in front of the same
//! PostgreSQL 15. Outcomes are checked through query results and the balancers' counters.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::client::connect;
use common::pg_cluster::{free_port, PgCluster, DATABASE, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;
use pgcast::proxy::cancel::{issuer_of, make_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// A primary alone: which backend runs the query does not matter here.
fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start(0))
}

/// Listener ports (auto, replica, primary) for a balancer that is started later.
fn ports() -> (u16, u16, u16) {
    (free_port(), free_port(), free_port())
}

fn peer(id: u8, port: u16) -> String {
    format!("\n[[peers]]\nid = {id}\naddress = \"127.0.0.1:{port}\"\n")
}

/// A CancelRequest as a client sends it: length 16, code 80877102, process id, secret.
fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&16i32.to_be_bytes());
    b[4..8].copy_from_slice(&80877102i32.to_be_bytes());
    b[8..12].copy_from_slice(&pid.to_be_bytes());
    b[12..16].copy_from_slice(&secret.to_be_bytes());
    b
}

/// The (pid, secret) of the client's BackendKeyData. tokio-postgres keeps them private, so its
/// CancelToken writes its CancelRequest into an in-memory pipe and the key is read from there.
async fn backend_key(client: &Client) -> (i32, i32) {
    let (ours, mut theirs) = tokio::io::duplex(64);
    client
        .cancel_token()
        .cancel_query_raw(ours, NoTls)
        .await
        .expect("CancelRequest written to the pipe");
    let mut bytes = Vec::new();
    theirs.read_to_end(&mut bytes).await.expect("read pipe");
    assert_eq!(bytes.len(), 16, "a CancelRequest is 16 bytes: {bytes:?}");
    let word =
        |at: usize| i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (pid, secret) = (word(8), word(12));
    assert_eq!(bytes, cancel_request(pid, secret), "header of the request");
    (pid, secret)
}

/// Sends a raw CancelRequest to a pgcast listener and waits until pgcast closes the connection,
/// which it does once it has handled the request.
async fn send_cancel(port: u16, pid: i32, secret: i32) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to pgcast");
    s.write_all(&cancel_request(pid, secret))
        .await
        .expect("send");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("read until close");
    assert!(rest.is_empty(), "a CancelRequest gets no answer: {rest:?}");
}

/// Waits until PostgreSQL runs `sql` (so a cancel cannot arrive before the query does).
async fn wait_running(c: &PgCluster, sql: &str) {
    let watcher = connect(&c.primary.conninfo(SCRAM_USER, SCRAM_PASSWORD, DATABASE))
        .await
        .expect("direct connection to the primary");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
                &[&sql],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_sent_to_the_other_balancer_reaches_the_query() {
    let c = cluster();
    let (ports1, ports2) = (ports(), ports());
    let p1 = Pgcast::start_node(c, 1, ports1, &peer(2, ports2.0));
    let p2 = Pgcast::start_node(c, 2, ports2, &peer(1, ports1.0));

    let client = connect(&p1.conninfo(p1.primary_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .unwrap();
    let (pid, secret) = backend_key(&client).await;
    assert_eq!(issuer_of(secret), 1, "balancer 1 issued the key");
    let sql = "SELECT pg_sleep(60)";
    let query = tokio::spawn(async move { client.simple_query(sql).await });
    wait_running(c, sql).await;

    send_cancel(p2.auto_port, pid, secret).await;
    // Not cancelled, pg_sleep(60) would end successfully and fail the assertion.
    let e = query
        .await
        .unwrap()
        .expect_err("the query was cancelled through balancer 2");
    assert_eq!(sqlstate(&e), "57014", "query_canceled: {e}");

    let s2 = p2.status().expect("status of balancer 2").cancel_requests;
    assert_eq!((s2.forwarded, s2.local, s2.unknown), (1, 0, 0), "{s2:?}");
    let s1 = p1.status().expect("status of balancer 1").cancel_requests;
    assert_eq!((s1.local, s1.forwarded, s1.unknown), (1, 0, 0), "{s1:?}");
    assert!(
        p2.log().contains("cancel request forwarded"),
        "log:\n{}",
        p2.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_sent_to_a_balancer_without_peers_is_dropped() {
    let c = cluster();
    let p1 = Pgcast::start_node(c, 1, ports(), "");
    let p2 = Pgcast::start_node(c, 2, ports(), "");

    let client = connect(&p1.conninfo(p1.primary_port, SCRAM_USER, SCRAM_PASSWORD))
        .await
        .unwrap();
    let (pid, secret) = backend_key(&client).await;
    let sql = "SELECT pg_sleep(3)";
    let query = tokio::spawn(async move { client.simple_query(sql).await });
    wait_running(c, sql).await;

    send_cancel(p2.auto_port, pid, secret).await;
    // Balancer 2 has handled the request by now (it closed the connection): it dropped it.
    let s2 = p2.status().expect("status of balancer 2").cancel_requests;
    assert_eq!((s2.unknown, s2.forwarded, s2.local), (1, 0, 0), "{s2:?}");

    query
        .await
        .unwrap()
        .expect("the cancel sent to balancer 2 did not reach the query");
    let s1 = p1.status().expect("status of balancer 1").cancel_requests;
    assert_eq!(s1.local, 0, "{s1:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_addresses_do_not_bounce_a_cancel_forever() {
    let c = cluster();
    let (ports1, ports2) = (ports(), ports());
    // Both claim that balancer 3 is the other one: a key of 3 would go round in circles.
    let p1 = Pgcast::start_node(c, 1, ports1, &peer(3, ports2.0));
    let p2 = Pgcast::start_node(c, 2, ports2, &peer(3, ports1.0));

    send_cancel(p1.auto_port, 4242, make_secret(3, 0x00ab_cdef)).await;
    // 1 forwards to 2, 2 forwards back to 1, which is still forwarding that key and drops it.
    let s1 = p1.status().expect("status of balancer 1").cancel_requests;
    assert_eq!((s1.forwarded, s1.duplicate), (1, 1), "{s1:?}");
    let s2 = p2.status().expect("status of balancer 2").cancel_requests;
    assert_eq!((s2.forwarded, s2.duplicate), (1, 0), "{s2:?}");
}
