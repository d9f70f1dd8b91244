//! End to end: the anycast lab of `lab/` (FRR router, three pgcast balancers announcing
//! 198.18.2.0/32 over OSPF, or over BGP in the `bgp_` tests, PostgreSQL primary + two streaming
//! replicas, a client behind the router), one test per failure scenario of `lab/scenarios.sh`.
//!
//! Each test builds its own lab with a unique namespace prefix and state directory (`lab/up`
//! with `LAB_NAME`/`LAB_STATE`, the pgcast binary cargo built) and removes it with `lab/down`
//! whatever happens. The scenario script checks outcomes (routes present or gone, rows present,
//! errors seen) and prints its report, timings included; the test asserts that every check held.
//! Labs are built one at a time (they share the two CPUs with each other's timers).
//!
//! Needs root and `ip netns`; without them the tests say why and pass, except under CI
//! (`CI=true`), where they fail.

#[path = "common/netlab/mod.rs"]
mod netlab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use netlab::lossy;

/// One lab at a time in this process.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Lab {
    name: String,
    state: PathBuf,
    /// LAB_ROUTING: "ospf" or "bgp".
    routing: &'static str,
    /// LAB_BFD: "1" or "0".
    bfd: &'static str,
    _one: MutexGuard<'static, ()>,
}

impl Lab {
    /// `lab/up` with a fresh prefix; `None` (after saying why) when labs cannot run here.
    fn up(routing: &'static str) -> Option<Lab> {
        Lab::up_with(routing, "1")
    }

    /// `lab/up` with LAB_ROUTING and LAB_BFD ("1" or "0").
    fn up_with(routing: &'static str, bfd: &'static str) -> Option<Lab> {
        if let Some(reason) = netlab::skip_reason() {
            assert!(
                std::env::var("CI").is_err(),
                "lab tests cannot run under CI: {reason}"
            );
            eprintln!("skipping: {reason}");
            return None;
        }
        let one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let state = std::env::temp_dir().join(format!("pgcast-labtest-{name}"));
        let lab = Lab {
            name,
            state,
            routing,
            bfd,
            _one: one,
        };
        let out = lab.run("up", &[]);
        assert!(
            out.status.success(),
            "lab/up failed:\n{}{}",
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
        Some(lab)
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        Command::new(repo().join("lab").join(script))
            .args(args)
            .env("LAB_NAME", &self.name)
            .env("LAB_STATE", &self.state)
            .env("LAB_BUILD", "0")
            .env("LAB_ROUTING", self.routing)
            .env("LAB_BFD", self.bfd)
            .env("PGCAST_BIN", env!("CARGO_BIN_EXE_pgcast"))
            .env("LAB_PGCAST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("run lab/{script}: {e}"))
    }

    /// Runs the scenarios; panics with their report and the balancers' log tails on failure.
    fn scenario(&self, names: &[&str]) {
        let out = self.run("scenario", names);
        let report = lossy(&out.stdout);
        println!("{report}");
        if !out.status.success() {
            let mut logs = String::new();
            for b in 1..=3 {
                let log = self.state.join(format!("b{b}/pgcast.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                logs += &format!("--- b{b} pgcast.log (tail)\n");
                for l in tail.into_iter().rev() {
                    logs += l;
                    logs.push('\n');
                }
            }
            panic!(
                "scenario {names:?} failed:\n{report}\n{}\n{logs}",
                lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.run("down", &[]);
        if !out.status.success() {
            eprintln!("lab/down failed: {}", lossy(&out.stderr));
        }
    }
}

/// One test per scenario, each in its own lab (OSPF unless the routing protocol is given).
macro_rules! lab_scenario {
    ($($test:ident => $scenario:literal $(via $routing:literal)?,)*) => {$(
        #[test]
        fn $test() {
            if let Some(lab) = Lab::up(lab_scenario!(@routing $($routing)?)) {
                lab.scenario(&[$scenario]);
            }
        }
    )*};
    (@routing) => { "ospf" };
    (@routing $routing:literal) => { $routing };
}

lab_scenario! {
    scenario_1_spread_over_three_balancers => "spread",
    scenario_2_writes_to_primary_reads_to_replicas => "split",
    scenario_3_balancer_without_backends_withdraws_and_returns => "backends",
    scenario_4_sigterm_drain_loses_no_transaction => "drain",
    scenario_5_kill_9_leaves_the_ecmp_set => "crash",
    scenario_6_primary_failover_loses_no_acknowledged_write => "failover",
    scenario_7_cancel_reaches_the_issuing_balancer => "cancel",
    scenario_8_restart_rejoins_without_flap => "restart",
    scenario_10_frozen_balancer_leaves_the_ecmp_set => "freeze",
    bgp_scenario_3_balancer_without_backends_withdraws_and_returns => "backends" via "bgp",
    scenario_9_sessions_on_other_balancers_survive => "sessions",
    bgp_scenario_4_sigterm_drain_loses_no_transaction => "drain" via "bgp",
    bgp_scenario_5_kill_9_leaves_the_ecmp_set => "crash" via "bgp",
    bgp_scenario_8_restart_rejoins_without_flap => "restart" via "bgp",
    bgp_scenario_10_frozen_balancer_leaves_the_ecmp_set => "freeze" via "bgp",
}
