//! `pgcast drain` / `pgcast undrain` through the admin socket, with a real PostgreSQL cluster
//! and no routing protocol (the verdicts are still computed and shown), plus the admin
//! socket's request protocol. Over OSPF and BGP with FRR: `tests/ospf_frr.rs`,
//! `tests/bgp_frr.rs`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use common::client::connect;
use common::pg_cluster::PgCluster;
use common::pgcast::Pgcast;

const PREFIX: &str = "198.18.2.0";

fn pgcast(p: &Pgcast, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgcast"))
        .args(args)
        .arg("--admin")
        .arg(&p.admin)
        .output()
        .expect("run pgcast");
    (out.status.code(), common::client::output_text(&out))
}

/// (announced, reason) of the one prefix in pgcast's status.
fn verdict(p: &Pgcast) -> (bool, String) {
    let s = p.status().expect("status");
    let v = s.routing.prefixes.first().expect("one prefix");
    (v.announce, v.reason.clone())
}

/// One request on the admin socket, written as is (nothing at all when `None`).
fn raw_request(p: &Pgcast, line: Option<&str>) -> String {
    let mut stream = UnixStream::connect(&p.admin).expect("connect admin socket");
    if let Some(line) = line {
        stream.write_all(line.as_bytes()).expect("write request");
    }
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read reply");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_withdraws_keeps_serving_and_undrain_announces_again() {
    let c = PgCluster::start(1);
    let p = Pgcast::start(
        &c,
        &format!("[[prefix]]\naddress = \"{PREFIX}/32\"\n\n[drain]\nquiesce_ms = 300\nwithdraw_grace_ms = 200\n"),
    );
    p.wait_until("prefix announced", |s| {
        s.routing.prefixes.first().is_some_and(|v| v.announce)
    });

    // A session open across the drain keeps working; the drain reports it.
    let held = connect(&p.auto()).await.expect("connect");
    let (code, out) = pgcast(&p, &["drain"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.trim(),
        format!("drained: {PREFIX}/32 withdrawn; 1 client sessions open here")
    );
    let (announced, reason) = verdict(&p);
    assert!(!announced, "withdrawn after the drain: {reason}");
    assert!(reason.contains("pgcast drain"), "{reason}");
    held.simple_query("SELECT 1").await.expect("held session");
    // The listeners accept again after the drain (only unicast clients reach them now).
    let fresh = connect(&p.auto()).await.expect("connect after the drain");
    fresh.simple_query("SELECT 1").await.expect("new session");
    let (code, out) = pgcast(&p, &["drain"]);
    assert_eq!((code, out.trim()), (Some(0), "already drained"));
    // Health changes do not end a drain: only `undrain` does.
    let (code, text) = pgcast(&p, &["status"]);
    assert!(
        text.contains("pgcast drain"),
        "status table shows it ({code:?}): {text}"
    );

    let (code, out) = pgcast(&p, &["undrain", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON reply");
    assert_eq!(reply["ok"], true);
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("undrained: {PREFIX}/32 announced (listener ")),
        "{message}"
    );
    assert!(verdict(&p).0, "announced again");
    let (code, out) = pgcast(&p, &["undrain"]);
    assert_eq!((code, out.trim()), (Some(0), "not drained"));
}

/// A connection still logging in when a drain starts is a client in flight too: once the
/// route moves, its next packets would reach another balancer and be reset. Here it never
/// logs in, so the withdrawal comes after `quiesce_ms` and says it waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_logging_in_is_waited_for() {
    let c = PgCluster::start(1);
    let p = Pgcast::start(
        &c,
        &format!("[[prefix]]\naddress = \"{PREFIX}/32\"\n\n[drain]\nquiesce_ms = 300\nwithdraw_grace_ms = 100\n"),
    );
    p.wait_until("prefix announced", |s| {
        s.routing.prefixes.first().is_some_and(|v| v.announce)
    });
    let _logging_in = std::net::TcpStream::connect(("127.0.0.1", p.auto_port)).expect("connect");
    p.wait_until("the connection is in start-up", |s| {
        s.prelogin_connections == 1
    });
    let (code, out) = pgcast(&p, &["drain"]);
    assert_eq!(code, Some(0), "{out}");
    let log = p.log();
    assert!(
        log.contains("withdrawing with client connections still open")
            && log.contains("connections=1"),
        "the quiesce counted the connection in start-up:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_requests() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    // Nothing to withdraw without a [[prefix]]: exit 1 and say so.
    let (code, out) = pgcast(&p, &["drain"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("nothing to drain"), "{out}");
    // A client that sends no request line gets the status (after a short wait), as before.
    let silent: serde_json::Value = serde_json::from_str(&raw_request(&p, None)).expect("JSON");
    assert!(silent["backends"].is_array(), "{silent}");
    let status: serde_json::Value =
        serde_json::from_str(&raw_request(&p, Some("status\n"))).expect("JSON");
    assert!(status["backends"].is_array(), "{status}");
    let bad: serde_json::Value =
        serde_json::from_str(&raw_request(&p, Some("reboot\n"))).expect("JSON");
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown admin command \"reboot\"")),
        "{bad}"
    );
}
