//! The listener self-check with a real pgcast and PostgreSQL: a balancer that cannot take new
//! clients (here: out of file descriptors, so `accept` fails and clients wait in the backlog)
//! withdraws its prefix although the database is fine, and announces it again once it can.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::client::connect;
use common::pg_cluster::PgCluster;
use common::pgcast::Pgcast;

const PREFIX: &str = "198.18.2.0";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read pgcast's fd table")
        .count()
}

/// Waits (at most 20 s) until pgcast's log has a line containing every one of `needles`.
fn wait_for_log_line(p: &Pgcast, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = p.log();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}\nlog:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_out_of_file_descriptors_withdraws_and_returns() {
    let c = PgCluster::start(0);
    // Clients that never send a startup packet hold their descriptor for the whole test.
    let p = Pgcast::start(
        &c,
        &format!(
            "[[prefix]]\naddress = \"{PREFIX}/32\"\n\n[limits]\nstartup_timeout_ms = 120000\n"
        ),
    );
    // The verdicts and the listeners' states come on separate channels: wait for both.
    p.wait_until("prefix announced, every listener accepting", |s| {
        s.routing.prefixes.first().is_some_and(|v| v.announce)
            && s.listeners.iter().all(|l| l.accepting)
    });

    // Leave pgcast a few descriptors, then take them with idle connections: the kernel
    // completes every handshake into the backlog, pgcast's accept() fails with EMFILE.
    let pid = p.pid();
    let limit = open_fds(pid) + 6;
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .expect("run prlimit");
    assert!(out.status.success(), "prlimit: {out:?}");
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            std::net::TcpStream::connect(("127.0.0.1", p.auto_port)).expect("idle connection"),
        );
    }

    let line = wait_for_log_line(
        &p,
        &["anycast verdict", "announce=false", "Too many open files"],
    );
    assert!(line.contains("not accepting connections"), "{line}");
    // What the withdrawal protects clients from: this balancer does not let them in.
    let attempt = tokio::time::timeout(Duration::from_secs(1), connect(&p.auto())).await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a client got in while pgcast was out of descriptors"
    );

    // Descriptors back: the self-check passes and the prefix is announced again.
    drop(idle);
    p.wait_until(
        "every listener accepting and the prefix announced again",
        |s| {
            s.listeners.iter().all(|l| l.accepting)
                && s.routing.prefixes.first().is_some_and(|v| v.announce)
                && s.healthy
        },
    );
    connect(&p.auto())
        .await
        .expect("a client gets in again")
        .simple_query("SELECT 1")
        .await
        .expect("query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_check_off_leaves_the_verdict_to_the_backends() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(
        &c,
        &format!(
            "[[prefix]]\naddress = \"{PREFIX}/32\"\n\n[health]\ninterval_ms = 100\nrise = 1\nfall = 2\ndatabase = \"app\"\nself_check = false\n"
        ),
    );
    let s = p.wait_until("prefix announced", |s| {
        s.routing.prefixes.first().is_some_and(|v| v.announce)
    });
    // Off: accepting from the start, never checked.
    assert!(s.listeners.iter().all(|l| l.accepting), "{:?}", s.listeners);
    // No self-check connection reached the proxy: only the test's own sessions would count.
    let log = p.log();
    assert!(
        !log.contains("self-check"),
        "no self-check runs when it is off:\n{log}"
    );
}
