//! The threads `pgcast run` starts: the proxy's workers, a health thread and a routing thread,
//! the routing one under SCHED_RR (`node.speakers_realtime_priority`) so that BFD's timers do
//! not wait for the scheduler on a busy host. Runs as root, as CI does.

mod common;

use common::pg_cluster::PgCluster;
use common::pgcast::Pgcast;

/// (thread name, scheduling policy, real-time priority) of every thread of `pid`, from
/// /proc/PID/task/TID/stat (fields 40 and 41, rt_priority and policy).
fn threads(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let dir = entry.expect("task").path();
        let stat = std::fs::read_to_string(dir.join("stat")).expect("stat");
        let name = std::fs::read_to_string(dir.join("comm")).expect("comm");
        // The fields after "(comm)" start with field 3 (state).
        let after = &stat[stat.rfind(')').expect("comm ends") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields[n - 3].parse::<u32>().expect("number");
        out.push((name.trim().to_string(), field(41), field(40)));
    }
    out.sort();
    out
}

/// How `pgcast status` says the routing thread is scheduled (once the monitor has read it).
fn reported_scheduling(p: &Pgcast) -> String {
    let s = p.wait_until("the routing thread's scheduling read", |s| {
        s.routing
            .timer_lag
            .as_ref()
            .is_some_and(|t| t.scheduling != "not read yet")
    });
    s.routing.timer_lag.expect("timer lag reported").scheduling
}

const SCHED_OTHER: u32 = 0;
const SCHED_RR: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_thread_runs_round_robin_and_the_rest_does_not() {
    let c = PgCluster::start(0);
    let p = Pgcast::start(&c, "");
    let all = threads(p.pid());
    let routing: Vec<_> = all.iter().filter(|t| t.0 == "pgcast-routing").collect();
    assert_eq!(
        routing,
        [&("pgcast-routing".to_string(), SCHED_RR, 10)],
        "{all:?}"
    );
    assert!(all.iter().any(|t| t.0 == "pgcast-health"), "{all:?}");
    let others: Vec<_> = all.iter().filter(|t| t.0 != "pgcast-routing").collect();
    assert!(
        others.iter().all(|t| t.1 == SCHED_OTHER && t.2 == 0),
        "only the routing thread is real-time: {all:?}"
    );
    assert!(p.log().contains("routing speakers run under SCHED_RR"));
    // The proxy's runtime is reported once at start: tokio's defaults here (one worker per
    // core, 1,024 I/O events per poll).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let said = format!("proxy runtime (PGCAST_WORKER_THREADS, PGCAST_IO_EVENTS_PER_TICK) workers={cores} io_events_per_tick=1024");
    assert!(p.log().contains(&said), "{said:?} not in the log");
    // `pgcast status` says so, with how late the routing thread's timers fire.
    assert_eq!(reported_scheduling(&p), "SCHED_RR priority 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_zero_leaves_the_routing_thread_to_the_normal_scheduler() {
    let c = PgCluster::start(0);
    let p = Pgcast::start_with_node_keys(&c, "speakers_realtime_priority = 0\n");
    let all = threads(p.pid());
    assert!(all.iter().any(|t| t.0 == "pgcast-routing"), "{all:?}");
    assert!(all.iter().all(|t| t.1 == SCHED_OTHER), "{all:?}");
    assert_eq!(reported_scheduling(&p), "normal (SCHED_OTHER)");
}

/// A runtime knob set to something that is not a count stops the start and names the variable
/// (before, it was ignored without a word). Checked before the config is read, so none is
/// needed here.
#[test]
fn a_runtime_knob_that_is_not_a_count_stops_the_start_by_name() {
    for (name, value) in [
        ("PGCAST_WORKER_THREADS", "two"),
        ("PGCAST_WORKER_THREADS", "0"),
        ("PGCAST_IO_EVENTS_PER_TICK", "-1"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcast"))
            .args(["run", "-c", "/nonexistent/pgcast.toml"])
            .env(name, value)
            .output()
            .expect("pgcast runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}=\"{value}\"")) && stderr.contains("whole number"),
            "{name}={value}: {stderr}"
        );
    }
}
