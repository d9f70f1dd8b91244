//! What strangers can do before they log in, judged against PostgreSQL itself where it has an
//! answer: repeated encryption requests, and floods that must not flood the log.
//! Runs real PostgreSQL 15 (started and removed by the test).

mod common;

use common::client::{raw_conversation, raw_exchange};
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
