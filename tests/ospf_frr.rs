//! pgcast's OSPFv2 speaker against a real FRR 8.4 router, in network namespaces built by
//! `lab/netns/ospf-topology` (see `tests/common/netlab/`), with a real PostgreSQL 15 primary.
//!
//! Skipped (message on stderr, test passes) only when not root or `ip netns` cannot be used.
//! Each test has its own namespace prefix, so they may run in parallel; timings are printed:
//!   cargo test --test ospf_frr -- --nocapture

#[path = "common/netlab/mod.rs"]
mod netlab;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use netlab::{
    poll_until, skip_reason, status_dropped, status_full_with, status_neighbors, status_prefix,
    NetLab, NextHop, Options, ANYCAST,
};

/// First adjacency + route: router wait timer (3 s) + DD exchange + SPF, with margin.
const CONVERGE: Duration = Duration::from_secs(30);

macro_rules! skip_without_netns {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn gateways(lab: &NetLab, balancers: &[usize]) -> BTreeSet<String> {
    balancers
        .iter()
        .map(|&n| lab.b(n).nexthop.clone())
        .collect()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Waits until the kernel route's gateways are exactly `want`, failing if any gateway in
/// `keep` is missing from a sample on the way. Returns the time it took.
fn wait_gateways(
    lab: &NetLab,
    what: &str,
    timeout: Duration,
    want: &BTreeSet<String>,
    keep: &BTreeSet<String>,
) -> Duration {
    let mut bad: Option<BTreeSet<String>> = None;
    let d = lab.wait_until(what, timeout, |l| {
        let g = l.kernel_gateways();
        if bad.is_none() && !keep.is_subset(&g) {
            bad = Some(g.clone());
        }
        &g == want
    });
    if let Some(g) = bad {
        panic!(
            "{what}: a next hop that had to stay left on the way: saw {g:?}, must keep {keep:?}\n{}",
            lab.diagnostics()
        );
    }
    d
}

/// Asserts the kernel route's gateways stay exactly `want` for `period`.
fn assert_stable(lab: &NetLab, what: &str, period: Duration, want: &BTreeSet<String>) {
    let start = Instant::now();
    while start.elapsed() < period {
        let g = lab.kernel_gateways();
        assert!(
            &g == want,
            "{what}: after {} ms the route changed to {g:?} (want {want:?})\n{}",
            ms(start.elapsed()),
            lab.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both sides of balancer `n`'s adjacency are Full.
fn adjacency_full(lab: &NetLab, n: usize) -> bool {
    let rid = &lab.b(n).addr;
    lab.router_full_neighbors().contains(rid)
        && lab
            .status(n)
            .is_some_and(|s| status_full_with(&s, &lab.router_addr))
}

fn announced(lab: &NetLab, n: usize) -> Option<(bool, String)> {
    lab.status(n).and_then(|s| status_prefix(&s, ANYCAST))
}

#[test]
fn broadcast_three_balancers_ecmp_withdraw_restart_kill() {
    skip_without_netns!();
    let mut lab = NetLab::up(Options::default());
    let all = gateways(&lab, &[1, 2, 3]);
    let rids: BTreeSet<String> = lab.balancers.iter().map(|b| b.addr.clone()).collect();

    // --- adjacency Full on both sides, 3-way ECMP in the router's kernel.
    let t0 = Instant::now();
    for n in 1..=3 {
        lab.start(n);
    }
    lab.wait_until("router: 3 Full neighbours", CONVERGE, |l| {
        l.router_full_neighbors() == rids
    });
    lab.wait_until("every pgcast: Full with r1", CONVERGE, |l| {
        (1..=3).all(|n| adjacency_full(l, n))
    });
    let none = BTreeSet::new();
    wait_gateways(&lab, "3 next hops in r1's kernel", CONVERGE, &all, &none);
    println!(
        "broadcast: 3 balancers Full and 3 next hops {:?} {} ms after starting pgcast",
        all,
        ms(t0.elapsed())
    );
    assert_eq!(lab.frr_gateways(), all, "FRR's RIB vs kernel");
    for h in lab.kernel_nexthops() {
        assert_eq!(h.dev, "eth0", "next hop {h:?} on the bridge interface");
    }
    for n in 1..=3 {
        let (ann, reason) = announced(&lab, n).expect("status lists the prefix");
        assert!(ann, "b{n} announces {ANYCAST} (reason {reason:?})");
    }

    // --- PostgreSQL unreachable from b2: exactly b2's next hop leaves, adjacency stays.
    let without_b2 = gateways(&lab, &[1, 3]);
    lab.blackhole_pg(2);
    let d = wait_gateways(
        &lab,
        "b2's next hop leaves after blackholing PG",
        Duration::from_secs(20),
        &without_b2,
        &without_b2,
    );
    println!("blackhole PG on b2: its next hop left after {} ms", ms(d));
    let (ann, reason) = announced(&lab, 2).expect("b2 status lists the prefix");
    assert!(!ann, "b2 no longer announces");
    assert!(!reason.is_empty(), "b2 says why it withdrew");
    println!("b2 withdrawal reason: {reason}");
    assert!(
        lab.router_full_neighbors().contains(&lab.b(2).addr),
        "withdrawing keeps the adjacency Full\n{}",
        lab.diagnostics()
    );
    assert_stable(
        &lab,
        "b2 stays withdrawn",
        Duration::from_secs(2),
        &without_b2,
    );

    lab.unblackhole_pg(2);
    let d = wait_gateways(
        &lab,
        "b2's next hop returns",
        Duration::from_secs(20),
        &all,
        &without_b2,
    );
    println!(
        "un-blackhole PG on b2: its next hop returned after {} ms",
        ms(d)
    );
    assert!(
        announced(&lab, 2).is_some_and(|(a, _)| a),
        "b2 announces again"
    );

    // --- SIGTERM on b1: withdrawn while pgcast still drains, then it rejoins after a start.
    let without_b1 = gateways(&lab, &[2, 3]);
    let t = Instant::now();
    lab.signal(1, "TERM");
    let left = wait_gateways(
        &lab,
        "b1's next hop leaves after SIGTERM",
        Duration::from_secs(10),
        &without_b1,
        &without_b1,
    );
    let running_at_withdrawal = lab.running_ref(1);
    let status = lab
        .wait_exit(1, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("b1 did not exit after SIGTERM\n{}", lab.diagnostics()));
    let exited = t.elapsed();
    println!(
        "SIGTERM b1: next hop left after {} ms, process exited after {} ms ({status})",
        ms(left),
        ms(exited)
    );
    assert!(
        running_at_withdrawal,
        "pgcast withdrew before exiting (withdraw first, then stop): it had already exited \
         when the next hop left\n{}",
        lab.diagnostics()
    );
    let t = Instant::now();
    lab.start(1);
    let back = wait_gateways(
        &lab,
        "b1 rejoins after restart",
        CONVERGE,
        &all,
        &without_b1,
    );
    println!(
        "restart b1: back in the ECMP set {} ms after start",
        ms(back)
    );
    lab.wait_until("b1 Full again", CONVERGE, |l| adjacency_full(l, 1));
    println!(
        "restart b1: Full on both sides {} ms after start",
        ms(t.elapsed())
    );

    // --- kill -9 on b3: nothing withdraws; the router's dead interval (3 s) does.
    let without_b3 = gateways(&lab, &[1, 2]);
    let t = Instant::now();
    lab.kill9(3);
    // A killed process withdraws nothing: right after the kill the router still uses b3.
    assert_eq!(
        lab.kernel_gateways(),
        all,
        "b3's next hop must stay until the router's dead interval removes it\n{}",
        lab.diagnostics()
    );
    let d = wait_gateways(
        &lab,
        "b3's next hop leaves after kill -9",
        Duration::from_secs(10),
        &without_b3,
        &without_b3,
    );
    println!(
        "kill -9 b3: next hop left after {} ms (dead interval 3 s); total {} ms",
        ms(d),
        ms(t.elapsed())
    );
    assert!(
        !lab.router_neighbors()
            .iter()
            .any(|n| n.router_id == lab.b(3).addr && n.state.starts_with("Full")),
        "b3 is no Full neighbour any more\n{}",
        lab.diagnostics()
    );
}

#[test]
fn point_to_point_link_one_balancer() {
    skip_without_netns!();
    let mut lab = NetLab::up(Options {
        balancers: 1,
        p2p: true,
        auth: None,
    });
    let t = Instant::now();
    lab.start(1);
    let rid = lab.b(1).addr.clone();
    lab.wait_until("p2p adjacency Full on both sides", CONVERGE, |l| {
        adjacency_full(l, 1)
    });
    let nb = lab
        .router_neighbors()
        .into_iter()
        .find(|n| n.router_id == rid)
        .expect("router lists the balancer");
    assert_eq!(
        nb.state, "Full/-",
        "point-to-point neighbours have no DR role"
    );
    let want = vec![NextHop {
        gateway: lab.b(1).nexthop.clone(),
        dev: "b1".into(),
    }];
    lab.wait_until("route via the p2p neighbour", CONVERGE, |l| {
        l.kernel_nexthops() == want
    });
    println!(
        "p2p: Full and route {ANYCAST} via {} dev b1 {} ms after starting pgcast",
        lab.b(1).nexthop,
        ms(t.elapsed())
    );
    assert_eq!(
        lab.frr_gateways(),
        gateways(&lab, &[1]),
        "FRR's RIB vs kernel"
    );
    assert!(announced(&lab, 1).is_some_and(|(a, _)| a), "b1 announces");
}

/// `pgcast drain` withdraws the stub link while the adjacency stays Full and the listener
/// accepts again; `pgcast undrain` announces it again.
#[test]
fn cli_drain_withdraws_keeps_the_adjacency_and_undrain_announces_again() {
    skip_without_netns!();
    let mut lab = NetLab::up(Options {
        balancers: 2,
        ..Options::default()
    });
    let both = gateways(&lab, &[1, 2]);
    let none = BTreeSet::new();
    for n in 1..=2 {
        lab.start(n);
    }
    lab.wait_until("both pgcasts Full with r1", CONVERGE, |l| {
        (1..=2).all(|n| adjacency_full(l, n))
    });
    wait_gateways(&lab, "2 next hops in r1's kernel", CONVERGE, &both, &none);

    let t0 = Instant::now();
    let (code, out, err) = lab.pgcast(1, &["drain"]);
    println!(
        "pgcast drain on b1 returned after {} ms: {code:?} {out:?} {err:?}",
        ms(t0.elapsed())
    );
    assert_eq!(code, Some(0), "pgcast drain succeeds: {out} {err}");
    let only_b2 = gateways(&lab, &[2]);
    let d = wait_gateways(&lab, "b1 drained", CONVERGE, &only_b2, &only_b2);
    println!(
        "b1's next hop left r1's kernel {} ms after the drain returned",
        ms(d)
    );
    assert!(
        adjacency_full(&lab, 1),
        "the drain keeps the adjacency Full"
    );
    let (announce, reason) = announced(&lab, 1).expect("status lists the prefix");
    assert!(
        !announce && reason.contains("pgcast drain"),
        "status says why: {reason}"
    );
    assert!(
        lab.router_connects(1, 5432),
        "after the drain b1 accepts connections to its own address again"
    );
    assert_stable(&lab, "drained", Duration::from_secs(2), &only_b2);

    let t1 = Instant::now();
    let (code, out, err) = lab.pgcast(1, &["undrain"]);
    println!("pgcast undrain: {code:?} {out:?} {err:?}");
    assert_eq!(code, Some(0), "pgcast undrain succeeds: {out} {err}");
    assert!(out.contains(&format!("{ANYCAST} announced")), "{out}");
    wait_gateways(&lab, "b1 back", CONVERGE, &both, &only_b2);
    println!(
        "b1 back in r1's kernel route {} ms after undrain",
        ms(t1.elapsed())
    );
    let (code, out, _) = lab.pgcast(1, &["undrain"]);
    assert_eq!((code, out.trim()), (Some(0), "not drained"));
}

#[test]
fn md5_auth_right_key_full_wrong_key_dropped() {
    skip_without_netns!();
    let mut lab = NetLab::up(Options {
        balancers: 2,
        p2p: false,
        auth: Some("md5:1:lab-secret".into()),
    });
    // b2 gets the wrong key (same key id).
    let conf = lab.config_text(2);
    let wrong = conf.replace("key = \"lab-secret\"", "key = \"wrong-secret\"");
    assert_ne!(
        conf, wrong,
        "b2's config has the MD5 key to replace:\n{conf}"
    );
    lab.set_config_text(2, &wrong);

    let t = Instant::now();
    lab.start(1);
    lab.start(2);
    let b2_started = Instant::now();
    let b1 = gateways(&lab, &[1]);
    let b2_rid = lab.b(2).addr.clone();
    let b2_hop = lab.b(2).nexthop.clone();

    // Until b1 has converged and b2 has been running for 6 s: b1 (right key) becomes Full
    // with a route; b2 (wrong key) never shows up, on either side or in the route.
    let mut b1_ready: Option<Duration> = None;
    let mut b2_seen: Option<String> = None;
    poll_until(CONVERGE, || {
        let neighbors = lab.router_neighbors();
        if let Some(n) = neighbors.iter().find(|n| n.router_id == b2_rid) {
            b2_seen.get_or_insert(format!("router lists b2 as neighbour: {n:?}"));
        }
        if let Some(st) = lab.status(2) {
            if let Some(n) = status_neighbors(&st)
                .into_iter()
                .find(|(_, state)| !state.to_ascii_lowercase().starts_with("down"))
            {
                b2_seen.get_or_insert(format!("b2 lists a neighbour: {n:?}"));
            }
        }
        let gw = lab.kernel_gateways();
        if gw.contains(&b2_hop) {
            b2_seen.get_or_insert(format!("route via b2: {gw:?}"));
        }
        if b1_ready.is_none() && gw == b1 && adjacency_full(&lab, 1) {
            b1_ready = Some(t.elapsed());
        }
        b1_ready.is_some() && b2_started.elapsed() >= Duration::from_secs(6)
    });
    let Some(ready) = b1_ready else {
        panic!(
            "md5: b1 (right key) not Full with a route within {CONVERGE:?}\n{}",
            lab.diagnostics()
        );
    };
    println!(
        "md5: b1 (right key) Full and route via {b1:?} {} ms after start",
        ms(ready)
    );
    assert!(
        b2_seen.is_none(),
        "wrong MD5 key: {}\n{}",
        b2_seen.unwrap_or_default(),
        lab.diagnostics()
    );
    let status = lab.status(2).expect("b2 status");
    let dropped = status_dropped(&status);
    println!(
        "md5: b2 (wrong key) no adjacency for {} ms; its dropped = {dropped:?}",
        ms(b2_started.elapsed())
    );
    assert!(
        dropped
            .iter()
            .any(|(reason, &n)| reason.to_ascii_lowercase().contains("auth") && n > 0),
        "b2's status counts packets dropped for authentication: {dropped:?}\n{}",
        lab.diagnostics()
    );
    // b2 does send MD5 hellos, and FRR rejects them (FRR 8.4's wording).
    let ospfd_log = lab.router_log("ospfd");
    let rejected = format!("MD5 auth failed, Router-ID {b2_rid}");
    assert!(
        ospfd_log.contains(&rejected),
        "r1's ospfd log shows {rejected:?}\n{}",
        lab.diagnostics()
    );
    assert_eq!(lab.kernel_gateways(), b1, "only b1 in the route");
}
