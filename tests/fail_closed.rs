//! Fail closed: when a task that decides the announcement dies, pgcast withdraws every prefix
//! and exits non-zero (so systemd restarts it) — it never keeps announcing on stale health.
//! A test-only fault hook (`PGCAST_TEST_FAULT_DIR`, debug builds only, `src/fault.rs`) panics
//! the named task; the router is a real FRR 8.4 in network namespaces built by
//! `lab/netns/ospf-topology` (see `tests/common/netlab.rs`).
//!
//! Needs root and `ip netns`; without them the tests say why and pass, except under CI
//! (`CI=true`), where they fail.
//!   cargo test --test fail_closed -- --nocapture

#[path = "common/bgplab.rs"]
mod bgplab;
#[path = "common/netlab/mod.rs"]
mod netlab;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bgplab::{received_notifications, wait_until, BgpOptions, Routing};
use netlab::{status_prefix, NetLab, Options, ANYCAST};

/// Session up + route in the kernel, with a wide margin.
const CONVERGE: Duration = Duration::from_secs(30);

/// One lab at a time in this process (and the fault directory is process-wide).
static ONE_LAB: Mutex<()> = Mutex::new(());

fn lab_slot() -> Option<MutexGuard<'static, ()>> {
    bgplab::lab_slot(&ONE_LAB)
}

/// Starts pgcast in b1 with the fault hook armed and waits until the router routes the
/// anycast prefix through b1; returns the fault directory.
fn start_armed(lab: &mut NetLab) -> std::path::PathBuf {
    let fault_dir = lab.state.join("faults");
    std::fs::create_dir_all(&fault_dir).expect("fault dir");
    std::env::set_var("PGCAST_TEST_FAULT_DIR", &fault_dir);
    lab.start(1);
    let b1 = lab.b(1).addr.clone();
    wait_until(lab, "r1 routes the prefix through b1", CONVERGE, |l| {
        l.kernel_gateways().contains(&b1)
    });
    fault_dir
}

/// Triggers the fault in `task` once b1 is in the router's route; returns how long the
/// router took to drop the route and pgcast's exit status.
fn inject(lab: &mut NetLab, task: &str) -> (Duration, std::process::ExitStatus) {
    let fault_dir = start_armed(lab);
    let b1 = lab.b(1).addr.clone();
    let t0 = Instant::now();
    std::fs::write(fault_dir.join(task), b"").expect("trigger");
    let gone = wait_until(lab, "r1 dropped b1's route", CONVERGE, |l| {
        !l.kernel_gateways().contains(&b1)
    });
    let exit = lab
        .wait_exit(1, Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "pgcast did not exit after the {task} fault\n{}",
                lab.pgcast_log(1)
            )
        });
    println!(
        "{task} panicked: route gone from r1's kernel {} ms after the trigger; pgcast exited \
         {exit} after {} ms",
        gone.as_millis(),
        t0.elapsed().as_millis()
    );
    let log = lab.pgcast_log(1);
    assert!(
        log.contains("a task that decides the anycast announcement ended"),
        "the reason is logged at ERROR:\n{log}"
    );
    assert_eq!(
        exit.code(),
        Some(1),
        "non-zero exit so systemd restarts pgcast: {exit}"
    );
    (gone, exit)
}

/// One balancer over BGP with a 90 s hold: only pgcast's own withdrawal (or Cease) removes
/// its route quickly.
fn one_balancer_bgp_hold_90() -> NetLab {
    BgpOptions {
        balancers: 1,
        hold: 90,
        ..BgpOptions::default()
    }
    .up()
}

/// The health checker dies: over BGP with a 90 s hold, the router hears the withdrawal and
/// pgcast's Cease (not only a closed TCP session).
#[test]
fn health_panic_withdraws_over_bgp_and_exits_non_zero() {
    let Some(_lab) = lab_slot() else { return };
    let mut lab = one_balancer_bgp_hold_90();
    inject(&mut lab, "health");
    let b1 = lab.b(1).addr.clone();
    wait_until(&lab, "r1 logs b1's Cease", Duration::from_secs(5), |l| {
        received_notifications(l)
            .iter()
            .any(|n| n.neighbor == b1 && n.code == 6)
    });
}

/// The coupling between health and the speakers dies: over OSPF with a 40 s dead interval the
/// route must leave long before the router would notice a silent speaker (pgcast flushes its
/// Router-LSA).
#[test]
fn coupling_panic_withdraws_over_ospf_and_exits_non_zero() {
    let Some(_lab) = lab_slot() else { return };
    // Point-to-point: on a broadcast link the router's wait timer (= the dead interval)
    // would hold the adjacency back 40 s.
    let flags = BgpOptions {
        routing: Routing::Ospf,
        ospf_timers: Some((1, 40)),
        ..BgpOptions::default()
    }
    .args();
    let opts = Options {
        balancers: 1,
        p2p: true,
        auth: None,
    };
    let mut lab = NetLab::up_with(opts, &flags);
    let (gone, _) = inject(&mut lab, "coupling");
    assert!(
        gone < Duration::from_secs(20),
        "withdrawn by pgcast, not by the 40 s dead interval: {gone:?}"
    );
}

/// The health checker's thread stalls (blocked, not dead): its last verdicts must not keep the
/// prefix announced. pgcast stays up, withdraws while the heartbeat is late, says why in its
/// status, and announces again once the thread runs.
#[test]
fn health_stall_withdraws_until_it_runs_again() {
    let Some(_lab) = lab_slot() else { return };
    let mut lab = one_balancer_bgp_hold_90();
    let fault_dir = start_armed(&mut lab);
    let b1 = lab.b(1).addr.clone();
    let trigger = fault_dir.join("health-stall");
    std::fs::write(&trigger, b"").expect("trigger");
    let gone = wait_until(&lab, "r1 dropped b1's route", CONVERGE, |l| {
        !l.kernel_gateways().contains(&b1)
    });
    let status = lab.status(1).expect("pgcast answers while health stalls");
    let (announced, reason) = status_prefix(&status, ANYCAST).expect("the prefix");
    assert!(!announced && reason.contains("stalled"), "{reason}");
    assert!(lab.running(1), "a stall withdraws; it does not end pgcast");
    std::fs::remove_file(&trigger).expect("end the stall");
    let back = wait_until(&lab, "r1 routes through b1 again", CONVERGE, |l| {
        l.kernel_gateways().contains(&b1)
    });
    println!(
        "health stalled: route gone {} ms after the trigger ({reason}); back {} ms after the \
         stall ended",
        gone.as_millis(),
        back.as_millis()
    );
}
