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

#[path = "common/lab_scripts.rs"]
mod lab_scripts;

use lab_scripts::Lab;
use netlab::lossy;

/// `lab/up` for OSPF or BGP, BFD on; `None` when labs cannot run here.
fn up(routing: &'static str) -> Option<Lab> {
    Lab::up_with(routing, "1")
}

/// Runs the scenarios; panics with their report and the balancers' log tails on failure.
fn scenario(lab: &Lab, names: &[&str]) {
    let out = lab.run("scenario", names);
    let report = lossy(&out.stdout);
    println!("{report}");
    if !out.status.success() {
        panic!(
            "scenario {names:?} failed:\n{report}\n{}\n{}",
            lossy(&out.stderr),
            lab.log_tails(15)
        );
    }
}

/// One test per scenario, each in its own lab (OSPF unless the routing protocol is given).
macro_rules! lab_scenario {
    ($($test:ident => $scenario:literal $(via $routing:literal)?,)*) => {$(
        #[test]
        fn $test() {
            if let Some(lab) = up(lab_scenario!(@routing $($routing)?)) {
                scenario(&lab, &[$scenario]);
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
