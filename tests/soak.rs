//! Chaos soak (issue 14): the anycast lab of `lab/` (`lab/up`: FRR router r1, pgcast on b1..b3,
//! PostgreSQL pg1 primary with pg2 synchronous and pg3 asynchronous standbys, client c1) under
//! a ledger writer and two readers through the anycast address, while a seeded chaos loop
//! kills -9, freezes, SIGTERMs and restarts balancers, cuts their backend routes, restarts r1's
//! routing daemon and fails the primary over (`soak/chaos.rs`). Checked:
//!
//! * every acknowledged ledger write is on the primary after each failover and at the end;
//! * r1 never routes to a balancer that cannot serve for longer than the detection budget of
//!   the cause (`soak/watch.rs`, sampled every 50 ms);
//! * no client waits longer than [`MAX_WAIT`] for a working connection (`soak/clients.rs`);
//! * no pgcast panics or exits by itself.
//!
//! `SOAK_SECONDS` (default 60: the suite's version), `SOAK_SEED` (default 1), `LAB_ROUTING`
//! (ospf, bgp), `LAB_BFD` (1, 0), `SOAK_REPORT` (a file for the report). `lab/soak` runs it for
//! 10 minutes with a release build. Needs root and `ip netns` (see `tests/lab.rs`).

#[path = "common/netlab/mod.rs"]
mod netlab;

#[path = "common/lab_scripts.rs"]
mod lab_scripts;

#[path = "soak/chaos.rs"]
mod chaos;
#[path = "soak/clients.rs"]
mod clients;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/watch.rs"]
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::{Chaos, Schedule};
use clients::{Clients, Role};
use lab_scripts::Lab;
use netlab::lossy;
use watch::{Budgets, Checker, Marks, RouteReader};

/// The longest a client may go without a successful operation. The slowest recovery in the
/// schedule is r1's ospfd restarting: zebra drops its routes, the new ospfd waits a dead
/// interval (3 s) before it elects itself DR, and each balancer, master of the database
/// exchange (higher router id), resends its first DD packet, which r1 discarded while waiting,
/// only after its RxmtInterval (5 s, the default): the route is back ~8 s after the restart.
/// Add a client's own 3 s operation timeout (a session left on a balancer that froze) and a
/// second of retry pause and SPF. A failover (stop, promote, pgcast's rise 2 x 200 ms) takes
/// ~1-2 s.
const MAX_WAIT: Duration = Duration::from_secs(12);
const MAX_WAIT_WHY: &str = "12 s = r1's ospfd restart (3 s dead interval before the DR \
    election + 5 s RxmtInterval until the balancers resend their first DD packet) + the clients' \
    3 s operation timeout + 1 s for retry pause and SPF";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .map(|o| lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Lines of each balancer's pgcast.log that contain "panicked".
fn panics(lab: &Lab) -> Vec<(usize, Vec<String>)> {
    (1..=3)
        .map(|b| {
            let log = std::fs::read_to_string(lab.state.join(format!("b{b}/pgcast.log")))
                .unwrap_or_default();
            let lines = log
                .lines()
                .filter(|l| l.contains("panicked"))
                .map(str::to_string)
                .collect();
            (b, lines)
        })
        .collect()
}

/// Polls `pred` every 200 ms (some predicates run a shell) for `timeout`.
fn eventually(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !pred() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

#[test]
fn chaos_soak() {
    let seconds: u64 = env_or("SOAK_SECONDS", 60);
    let seed: u64 = env_or("SOAK_SEED", 1);
    let routing = match std::env::var("LAB_ROUTING").as_deref() {
        Ok("bgp") => "bgp",
        _ => "ospf",
    };
    let bfd = if std::env::var("LAB_BFD").as_deref() == Ok("0") {
        "0"
    } else {
        "1"
    };
    let Some(lab) = Lab::up_with(routing, bfd) else {
        return;
    };
    let sql = |n: usize, q: &str| lab.lib("lab_pg_sql", &[&n.to_string(), q]);
    let out = sql(
        1,
        "CREATE TABLE soak_ledger (id bigint PRIMARY KEY, value bigint NOT NULL); \
         ALTER TABLE soak_ledger OWNER TO app",
    );
    assert!(out.status.success(), "{}", lossy(&out.stderr));
    for n in [2, 3] {
        assert!(
            eventually(Duration::from_secs(20), || {
                lossy(&sql(n, "SELECT to_regclass('soak_ledger') IS NOT NULL").stdout).trim() == "t"
            }),
            "pg{n} did not replay the ledger table"
        );
    }

    let budgets = Budgets::for_lab(routing, bfd == "1");
    let table = if lab.lib("lab_resilient_active", &[]).status.success() {
        "100"
    } else {
        "main"
    };
    let route = || RouteReader {
        router_ns: lab.ns("r1"),
        table: table.into(),
    };
    let marks = Arc::new(Marks::default());
    let pid_files = [1, 2, 3].map(|b| lab.state.join(format!("b{b}/pid")));
    let checker = Checker::start(route(), marks.clone(), pid_files, budgets.clone());
    let clients = Clients::start(&lab.ns("c1"));
    assert!(
        eventually(Duration::from_secs(30), || clients
            .with(|s| Role::ALL.iter().all(|r| s.last_ok(*r).is_some()))),
        "the clients did not get going:\n{}",
        lab.log_tails(20)
    );

    let started = Instant::now();
    let mut chaos = Chaos::new(&lab, marks, route(), &clients);
    chaos.run(Schedule::new(seed), started + Duration::from_secs(seconds));
    let ran = started.elapsed();
    // A calm stretch at the end: every client keeps working.
    std::thread::sleep(Duration::from_secs(2));
    let ledger = chaos.ledger_check("at the end");
    let final_primary = chaos.cluster.primary;
    let chaos::Chaos {
        events,
        problems,
        ledger_checks,
        forced_exits,
        ..
    } = chaos;
    let seen = clients.stop();
    let findings = checker.stop();

    let header = format!(
        "pgcast chaos soak: seed {seed}, {seconds} s of chaos (ran {:.0} s), routing {routing}, BFD {}, \
         r1 forwarding table {table}, commit {}, pgcast {}",
        ran.as_secs_f64(),
        if bfd == "1" { "100 ms x 3" } else { "off" },
        git_commit(),
        netlab::pgcast_bin().display()
    );
    let soak = report::Soak {
        header,
        t0: started,
        events: &events,
        problems: &problems,
        forced_exits,
        ledger_checks: &ledger_checks,
        ledger,
        final_primary,
        seen: &seen,
        findings: &findings,
        budgets: &budgets,
        max_wait_allowed: MAX_WAIT,
        wait_bound_why: MAX_WAIT_WHY,
        panics: panics(&lab),
    };
    let text = soak.render();
    println!("{text}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    let failed: Vec<String> = soak
        .checks()
        .into_iter()
        .filter(|(_, held)| !held)
        .map(|(what, _)| what)
        .collect();
    assert!(
        failed.is_empty(),
        "soak checks failed (seed {seed}):\n{}\n\n{text}\n{}",
        failed.join("\n"),
        lab.log_tails(20)
    );
}
