//! pgcast's BGP speaker and BFD against a real FRR 8.4 router (bgpd, bfdd, ospfd), in network
//! namespaces built by `lab/netns/ospf-topology --routing bgp|ospf` (see `tests/common/netlab/`
//! and `tests/common/bgplab.rs`), with a real PostgreSQL 15 primary.
//!
//! Needs root and `ip netns`; without them the tests say why and pass, except under CI
//! (`CI=true`), where they fail. Labs run one at a time (BFD's 100 ms timers and two CPUs).
//! Timings are printed, never asserted, except where a bound is the point of the test (BFD
//! must beat a 90 s BGP hold time / a 40 s OSPF dead interval by a wide margin):
//!   cargo test --test bgp_frr -- --nocapture

#[path = "common/bgplab.rs"]
mod bgplab;
#[path = "common/netlab/mod.rs"]
mod netlab;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bgplab::{
    pgcast_established, received_notifications, router_bfd_peers, router_bfd_up,
    router_established, router_paths, router_peers, status_bfd_sessions, status_bgp_neighbors,
    tcp_ext_counter, wait_until, BgpOptions, Routing, ROUTER_AS,
};
use netlab::{status_prefix, NetLab, ANYCAST};

/// Session up + route in the kernel: connect retry 1 s both sides, with a wide margin.
const CONVERGE: Duration = Duration::from_secs(30);

/// One lab at a time in this process.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn lab_slot() -> Option<MutexGuard<'static, ()>> {
    bgplab::lab_slot(&ONE_LAB)
}

macro_rules! lab_or_skip {
    () => {
        match lab_slot() {
            Some(guard) => guard,
            None => return,
        }
    };
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn addrs(lab: &NetLab, balancers: &[usize]) -> BTreeSet<String> {
    balancers.iter().map(|&n| lab.b(n).addr.clone()).collect()
}

/// Starts pgcast in balancers `ns` and waits until both sides of every session are
/// Established and the router's kernel has exactly their next hops.
fn start_and_converge(lab: &mut NetLab, ns: &[usize]) -> Duration {
    let t = Instant::now();
    for &n in ns {
        lab.start(n);
    }
    let want = addrs(lab, ns);
    let router = lab.router_addr.clone();
    wait_until(lab, "router: every balancer Established", CONVERGE, |l| {
        want.is_subset(&router_established(l))
    });
    wait_until(lab, "every pgcast: Established with r1", CONVERGE, |l| {
        ns.iter().all(|&n| pgcast_established(l, n, &router))
    });
    wait_until(lab, "next hops in r1's kernel", CONVERGE, |l| {
        l.kernel_gateways() == want
    });
    t.elapsed()
}

fn assert_ecmp(lab: &NetLab, want: &BTreeSet<String>) {
    assert_eq!(&lab.kernel_gateways(), want, "kernel next hops");
    assert_eq!(&lab.frr_gateways(), want, "FRR's RIB vs kernel");
    let paths = router_paths(lab);
    let peers: BTreeSet<String> = paths.iter().map(|p| p.peer.clone()).collect();
    assert_eq!(&peers, want, "one BGP path per balancer: {paths:?}");
    assert!(
        paths.iter().all(|p| p.best || p.multipath),
        "every path is best or multipath: {paths:?}\n{}",
        bgplab::diagnostics(lab)
    );
}

fn ecmp_three_balancers(distinct_as: bool) {
    let mut lab = BgpOptions {
        distinct_as,
        ..BgpOptions::default()
    }
    .up();
    let all = addrs(&lab, &[1, 2, 3]);
    let took = start_and_converge(&mut lab, &[1, 2, 3]);
    println!(
        "ebgp ({}): 3 sessions Established and 3 next hops {all:?} {} ms after starting pgcast",
        if distinct_as {
            "65001/65002/65003"
        } else {
            "all 65001"
        },
        ms(took)
    );
    assert_ecmp(&lab, &all);
    for (i, peer) in router_peers(&lab).iter().enumerate() {
        let want_as = if distinct_as { 65001 + i as u64 } else { 65001 };
        assert_eq!(peer.remote_as, want_as, "{peer:?}");
        assert_eq!(peer.prefixes_received, 1, "{peer:?}");
    }
    for n in 1..=3 {
        let status = lab.status(n).expect("status");
        let neighbors = status_bgp_neighbors(&status);
        let nb = neighbors
            .iter()
            .find(|nb| nb.address == lab.router_addr)
            .unwrap_or_else(|| panic!("b{n} lists r1: {neighbors:?}"));
        assert_eq!(nb.remote_as, u64::from(ROUTER_AS));
        assert_eq!(nb.hold_time, 3, "negotiated hold time");
        assert_eq!(
            nb.prefixes.get(ANYCAST).map(|p| p.0),
            Some(true),
            "b{n} announces {ANYCAST}: {nb:?}"
        );
    }
}

#[test]
fn ebgp_three_balancers_one_as_ecmp() {
    let _slot = lab_or_skip!();
    ecmp_three_balancers(false);
}

#[test]
fn ebgp_three_balancers_three_ases_ecmp() {
    let _slot = lab_or_skip!();
    ecmp_three_balancers(true);
}

#[test]
fn unhealthy_balancer_withdraws_and_returns() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions::default().up();
    let all = addrs(&lab, &[1, 2, 3]);
    start_and_converge(&mut lab, &[1, 2, 3]);

    let without_b2 = addrs(&lab, &[1, 3]);
    lab.blackhole_pg(2);
    let d = wait_until(&lab, "b2's next hop leaves", Duration::from_secs(20), |l| {
        l.kernel_gateways() == without_b2
    });
    println!("blackhole PG on b2: its next hop left after {} ms", ms(d));
    assert!(
        router_established(&lab).contains(&lab.b(2).addr),
        "withdrawing keeps the session up\n{}",
        bgplab::diagnostics(&lab)
    );
    let status = lab.status(2).expect("b2 status");
    let neighbors = status_bgp_neighbors(&status);
    let (announced, reason) = neighbors
        .iter()
        .find_map(|nb| nb.prefixes.get(ANYCAST).cloned())
        .unwrap_or_else(|| panic!("b2 lists {ANYCAST}: {neighbors:?}"));
    assert!(!announced, "b2 no longer announces");
    assert!(!reason.is_empty(), "b2 says why");
    println!("b2 withdrawal reason: {reason}");
    assert!(
        router_paths(&lab).iter().all(|p| p.peer != lab.b(2).addr),
        "the router has no path from b2"
    );

    lab.unblackhole_pg(2);
    let d = wait_until(
        &lab,
        "b2's next hop returns",
        Duration::from_secs(20),
        |l| l.kernel_gateways() == all,
    );
    println!(
        "un-blackhole PG on b2: its next hop returned after {} ms",
        ms(d)
    );
    assert_ecmp(&lab, &all);
}

/// What the router shows for b1's path, sampled as fast as vtysh answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathView {
    Plain,
    GracefulShutdown,
    Gone,
}

fn path_view(lab: &NetLab, peer: &str) -> PathView {
    match router_paths(lab).into_iter().find(|p| p.peer == peer) {
        None => PathView::Gone,
        Some(p) if p.graceful_shutdown() => PathView::GracefulShutdown,
        Some(_) => PathView::Plain,
    }
}

#[test]
fn sigterm_graceful_shutdown_then_withdrawal_then_cease_with_message() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions::default().up();
    start_and_converge(&mut lab, &[1, 2, 3]);
    let b1 = lab.b(1).addr.clone();

    let t0 = Instant::now();
    lab.signal(1, "TERM");
    // (ms since SIGTERM, path view, b1 in the kernel route, pgcast still running)
    let mut seen: Vec<(u128, PathView, bool, bool)> = Vec::new();
    while t0.elapsed() < Duration::from_secs(15) {
        let view = path_view(&lab, &b1);
        let in_kernel = lab.kernel_gateways().contains(&b1);
        let running = lab.running_ref(1);
        if seen.last().map(|s| (s.1, s.2, s.3)) != Some((view, in_kernel, running)) {
            seen.push((ms(t0.elapsed()), view, in_kernel, running));
        }
        if view == PathView::Gone && !running {
            break;
        }
    }
    println!("SIGTERM b1, router's view of b1 (ms, path, in kernel, pgcast running):");
    for s in &seen {
        println!("  {:>6} {:?} in_kernel={} running={}", s.0, s.1, s.2, s.3);
    }
    let first = |v: PathView| seen.iter().find(|s| s.1 == v).map(|s| s.0);
    let (Some(gshut), Some(gone)) = (first(PathView::GracefulShutdown), first(PathView::Gone))
    else {
        panic!(
            "expected GRACEFUL_SHUTDOWN then withdrawal, saw {seen:?}\n{}",
            bgplab::diagnostics(&lab)
        );
    };
    assert!(
        gshut < gone,
        "GRACEFUL_SHUTDOWN before the withdrawal: {seen:?}"
    );
    // FRR gives a GRACEFUL_SHUTDOWN path local-pref 0, so it leaves the ECMP set at once.
    let left_kernel = seen.iter().find(|s| !s.2).map(|s| s.0);
    println!(
        "graceful-shutdown seen at {gshut} ms, withdrawn at {gone} ms, out of the kernel \
         route at {left_kernel:?} ms"
    );
    let exit = lab.wait_exit(1, Duration::from_secs(15));
    println!("b1 exited {} ms after SIGTERM: {exit:?}", ms(t0.elapsed()));
    assert!(exit.is_some(), "b1 exits after SIGTERM");
    let cease = wait_until(&lab, "r1 logs b1's Cease", Duration::from_secs(5), |l| {
        received_notifications(l)
            .iter()
            .any(|n| n.neighbor == b1 && (n.code, n.subcode) == (6, 2))
    });
    let notes = received_notifications(&lab);
    let note = notes
        .iter()
        .find(|n| n.neighbor == b1 && (n.code, n.subcode) == (6, 2))
        .expect("found above");
    println!(
        "r1 received from b1 (logged within {} ms): {note:?}",
        ms(cease)
    );
    assert!(
        !note.hard_reset,
        "pgcast negotiates no GR N-bit: plain Cease"
    );
    assert!(
        note.message.as_deref().is_some_and(|m| !m.is_empty()),
        "the Cease carries pgcast's shutdown message: {note:?}"
    );
    assert!(
        !router_established(&lab).contains(&b1),
        "b1's session is down"
    );
}

/// `pgcast drain`: GRACEFUL_SHUTDOWN, then the withdrawal, while the BGP session and BFD stay
/// up and the listener accepts again; `pgcast undrain` announces the plain route again.
#[test]
fn cli_drain_withdraws_keeps_the_session_and_undrain_announces_again() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions {
        balancers: 2,
        bfd: true,
        ..BgpOptions::default()
    }
    .up();
    let both = addrs(&lab, &[1, 2]);
    start_and_converge(&mut lab, &[1, 2]);
    let b1 = lab.b(1).addr.clone();
    wait_until(&lab, "BFD Up with b1", CONVERGE, |l| router_bfd_up(l, &b1));

    let t0 = Instant::now();
    // (ms since `pgcast drain` started, router's view of b1's path)
    let mut seen: Vec<(u128, PathView)> = Vec::new();
    let (code, out, err) = std::thread::scope(|scope| {
        let drain = scope.spawn(|| lab.pgcast(1, &["drain"]));
        while !drain.is_finished() {
            let view = path_view(&lab, &b1);
            if seen.last().map(|s| s.1) != Some(view) {
                seen.push((ms(t0.elapsed()), view));
            }
        }
        drain.join().expect("drain thread")
    });
    println!(
        "pgcast drain on b1 returned after {} ms: {code:?} {out:?} {err:?}; router's view of \
         b1's path (ms, path): {seen:?}",
        ms(t0.elapsed())
    );
    assert_eq!(code, Some(0), "pgcast drain succeeds: {out} {err}");
    assert!(out.starts_with("drained:"), "{out}");
    assert!(
        seen.iter().any(|s| s.1 == PathView::GracefulShutdown),
        "the router saw GRACEFUL_SHUTDOWN before the withdrawal: {seen:?}\n{}",
        bgplab::diagnostics(&lab)
    );
    let d = wait_until(&lab, "b1's path gone", Duration::from_secs(5), |l| {
        path_view(l, &b1) == PathView::Gone && l.kernel_gateways() == addrs(l, &[2])
    });
    println!("b1's path gone {} ms after the drain returned", ms(d));
    assert!(
        router_established(&lab).contains(&b1) && pgcast_established(&lab, 1, &lab.router_addr),
        "the drain keeps the BGP session up\n{}",
        bgplab::diagnostics(&lab)
    );
    assert!(router_bfd_up(&lab, &b1), "and BFD up (no AdminDown)");
    assert!(
        received_notifications(&lab)
            .iter()
            .all(|n| n.neighbor != b1),
        "no NOTIFICATION from b1: {:?}",
        received_notifications(&lab)
    );
    let status = lab.status(1).expect("b1 status");
    let (announced, reason) = status_prefix(&status, ANYCAST).expect("b1 lists the prefix");
    assert!(
        !announced && reason.contains("pgcast drain"),
        "status says why: {reason}"
    );
    assert!(
        lab.router_connects(1, 5432),
        "after the drain b1 accepts connections to its own address again"
    );
    let (code, out, _) = lab.pgcast(1, &["drain"]);
    assert_eq!((code, out.trim()), (Some(0), "already drained"));

    let t1 = Instant::now();
    let (code, out, err) = lab.pgcast(1, &["undrain"]);
    println!("pgcast undrain: {code:?} {out:?} {err:?}");
    assert_eq!(code, Some(0), "pgcast undrain succeeds: {out} {err}");
    assert!(
        out.contains(&format!("{ANYCAST} announced")),
        "undrain reports the prefix announced: {out}"
    );
    let d = wait_until(&lab, "b1 back in the ECMP set", CONVERGE, |l| {
        l.kernel_gateways() == both
    });
    println!(
        "b1 back in r1's kernel route {} ms after undrain ({} ms waiting)",
        ms(t1.elapsed()),
        ms(d)
    );
    assert_eq!(
        path_view(&lab, &b1),
        PathView::Plain,
        "without GRACEFUL_SHUTDOWN"
    );
    assert_ecmp(&lab, &both);
}

#[test]
fn tcp_md5_right_password_established_wrong_password_never() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions {
        balancers: 2,
        password: Some("lab-secret".into()),
        ..BgpOptions::default()
    }
    .up();
    let conf = lab.config_text(2);
    let wrong = conf.replace("password = \"lab-secret\"", "password = \"wrong-secret\"");
    assert_ne!(
        conf, wrong,
        "b2's config has the BGP password to replace:\n{conf}"
    );
    lab.set_config_text(2, &wrong);
    let (r1_ns, b2_ns) = (lab.router.clone(), lab.b(2).ns.clone());
    let failures_before = tcp_ext_counter(&r1_ns, "TCPMD5Failure");

    let took = start_and_converge(&mut lab, &[1]);
    println!(
        "md5: b1 (right password) Established with a route after {} ms",
        ms(took)
    );
    lab.start(2);
    let b2 = lab.b(2).addr.clone();
    let router = lab.router_addr.clone();
    let watch = Instant::now();
    let mut b2_seen: Option<String> = None;
    while watch.elapsed() < Duration::from_secs(10) {
        if router_established(&lab).contains(&b2) {
            b2_seen.get_or_insert("router: b2 Established".into());
        }
        if pgcast_established(&lab, 2, &router) {
            b2_seen.get_or_insert("b2's status: Established".into());
        }
        if lab.kernel_gateways().contains(&b2) {
            b2_seen.get_or_insert("route via b2".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        b2_seen.is_none(),
        "wrong TCP-MD5 password: {}\n{}",
        b2_seen.unwrap_or_default(),
        bgplab::diagnostics(&lab)
    );
    let status = lab.status(2).expect("b2 status");
    let neighbors = status_bgp_neighbors(&status);
    println!("md5: b2 (wrong password) after 10 s: {neighbors:?}");
    assert!(
        neighbors
            .iter()
            .any(|nb| nb.address == router && nb.state != "Established"),
        "b2 lists r1, not Established: {neighbors:?}"
    );
    // The kernels drop the segments: a signed segment with the wrong key counts as
    // TCPMD5Failure (an unsigned one would be TCPMD5NotFound: pgcast set no key at all).
    let r1_failures = tcp_ext_counter(&r1_ns, "TCPMD5Failure") - failures_before;
    let b2_failures = tcp_ext_counter(&b2_ns, "TCPMD5Failure");
    let r1_not_found = tcp_ext_counter(&r1_ns, "TCPMD5NotFound");
    let b2_not_found = tcp_ext_counter(&b2_ns, "TCPMD5NotFound");
    println!(
        "md5: TCPMD5Failure r1 {r1_failures} b2 {b2_failures}; TCPMD5NotFound r1 \
         {r1_not_found} b2 {b2_not_found}"
    );
    assert!(
        r1_failures + b2_failures > 0,
        "segments with a wrong MD5 signature were dropped by a kernel"
    );
    assert_eq!(
        lab.kernel_gateways(),
        addrs(&lab, &[1]),
        "only b1 in the route"
    );
}

/// Freezes pgcast in b1 (`kill -STOP`), waits for its next hop to leave the router's kernel
/// route within `bound` (which the protocol's own timers could not do), then `kill -CONT` and
/// waits for it to return.
fn freeze_and_thaw(
    lab: &NetLab,
    all: &BTreeSet<String>,
    bound: Duration,
    timers: &str,
) -> Option<String> {
    let b1 = lab.b(1).addr.clone();
    let rest: BTreeSet<String> = all.iter().filter(|a| **a != b1).cloned().collect();
    lab.signal(1, "STOP");
    let gone = wait_until(lab, "frozen b1's next hop leaves", bound, |l| {
        l.kernel_gateways() == rest
    });
    let bfd = router_bfd_peers(lab)
        .into_iter()
        .find(|p| p.peer == b1)
        .map(|p| format!("{} ({})", p.status, p.diagnostic));
    println!(
        "kill -STOP b1: next hop left after {} ms ({timers}); r1's BFD session: {bfd:?}",
        ms(gone)
    );

    lab.signal(1, "CONT");
    let back = wait_until(
        lab,
        "b1 returns after SIGCONT",
        Duration::from_secs(90),
        |l| l.kernel_gateways() == *all,
    );
    wait_until(lab, "r1's BFD session with b1 up again", CONVERGE, |l| {
        router_bfd_up(l, &b1)
    });
    println!("kill -CONT b1: back in the route after {} ms", ms(back));
    bfd
}

/// The router's BFD sessions with `balancers` are up with 100 ms x 3, and pgcast agrees.
fn assert_bfd_up(lab: &NetLab, balancers: &[usize]) {
    for &n in balancers {
        let peer = lab.b(n).addr.clone();
        wait_until(lab, "r1's BFD session up", CONVERGE, |l| {
            router_bfd_up(l, &peer)
        });
        let p = router_bfd_peers(lab)
            .into_iter()
            .find(|p| p.peer == peer)
            .expect("listed");
        println!("r1 BFD peer {peer}: {p:?}");
        // BGP's sessions name the local address; OSPF's have none ("local" absent).
        assert!(p.local.is_empty() || p.local == lab.router_addr, "{p:?}");
        assert_eq!(
            (p.remote_receive_interval_ms, p.remote_transmit_interval_ms),
            (100, 100),
            "pgcast's advertised intervals: {p:?}"
        );
        assert_eq!(p.remote_detect_multiplier, 3, "{p:?}");
        let router = lab.router_addr.clone();
        wait_until(lab, "pgcast's BFD session Up", CONVERGE, |l| {
            l.status(n).is_some_and(|s| {
                status_bfd_sessions(&s)
                    .iter()
                    .any(|(peer, state)| *peer == router && state == "Up")
            })
        });
    }
}

#[test]
fn bfd_removes_frozen_bgp_balancer_long_before_hold_time() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions {
        balancers: 2,
        hold: 90,
        bfd: true,
        ..BgpOptions::default()
    }
    .up();
    let all = addrs(&lab, &[1, 2]);
    let took = start_and_converge(&mut lab, &[1, 2]);
    println!("bgp+bfd: 2 sessions and 2 next hops after {} ms", ms(took));
    assert_bfd_up(&lab, &[1, 2]);
    // Hold 90 s: without BFD a frozen speaker stays in the route for up to 90 s.
    let bfd = freeze_and_thaw(
        &lab,
        &all,
        Duration::from_secs(30),
        "BGP hold 90 s, BFD 100 ms x 3",
    );
    // The proof that BFD removed it, rather than a timing: while b1 was still frozen, the
    // router's session with it was down by detection timeout (OSPF has no such check: FRR's
    // ospfd deletes the neighbour, and with it the BFD session, at once).
    assert_eq!(
        bfd.as_deref(),
        Some("down (control detection time expired)"),
        "r1's BFD session with the frozen b1\n{}",
        bgplab::diagnostics(&lab)
    );
    let b1 = lab.b(1).addr.clone();
    let notes = received_notifications(&lab);
    println!(
        "r1 received NOTIFICATIONs from b1: {:?}",
        notes
            .iter()
            .filter(|n| n.neighbor == b1)
            .collect::<Vec<_>>()
    );
    // And bgpd took the session down because of BFD, not its hold timer.
    let log = lab.router_log("bgpd");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("sent to neighbor {b1} 6/10 (Cease/BFD Down)"))),
        "r1's bgpd did not reset b1 for BFD Down:\n{}",
        bgplab::diagnostics(&lab)
    );
}

#[test]
fn bfd_removes_frozen_ospf_balancer_long_before_dead_interval() {
    let _slot = lab_or_skip!();
    let mut lab = BgpOptions {
        balancers: 2,
        routing: Routing::Ospf,
        bfd: true,
        ospf_timers: Some((10, 40)),
        ..BgpOptions::default()
    }
    .up();
    let all = addrs(&lab, &[1, 2]);
    let t = Instant::now();
    lab.start(1);
    lab.start(2);
    // Broadcast link, hello 10 / dead 40: r1's wait timer (40 s) precedes the adjacencies.
    wait_until(
        &lab,
        "2 next hops over OSPF",
        Duration::from_secs(120),
        |l| l.kernel_gateways() == all,
    );
    println!("ospf+bfd: 2 next hops after {} ms", ms(t.elapsed()));
    assert_bfd_up(&lab, &[1, 2]);
    // Dead 40 s with hellos every 10 s: OSPF alone needs at least 30 s.
    freeze_and_thaw(
        &lab,
        &all,
        Duration::from_secs(20),
        "OSPF dead 40 s, BFD 100 ms x 3",
    );
}

/// The router side with FRR in the balancers instead of pgcast: checks the topology's FRR
/// configs and this harness's parsers, and prints reference numbers. Runs without pgcast BGP.
#[test]
fn reference_frr_balancers_router_side() {
    let _slot = lab_or_skip!();
    let lab = BgpOptions {
        distinct_as: true,
        hold: 90,
        bfd: true,
        frr_balancers: true,
        ..BgpOptions::default()
    }
    .up();
    let all = addrs(&lab, &[1, 2, 3]);
    let t = Instant::now();
    wait_until(&lab, "3 FRR balancers Established", CONVERGE, |l| {
        router_established(l) == all
    });
    wait_until(&lab, "3 next hops", CONVERGE, |l| {
        l.kernel_gateways() == all
    });
    println!(
        "reference: 3 next hops {} ms after the topology was up",
        ms(t.elapsed())
    );
    assert_ecmp(&lab, &all);
    assert_eq!(
        router_peers(&lab)
            .iter()
            .map(|p| p.remote_as)
            .collect::<Vec<_>>(),
        [65001, 65002, 65003]
    );
    for a in &all {
        wait_until(&lab, "BFD up", CONVERGE, |l| router_bfd_up(l, a));
    }
    let peers = router_bfd_peers(&lab);
    assert!(peers
        .iter()
        .all(|p| p.receive_interval_ms == 100 && p.detect_multiplier == 3));

    // b1 drains the way pgcast will: GRACEFUL_SHUTDOWN first, then a Cease with a message.
    let b1 = lab.b(1).addr.clone();
    let rest = addrs(&lab, &[2, 3]);
    let vty_b1 = |cmds: &[&str]| {
        let mut c = std::process::Command::new("vtysh");
        c.args(["-N", &lab.b(1).ns]);
        for cmd in ["configure terminal", "router bgp 65001"]
            .iter()
            .chain(cmds)
        {
            c.args(["-c", cmd]);
        }
        assert!(c.status().expect("vtysh").success());
    };
    vty_b1(&["bgp graceful-shutdown"]);
    let d = wait_until(&lab, "b1's path carries gracefulShutdown", CONVERGE, |l| {
        router_paths(l)
            .iter()
            .any(|p| p.peer == b1 && p.graceful_shutdown())
    });
    let paths = router_paths(&lab);
    println!(
        "reference: graceful-shutdown seen after {} ms: {paths:?}",
        ms(d)
    );
    let gshut = paths.iter().find(|p| p.peer == b1).expect("b1's path");
    assert_eq!(
        gshut.local_pref,
        Some(0),
        "FRR sets local-pref 0 on GRACEFUL_SHUTDOWN"
    );
    wait_until(&lab, "b1 out of the ECMP set", CONVERGE, |l| {
        l.kernel_gateways() == rest
    });
    vty_b1(&["neighbor 198.18.1.90 shutdown message reference: b1 drained"]);
    wait_until(&lab, "r1 logs b1's Cease", CONVERGE, |l| {
        received_notifications(l).iter().any(|n| n.neighbor == b1)
    });
    let notes = received_notifications(&lab);
    println!("reference: {notes:?}");
    assert!(notes.iter().any(|n| n.neighbor == b1
        && (n.code, n.subcode) == (6, 2)
        && n.message.as_deref() == Some("reference: b1 drained")));
}

/// One balancer under r1, its pgcast config edited by `edit`, Established with a route.
fn one_balancer_converged(edit: impl Fn(&str) -> String) -> NetLab {
    let mut lab = BgpOptions {
        balancers: 1,
        ..BgpOptions::default()
    }
    .up();
    let conf = lab.config_text(1);
    lab.set_config_text(1, &edit(&conf));
    start_and_converge(&mut lab, &[1]);
    lab
}

/// A router reload (issue 14): r1's bgpd dies, stays away 15 s while pgcast's connection
/// attempts fail, and comes back with its neighbours passive, so only pgcast's own connect
/// can bring the session back. pgcast's back-off is capped (`bgp.connect_retry_max_ms`,
/// default 4 s): b1 is back in r1's kernel route within seconds of bgpd being ready, not after
/// RFC 4271's doubling (1, 2, 4, 8, 16 s … here 16 s or more).
#[test]
fn restarted_passive_router_gets_the_route_back_within_the_back_off_cap() {
    let _lab = lab_or_skip!();
    let lab = one_balancer_converged(str::to_string);
    let b1 = lab.b(1).addr.clone();
    let ready = lab.restart_router_daemon("bgpd", Duration::from_secs(15), |conf| {
        let mut out = String::new();
        for line in conf.lines() {
            out.push_str(line);
            out.push('\n');
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["neighbor", peer, "remote-as", _] = words.as_slice() {
                out.push_str(&format!(" neighbor {peer} passive\n"));
            }
        }
        out
    });
    wait_until(&lab, "b1 back in r1's kernel route", CONVERGE, |l| {
        l.kernel_gateways().contains(&b1)
    });
    let back = ready.elapsed();
    println!(
        "router bgpd restarted passive after 15 s away: b1 back in its ECMP set {} ms after \
         bgpd was ready",
        ms(back)
    );
    assert!(
        back < Duration::from_secs(10),
        "back within the 4 s back-off cap plus the handshake, not the doubled back-off: {back:?}\n{}",
        bgplab::diagnostics(&lab)
    );
}

/// A restarted router that connects (FRR does, after its 1 s start timer) gets the session on
/// its own connection while pgcast is still backing off (issue 14). pgcast's back-off is 10 s
/// here: after bgpd dies, pgcast retries at about 10 s and 20 s; bgpd is back at 15 s and
/// connects at about 16 s, into pgcast's Idle. Before the fix an Idle session refused every
/// connection, so the session came back on pgcast's own connect at 20 s.
#[test]
fn restarted_active_router_connection_is_taken_while_pgcast_backs_off() {
    let _lab = lab_or_skip!();
    let lab = one_balancer_converged(|conf| {
        let slow = conf.replace(
            "connect_retry_ms = 1000\n",
            "connect_retry_ms = 10000\nconnect_retry_max_ms = 10000\n",
        );
        assert_ne!(conf, slow, "b1's config has connect_retry_ms:\n{conf}");
        slow
    });
    let b1 = lab.b(1).addr.clone();
    let ready = lab.restart_router_daemon("bgpd", Duration::from_secs(15), str::to_string);
    wait_until(&lab, "b1 back in r1's kernel route", CONVERGE, |l| {
        l.kernel_gateways().contains(&b1)
    });
    let back = ready.elapsed();
    let status = lab.status(1).expect("b1 status");
    let neighbors = status_bgp_neighbors(&status);
    let nb = neighbors
        .iter()
        .find(|nb| nb.address == lab.router_addr)
        .unwrap_or_else(|| panic!("b1 lists r1: {neighbors:?}"));
    println!(
        "router bgpd restarted (active) after 15 s away, pgcast backing off 10 s: b1 back in \
         its ECMP set {} ms after bgpd was ready, on the {} connection",
        ms(back),
        nb.connection
    );
    assert_eq!(
        nb.connection,
        "remote",
        "the router's connection carries the session: pgcast took it while Idle\n{}",
        bgplab::diagnostics(&lab)
    );
}
