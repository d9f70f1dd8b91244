//! IPv6 anycast over BGP against a real FRR 8.4 router: pgcast announces 2001:db8:2::1/128 in
//! MP_REACH_NLRI (RFC 4760) over its IPv4 session, beside 198.18.2.0/32, with the balancer's
//! IPv6 address as next hop; r1 installs both routes with a next hop per balancer (ECMP), and
//! a balancer that is drained or stops withdraws them. Built by
//! `lab/netns/ospf-topology --routing bgp --ipv6`.
//!
//! Needs root and `ip netns`; without them the test says why and passes, except under CI
//! (`CI=true`), where it fails.

#[path = "common/bgplab.rs"]
mod bgplab;
#[path = "common/netlab/mod.rs"]
mod netlab;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use bgplab::{router_established, router_json, wait_until, BgpOptions};
use netlab::{status_prefix, NetLab};

const ANYCAST6: &str = "2001:db8:2::1/128";
const CONVERGE: Duration = Duration::from_secs(30);

static ONE_LAB: Mutex<()> = Mutex::new(());

/// The gateways r1's kernel has for the IPv6 anycast prefix.
fn kernel_gateways6(lab: &NetLab) -> BTreeSet<String> {
    lab.kernel_nexthops_of(ANYCAST6)
        .into_iter()
        .map(|h| h.gateway)
        .collect()
}

/// The balancers' IPv6 addresses, as `ospf-topology` wrote them (`bN_addr6`).
fn v6_addrs(lab: &NetLab, balancers: &[usize]) -> BTreeSet<String> {
    let env = std::fs::read_to_string(lab.state.join("topology.env")).expect("topology.env");
    balancers
        .iter()
        .map(|&n| {
            let key = format!("b{n}_addr6=");
            env.lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or_else(|| panic!("no {key} in topology.env"))
                .to_string()
        })
        .collect()
}

fn v4_addrs(lab: &NetLab, balancers: &[usize]) -> BTreeSet<String> {
    balancers.iter().map(|&n| lab.b(n).addr.clone()).collect()
}

#[test]
fn ipv6_anycast_over_bgp_reaches_the_router_with_ecmp_and_is_withdrawn() {
    let Some(_slot) = bgplab::lab_slot(&ONE_LAB) else {
        return;
    };
    let mut lab = BgpOptions {
        balancers: 2,
        ipv6: true,
        ..BgpOptions::default()
    }
    .up();
    lab.start(1);
    lab.start(2);
    let both4 = v4_addrs(&lab, &[1, 2]);
    wait_until(&lab, "router: both balancers Established", CONVERGE, |l| {
        both4.is_subset(&router_established(l))
    });
    let both6 = v6_addrs(&lab, &[1, 2]);
    wait_until(&lab, "IPv6 next hops in r1's kernel", CONVERGE, |l| {
        kernel_gateways6(l) == both6
    });
    wait_until(&lab, "IPv4 next hops in r1's kernel", CONVERGE, |l| {
        l.kernel_gateways() == both4
    });

    // FRR's view: one path per balancer, learned over the IPv4 sessions.
    let route = router_json(&lab, &format!("show bgp ipv6 unicast {ANYCAST6} json"));
    let peers: BTreeSet<String> = route["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["peer"]["peerId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(peers, both4, "{route}");

    let status = lab.status(1).expect("status");
    let (announced, reason) = status_prefix(&status, ANYCAST6).expect("the IPv6 prefix in status");
    assert!(announced, "{reason}");
    let families = &status["routing"]["bgp"]["neighbors"][0]["families"];
    assert_eq!(
        families,
        &serde_json::json!(["ipv4-unicast", "ipv6-unicast"]),
        "negotiated with r1"
    );

    // `pgcast drain` on b1 takes its IPv6 route out too (GRACEFUL_SHUTDOWN, then the
    // withdrawal); `pgcast undrain` brings it back.
    let only2 = v6_addrs(&lab, &[2]);
    let (code, out, err) = lab.pgcast(1, &["drain"]);
    assert_eq!(code, Some(0), "pgcast drain: {out} {err}");
    wait_until(&lab, "b1's IPv6 route drained", CONVERGE, |l| {
        kernel_gateways6(l) == only2
    });
    let (code, out, err) = lab.pgcast(1, &["undrain"]);
    assert_eq!(code, Some(0), "pgcast undrain: {out} {err}");
    wait_until(&lab, "b1's IPv6 route back after undrain", CONVERGE, |l| {
        kernel_gateways6(l) == both6
    });

    // SIGTERM on b1: both of its routes leave r1, b2's stay.
    lab.stop(1);
    wait_until(&lab, "b1's IPv6 route withdrawn", CONVERGE, |l| {
        kernel_gateways6(l) == only2
    });
    let only2_v4 = v4_addrs(&lab, &[2]);
    wait_until(&lab, "b1's IPv4 route withdrawn", CONVERGE, |l| {
        l.kernel_gateways() == only2_v4
    });
}
