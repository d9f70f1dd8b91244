//! What strangers can do before they log in, judged against PostgreSQL itself where it has an
//! answer: repeated encryption requests, and floods that must not flood the log.
//! Runs real PostgreSQL 15 (started and removed by the test).

mod common;

use common::client::{connect, raw_conversation, raw_exchange};
use common::pg_cluster::PgCluster;
use common::pgcast::Pgcast;

/// A second SSLRequest is refused as PostgreSQL refuses it (checked against PostgreSQL
/// itself); a stranger's 1,000 CancelRequests with random keys cost a line or two of log,
/// not a thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_postgresql_answers_and_do_not_flood_the_log() {
    let c = PgCluster::start(1);
    let c = &c;
    let p = Pgcast::start(c, "");
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
    let sqlstate_of = |out: &[u8]| {
        let text = String::from_utf8_lossy(out).to_string();
        let at = text.find("\0C")?;
        Some(text.get(at + 2..at + 7)?.to_string())
    };
    // Two SSLRequests in one write: data after the request, before its answer.
    let twice = [SSL_REQUEST, SSL_REQUEST].concat();
    // One, its answer, then the second.
    let direct = [
        raw_exchange(c.primary.port, &twice).await,
        raw_conversation(c.primary.port, &SSL_REQUEST, &SSL_REQUEST).await,
    ];
    let through = [
        raw_exchange(p.auto_port, &twice).await,
        raw_conversation(p.auto_port, &SSL_REQUEST, &SSL_REQUEST).await,
    ];
    for (d, t) in direct.iter().zip(&through) {
        let show = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        assert_eq!(d.first(), Some(&b'N'), "{}", show(d));
        assert_eq!(
            d.get(1),
            Some(&b'E'),
            "PostgreSQL refuses the second: {}",
            show(d)
        );
        assert_eq!(t.first(), Some(&b'N'), "{}", show(t));
        assert_eq!(sqlstate_of(t), sqlstate_of(d), "{} vs {}", show(t), show(d));
    }

    for i in 0..1000u32 {
        let pid = i.to_be_bytes();
        let secret = (0x9e37_79b9u32.wrapping_mul(i + 1)).to_be_bytes();
        let cancel = [&[0, 0, 0, 16, 4, 210, 22, 46][..], &pid, &secret].concat();
        raw_exchange(p.auto_port, &cancel).await;
    }
    let log = p.log();
    // At the default level (info); the tests log debug too.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cancel") && !l.contains("DEBUG"))
        .collect();
    assert!(
        (1..=3).contains(&lines.len()),
        "{} log lines for 1,000 cancel requests:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

/// Opens an idle connection to 127.0.0.1:`port` from `source` (any 127.0.0.0/8 address is
/// local), sending nothing.
async fn idle_from(source: &str, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind the source");
    socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect")
}

/// What the server sent within 500 ms, up to its close (empty: it sent nothing yet).
async fn sent_within_500ms(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        s.read_to_end(&mut out),
    )
    .await;
    out
}

/// Idle strangers take pre-login places, never logged-in slots: over the per-source limit and
/// over the whole budget they get FATAL 53300 at once (counted by reason, logged once per
/// interval); another address still logs in while one source is at its limit; and the
/// listener self-check (every 100 ms here) takes no place: with the budget full for seconds,
/// the refusal counters hold exactly the strangers' refusals and every listener accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_use_the_prelogin_budget_not_the_clients_slots() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(
        &c,
        "[limits]\nmax_client_connections = 2\nmax_prelogin_connections = 20\nmax_prelogin_per_source = 5\nstartup_timeout_ms = 60000\n",
    );
    p.wait_until("every listener accepting", |s| {
        s.listeners.iter().all(|l| l.accepting)
    });
    let sqlstate = |out: &[u8]| {
        let text = String::from_utf8_lossy(out).to_string();
        text.find("\0C")
            .and_then(|at| text.get(at + 2..at + 7).map(str::to_string))
    };

    // One source: 5 admitted (silent), 3 refused with 53300.
    let mut held = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..8 {
        let mut s = idle_from("127.0.0.2", p.auto_port).await;
        let out = sent_within_500ms(&mut s).await;
        if out.is_empty() {
            admitted += 1;
        } else {
            assert_eq!(out.first(), Some(&b'E'), "{out:?}");
            assert_eq!(sqlstate(&out).as_deref(), Some("53300"), "{out:?}");
            refused += 1;
        }
        held.push(s);
    }
    assert_eq!((admitted, refused), (5, 3));
    // Another address logs in, more than max_client_connections strangers notwithstanding.
    let client = connect(&p.auto()).await.expect("login from 127.0.0.1");
    client.simple_query("SELECT 1").await.expect("query");
    drop(client);

    // Fill the whole budget (20) from three more sources; a fifth source is refused.
    for source in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..5 {
            held.push(idle_from(source, p.auto_port).await);
        }
    }
    for _ in 0..2 {
        let mut s = idle_from("127.0.0.6", p.auto_port).await;
        assert_eq!(
            sqlstate(&sent_within_500ms(&mut s).await).as_deref(),
            Some("53300")
        );
    }
    // ~20 self-check rounds with the budget full.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let s = p.status().expect("status");
    assert!(s.listeners.iter().all(|l| l.accepting), "{:?}", s.listeners);
    assert_eq!(s.prelogin_connections, 20);
    assert_eq!(
        (
            s.refused_connections.prelogin_per_source,
            s.refused_connections.prelogin_full
        ),
        (3, 2),
        "only the strangers were refused, never a self-check probe"
    );
    let log = p.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("connection refused before login"))
        .count();
    assert_eq!(lines, 1, "5 refusals within 10 s make one line:\n{log}");

    // The strangers leave: logins work again.
    drop(held);
    let client = p_login(&p).await;
    client.simple_query("SELECT 1").await.expect("query");
}

/// Logs in, retrying for 5 s while the closed strangers' places are given back.
async fn p_login(p: &Pgcast) -> tokio_postgres::Client {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match connect(&p.auto()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no login: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a stranger can do once per connection before logging in — fail a password, send a
/// start-up packet of another protocol, go quiet until the start-up timeout — is counted by
/// kind and logged at most once per 10 s per kind, with the number of others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_and_bad_startups_cost_a_line_per_interval() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "[limits]\nstartup_timeout_ms = 300\n");
    const N: u64 = 200;
    for _ in 0..N {
        let wrong = p.conninfo(p.auto_port, common::pg_cluster::MD5_USER, "wrong");
        let Err(e) = connect(&wrong).await else {
            panic!("a wrong password logged in")
        };
        assert_eq!(
            e.as_db_error().map(|d| d.code().code()),
            Some("28P01"),
            "{e}"
        );
        // Protocol version 0.0: PostgreSQL answers 0A000 and closes.
        let out = raw_exchange(p.auto_port, &[0, 0, 0, 8, 0, 0, 0, 0]).await;
        assert!(String::from_utf8_lossy(&out).contains("0A000"), "{out:?}");
    }
    for _ in 0..3 {
        let out = raw_exchange(p.auto_port, &[0, 0]).await;
        assert!(String::from_utf8_lossy(&out).contains("57014"), "{out:?}");
    }
    let s = p.status().expect("status");
    let f = &s.startup_failures;
    assert_eq!((f.auth_failed, f.protocol, f.timeout), (N, N, 3));
    let log = p.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // One line per kind per 10 s: two if the loop crossed a window.
    for needle in [
        "login failed",
        "bad start-up from a client",
        "did not finish start-up in time",
    ] {
        let n = count(needle);
        assert!((1..=2).contains(&n), "{n} lines with {needle:?}:\n{log}");
    }
    assert!(log.contains("more_since_last_line"), "{log}");
}
