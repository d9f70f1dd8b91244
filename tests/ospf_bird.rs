//! pgcast's OSPFv2 speaker against a real BIRD 2 router, in the namespaces of
//! `lab/netns/ospf-topology` (see `tests/common/netlab/`): r1's FRR ospfd is replaced by BIRD
//! (`bird2`, installed by `scripts/deps`), which exports the OSPF route to r1's kernel.
//!
//! Skipped (message on stderr, test passes) only when not root or `ip netns` cannot be used; a
//! missing BIRD fails the test. Timings are printed:
//!   cargo test --test ospf_bird -- --nocapture

#[path = "common/netlab/mod.rs"]
mod netlab;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use netlab::{lossy, skip_reason, status_dropped, status_full_with, NetLab, Options, ANYCAST};

/// BIRD waits its wait timer (3 s here) and runs its first SPF about 4 s after start.
const CONVERGE: Duration = Duration::from_secs(30);

/// 40 bytes: between 33 and 64 bytes RFC 5709 §3.3 hashes the key first and BIRD 2 uses it as
/// it is (plain RFC 2104 HMAC), so the two keyings produce different digests.
const KEY: &str = "pgcast-and-bird2-hmac-sha-256-40-bytes!!";

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";

fn bird_conf(lab: &NetLab) -> String {
    format!(
        r#"router id {router};
log "{state}/bird.log" all;
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ export where net = {ANYCAST}; }}; }}
protocol ospf v2 o {{
  ipv4 {{ import all; export none; }};
  area 0 {{
    interface "eth0" {{
      hello 1; dead 3; wait 3; priority 100;
      authentication cryptographic;
      password "{KEY}" {{ id 1; algorithm hmac sha256; }};
    }};
  }};
}}
"#,
        router = lab.router_addr,
        state = lab.state.display(),
    )
}

/// `birdc show ospf neighbors`: whether BIRD has `addr` in state Full.
fn bird_full_with(socket: &Path, addr: &str) -> bool {
    let out = Command::new(BIRDC)
        .arg("-s")
        .arg(socket)
        .args(["show", "ospf", "neighbors"])
        .output()
        .expect("run birdc");
    lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(addr) && l.contains("Full"))
}

/// Lines of BIRD's log where it rejected a packet of `addr` for its digest.
fn bird_auth_failures(lab: &NetLab, addr: &str) -> usize {
    let needle = format!("Authentication failed for nbr {addr} ");
    fs::read_to_string(lab.state.join("bird.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// b1's pgcast config with HMAC-SHA-256 on its OSPF interface (`key_preparation` omitted for
/// the default, "rfc5709").
fn with_hmac(config: &str, preparation: Option<&str>) -> String {
    let prep = preparation
        .map(|p| format!(", key_preparation = \"{p}\""))
        .unwrap_or_default();
    let auth = format!(
        "dead_interval = 3\nauth = {{ type = \"hmac-sha-256\", key_id = 1, key = \"{KEY}\"{prep} }}\n"
    );
    let out = config.replacen("dead_interval = 3\n", &auth, 1);
    assert_ne!(out, config, "b1's config has an OSPF interface:\n{config}");
    out
}

#[test]
fn bird_hmac_sha256_40_byte_key_needs_rfc2104_key_preparation() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    assert!(
        Path::new(BIRD).exists() && Path::new(BIRDC).exists(),
        "BIRD 2 is missing: run scripts/deps (it installs bird2)"
    );
    assert_eq!(KEY.len(), 40);
    let mut lab = NetLab::up(Options {
        balancers: 1,
        ..Options::default()
    });
    lab.kill_router_daemon("ospfd");
    let conf = lab.state.join("bird.conf");
    let socket = lab.state.join("bird.ctl");
    fs::write(&conf, bird_conf(&lab)).expect("write bird.conf");
    let conf_arg = conf.display().to_string();
    let socket_arg = socket.display().to_string();
    lab.spawn_in_router(
        "r1-bird",
        &[BIRD, "-f", "-c", &conf_arg, "-s", &socket_arg],
        &lab.state.join("bird.out"),
    );
    lab.wait_until("BIRD answers birdc", Duration::from_secs(10), |_| {
        Command::new(BIRDC)
            .arg("-s")
            .arg(&socket)
            .args(["show", "status"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let b1 = lab.b(1).addr.clone();
    let via_b1: BTreeSet<String> = [lab.b(1).nexthop.clone()].into();
    let plain = lab.config_text(1);

    // RFC 2104 keying: BIRD's digests check out, the adjacency forms, the route is installed.
    lab.set_config_text(1, &with_hmac(&plain, Some("rfc2104")));
    let t = Instant::now();
    lab.start(1);
    let full = lab.wait_until("BIRD: b1 Full", CONVERGE, |_| bird_full_with(&socket, &b1));
    let routed = lab.wait_until("route via b1 in r1's kernel", CONVERGE, |l| {
        l.kernel_gateways() == via_b1
    });
    let status = lab.status(1).expect("b1 status");
    assert!(
        status_full_with(&status, &lab.router_addr),
        "pgcast reports Full with BIRD: {status}"
    );
    let dropped = status_dropped(&status);
    assert_eq!(
        dropped.get("auth_failed").copied().unwrap_or(0),
        0,
        "no digest failures with rfc2104: {dropped:?}"
    );
    assert_eq!(
        bird_auth_failures(&lab, &b1),
        0,
        "BIRD accepted every digest with rfc2104"
    );
    println!(
        "rfc2104, 40-byte key: BIRD Full with b1 after {} ms, route via b1 after {} ms (since \
         pgcast started: {} ms)",
        full.as_millis(),
        (full + routed).as_millis(),
        t.elapsed().as_millis()
    );
    lab.stop(1);
    lab.wait_until("BIRD forgets b1", CONVERGE, |l| {
        !bird_full_with(&socket, &b1) && l.kernel_gateways().is_empty()
    });

    // RFC 5709 keying (the default, right for FRR): BIRD drops pgcast's packets and pgcast
    // drops BIRD's; never an adjacency, never a route.
    lab.set_config_text(1, &with_hmac(&plain, None));
    lab.start(1);
    let watch = Instant::now();
    let mut seen: Option<&str> = None;
    while watch.elapsed() < Duration::from_secs(10) && seen.is_none() {
        if bird_full_with(&socket, &b1) {
            seen = Some("BIRD: b1 Full");
        } else if !lab.kernel_gateways().is_empty() {
            seen = Some("a route in r1's kernel");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(what) = seen {
        panic!(
            "rfc5709 keying against BIRD with a 40-byte key: {what}\n{}",
            lab.diagnostics()
        );
    }
    let status = lab.status(1).expect("b1 status");
    let dropped = status_dropped(&status);
    let failed = dropped.get("auth_failed").copied().unwrap_or(0);
    let bird_failed = bird_auth_failures(&lab, &b1);
    println!(
        "rfc5709 (default), 40-byte key: 10 s without adjacency; pgcast dropped {dropped:?}, \
         BIRD logged {bird_failed} authentication failures for b1"
    );
    assert!(
        failed > 0,
        "pgcast received BIRD's hellos and rejected their digests: {dropped:?}"
    );
    assert!(
        bird_failed > 0,
        "BIRD received pgcast's hellos and rejected their digests"
    );
    assert!(!status_full_with(&status, &lab.router_addr));
}
