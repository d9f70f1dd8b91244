//! A client that reads slowly, or a server that consumes COPY data slowly, must not make
//! pgcast buffer the difference: it stops reading the fast side until the slow side catches
//! up (back-pressure), so its memory stays flat whatever the size of the result or the COPY.
//! Runs real PostgreSQL 15 (started and removed by the test).

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER};
use common::pgcast::Pgcast;
use common::raw::{self, Raw};

/// pgcast's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// How far pgcast's memory may grow while one client moves a gigabyte: a few socket buffers
/// and read buffers, not the data.
const MAX_GROWTH_KIB: u64 = 32 * 1024;

/// ~1 GiB of rows: 1 MiB rows of 1 KiB text.
const BIG_RESULT: &str = "SELECT repeat('x', 1024) FROM generate_series(1, 1048576)";

/// Reads `bytes` worth of messages from a result, then stops reading for a while: pgcast's
/// RSS before and after the pause.
fn read_then_stall(c: &mut Raw, bytes: usize, pid: u32) -> (u64, u64) {
    let mut seen = 0;
    while seen < bytes {
        let (tag, body) = c.read().expect("a row");
        assert!(
            tag == b'D' || tag == b'T' || tag == b'H' || tag == b'd',
            "tag {}",
            tag as char
        );
        seen += body.len() + 5;
    }
    let before = rss_kib(pid);
    // The server goes on producing; everything past the socket buffers must wait in the
    // server, not in pgcast.
    thread::sleep(Duration::from_secs(3));
    (before, rss_kib(pid))
}

#[test]
fn a_slow_reader_does_not_make_pgcast_buffer_a_gigabyte() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    let pid = p.pid();
    let idle = rss_kib(pid);
    for (what, sql) in [
        ("a 1 GiB result", BIG_RESULT.to_string()),
        (
            "a 1 GiB COPY TO STDOUT",
            format!("COPY ({BIG_RESULT}) TO STDOUT"),
        ),
    ] {
        let mut client = Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
        client.send(&raw::query(&sql));
        let (before, after) = read_then_stall(&mut client, 8 << 20, pid);
        // And once more, further into the result.
        let (_, later) = read_then_stall(&mut client, 32 << 20, pid);
        eprintln!("{what}: RSS idle {idle} KiB, reading {before} KiB, stalled {after} KiB, later {later} KiB");
        for rss in [after, later] {
            assert!(
                rss < idle + MAX_GROWTH_KIB,
                "{what}: pgcast grew from {idle} to {rss} KiB while its client did not read"
            );
        }
    }
}

#[test]
fn a_slow_copy_from_stdin_does_not_make_pgcast_buffer_the_client_data() {
    let c = PgCluster::start(0);
    // Every row waits 10 ms in a trigger: the server takes the data far slower than the
    // client sends it.
    c.psql(
        &c.primary,
        DATABASE,
        &format!(
            "CREATE TABLE sink (v text);
             CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE INSERT ON sink FOR EACH ROW EXECUTE FUNCTION slow_row();
             GRANT INSERT ON sink TO {MD5_USER};"
        ),
    );
    let p = Pgcast::start(&c, "");
    let pid = p.pid();
    let idle = rss_kib(pid);
    let mut client = Raw::connect(p.primary_port, MD5_USER, MD5_PASSWORD, DATABASE);
    client.send(&raw::query("COPY sink FROM STDIN"));
    let (tag, _) = client.read().expect("CopyInResponse");
    assert_eq!(tag, b'G');

    // 256 MiB of rows, written until the socket stops taking them (bounded by a deadline).
    let mut out = client.stream();
    out.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let row = raw::copy_data(&[b"y".repeat(1023), b"\n".to_vec()].concat());
    let chunk: Vec<u8> = row.iter().copied().cycle().take(row.len() * 1024).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0usize;
    while sent < 256 << 20 && Instant::now() < deadline {
        if out.write_all(&chunk).is_err() {
            break; // blocked for 2 s: back-pressure reached the client
        }
        sent += chunk.len();
    }
    let stalled = rss_kib(pid);
    eprintln!(
        "COPY FROM STDIN: sent {} MiB before blocking; RSS idle {idle} KiB, then {stalled} KiB",
        sent >> 20
    );
    assert!(
        sent < 256 << 20,
        "the client wrote 256 MiB into a server that takes ~100 rows/s: nothing pushed back"
    );
    assert!(
        stalled < idle + MAX_GROWTH_KIB,
        "pgcast grew from {idle} to {stalled} KiB holding COPY data the server had not taken"
    );
}
