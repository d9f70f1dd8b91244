//! BGP and BFD on top of `netlab/`: the same topology (`lab/netns/ospf-topology`) with the
//! router running bgpd (and bfdd), and what the router and pgcast say about it.
//!
//! * [`BgpOptions`] turns into `ospf-topology up` flags (`--routing`, `--bgp-as`, `--bgp-hold`,
//!   `--bgp-password`, `--bfd`, `--ospf-timers`, `--frr-balancers`, `--ipv6`).
//! * Router views parse FRR 8.4's JSON: `show bgp summary json`
//!   (`ipv4Unicast.peers.ADDR.{state, remoteAs, pfxRcd, connectionsEstablished, ...}`),
//!   `show bgp ipv4 unicast PREFIX json` (`paths[].{peer.peerId, community.list, locPrf,
//!   multipath, bestpath.overall}`), `show bfd peers json` (`[{peer, local, interface, status,
//!   diagnostic, remote-diagnostic, receive-interval, transmit-interval, detect-multiplier}]`).
//! * Received NOTIFICATIONs come from r1's bgpd log (`bgp log-neighbor-changes` prints them):
//!   `%NOTIFICATION: received from neighbor 198.18.1.94 6/2 (Cease/Administrative Shutdown) "msg"`,
//!   with `%NOTIFICATION(Hard Reset):` when both sides negotiated the GR N-bit.
//! * pgcast's side: `routing.bgp.neighbors[]` and `routing.bfd.sessions[]` of its status JSON.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::netlab::{file_tail, lossy, poll_until, skip_reason, NetLab, Options, ANYCAST};

/// Takes `one_lab` (labs run one at a time per test binary: BFD's 100 ms timers and two
/// CPUs); `None`, after saying why, when labs cannot run here — except under CI
/// (`CI=true`), where that fails.
pub fn lab_slot(one_lab: &'static Mutex<()>) -> Option<MutexGuard<'static, ()>> {
    if let Some(reason) = skip_reason() {
        assert!(
            std::env::var("CI").is_err(),
            "netns lab tests cannot run under CI: {reason}"
        );
        eprintln!("skipping: {reason}");
        return None;
    }
    Some(one_lab.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The router's AS (`router bgp 65000` in ospf-topology).
pub const ROUTER_AS: u32 = 65000;

/// What r1 and the balancers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Ospf,
    Bgp,
    Both,
}

/// Topology flags for BGP/BFD labs.
#[derive(Debug, Clone)]
pub struct BgpOptions {
    pub balancers: usize,
    pub routing: Routing,
    /// Balancers in AS 65001, 65002, ... instead of all in 65001.
    pub distinct_as: bool,
    /// BGP hold time on both sides (router keepalive = a third).
    pub hold: u16,
    /// TCP-MD5 key on the router and in every pgcast config.
    pub password: Option<String>,
    /// bfdd on r1 (100 ms x 3) for BGP neighbours and OSPF; `bfd = true` in pgcast.
    pub bfd: bool,
    /// OSPF (hello, dead) seconds; default (1, 3).
    pub ospf_timers: Option<(u16, u16)>,
    /// FRR instead of pgcast in the balancers (reference runs of the router side).
    pub frr_balancers: bool,
    /// IPv6 on the link and 2001:db8:2::1/128 announced too (`--ipv6`).
    pub ipv6: bool,
}

impl Default for BgpOptions {
    fn default() -> Self {
        BgpOptions {
            balancers: 3,
            routing: Routing::Bgp,
            distinct_as: false,
            hold: 3,
            password: None,
            bfd: false,
            ospf_timers: None,
            frr_balancers: false,
            ipv6: false,
        }
    }
}

impl BgpOptions {
    /// The extra `ospf-topology up` flags.
    pub fn args(&self) -> Vec<String> {
        let routing = match self.routing {
            Routing::Ospf => "ospf",
            Routing::Bgp => "bgp",
            Routing::Both => "both",
        };
        let mut args: Vec<String> = vec!["--routing".into(), routing.into()];
        args.extend(["--bgp-hold".into(), self.hold.to_string()]);
        if self.distinct_as {
            args.extend(["--bgp-as".into(), "distinct".into()]);
        }
        if let Some(p) = &self.password {
            args.extend(["--bgp-password".into(), p.clone()]);
        }
        if self.bfd {
            args.push("--bfd".into());
        }
        if let Some((hello, dead)) = self.ospf_timers {
            args.extend(["--ospf-timers".into(), format!("{hello}:{dead}")]);
        }
        if self.frr_balancers {
            args.push("--frr-balancers".into());
        }
        if self.ipv6 {
            args.push("--ipv6".into());
        }
        args
    }

    /// Builds the lab.
    pub fn up(&self) -> NetLab {
        let opts = Options {
            balancers: self.balancers,
            ..Options::default()
        };
        NetLab::up_with(opts, &self.args())
    }
}

// ---------------------------------------------------------------------- router views

/// `vtysh -N r1 -c CMD` parsed as JSON; `Value::Null` when it is not JSON (e.g. no route).
pub fn router_json(lab: &NetLab, cmd: &str) -> Value {
    serde_json::from_str(&lab.vtysh(cmd)).unwrap_or(Value::Null)
}

/// A neighbour in the router's `show bgp summary json`.
#[derive(Debug, Clone)]
pub struct RouterPeer {
    pub address: String,
    /// "Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"
    pub state: String,
    pub remote_as: u64,
    pub prefixes_received: u64,
    pub established_count: u64,
    pub dropped_count: u64,
}

pub fn router_peers(lab: &NetLab) -> Vec<RouterPeer> {
    let v = router_json(lab, "show bgp summary json");
    let mut list = Vec::new();
    for (address, p) in v["ipv4Unicast"]["peers"].as_object().into_iter().flatten() {
        list.push(RouterPeer {
            address: address.clone(),
            state: p["state"].as_str().unwrap_or("").to_string(),
            remote_as: p["remoteAs"].as_u64().unwrap_or(0),
            prefixes_received: p["pfxRcd"].as_u64().unwrap_or(0),
            established_count: p["connectionsEstablished"].as_u64().unwrap_or(0),
            dropped_count: p["connectionsDropped"].as_u64().unwrap_or(0),
        });
    }
    list
}

/// Addresses of the router's Established BGP neighbours.
pub fn router_established(lab: &NetLab) -> BTreeSet<String> {
    router_peers(lab)
        .into_iter()
        .filter(|p| p.state == "Established")
        .map(|p| p.address)
        .collect()
}

/// One path of the router's BGP table entry for the anycast prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPath {
    pub peer: String,
    /// `community.list`: "65001:100", "gracefulShutdown", ...
    pub communities: Vec<String>,
    pub local_pref: Option<u64>,
    pub multipath: bool,
    pub best: bool,
}

impl RouterPath {
    pub fn graceful_shutdown(&self) -> bool {
        self.communities.iter().any(|c| c == "gracefulShutdown")
    }
}

/// `show bgp ipv4 unicast 198.18.2.0/32 json` paths (empty when the prefix is gone).
pub fn router_paths(lab: &NetLab) -> Vec<RouterPath> {
    let v = router_json(lab, &format!("show bgp ipv4 unicast {ANYCAST} json"));
    v["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| RouterPath {
            peer: p["peer"]["peerId"].as_str().unwrap_or("").to_string(),
            communities: p["community"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            local_pref: p["locPrf"].as_u64(),
            multipath: p["multipath"].as_bool().unwrap_or(false),
            best: p["bestpath"]["overall"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// A session of the router's `show bfd peers json`.
#[derive(Debug, Clone)]
pub struct BfdPeer {
    pub peer: String,
    pub local: String,
    pub interface: String,
    /// "up", "down", "init", "shutdown"
    pub status: String,
    pub diagnostic: String,
    pub remote_diagnostic: String,
    pub receive_interval_ms: u64,
    pub transmit_interval_ms: u64,
    pub detect_multiplier: u64,
    pub remote_receive_interval_ms: u64,
    pub remote_transmit_interval_ms: u64,
    pub remote_detect_multiplier: u64,
}

pub fn router_bfd_peers(lab: &NetLab) -> Vec<BfdPeer> {
    let v = router_json(lab, "show bfd peers json");
    let s = |p: &Value, k: &str| p[k].as_str().unwrap_or("").to_string();
    let n = |p: &Value, k: &str| p[k].as_u64().unwrap_or(0);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| BfdPeer {
            peer: s(p, "peer"),
            local: s(p, "local"),
            interface: s(p, "interface"),
            status: s(p, "status"),
            diagnostic: s(p, "diagnostic"),
            remote_diagnostic: s(p, "remote-diagnostic"),
            receive_interval_ms: n(p, "receive-interval"),
            transmit_interval_ms: n(p, "transmit-interval"),
            detect_multiplier: n(p, "detect-multiplier"),
            remote_receive_interval_ms: n(p, "remote-receive-interval"),
            remote_transmit_interval_ms: n(p, "remote-transmit-interval"),
            remote_detect_multiplier: n(p, "remote-detect-multiplier"),
        })
        .collect()
}

/// Whether the router's BFD session with `peer` is up.
pub fn router_bfd_up(lab: &NetLab, peer: &str) -> bool {
    router_bfd_peers(lab)
        .iter()
        .any(|p| p.peer == peer && p.status == "up")
}

/// A NOTIFICATION r1's bgpd logged as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNotification {
    pub neighbor: String,
    pub code: u8,
    pub subcode: u8,
    /// e.g. "Cease/Administrative Shutdown"
    pub description: String,
    /// The RFC 8203 shutdown communication, when FRR printed one.
    pub message: Option<String>,
    /// Wrapped in an RFC 8538 Hard Reset.
    pub hard_reset: bool,
}

/// Every `%NOTIFICATION...: received from neighbor` line of r1's bgpd log.
pub fn received_notifications(lab: &NetLab) -> Vec<ReceivedNotification> {
    lab.router_log("bgpd")
        .lines()
        .filter_map(parse_received_notification)
        .collect()
}

/// Parses `... %NOTIFICATION[(Hard Reset)]: received from neighbor ADDR C/S (DESC) ["MSG"|...]`.
pub fn parse_received_notification(line: &str) -> Option<ReceivedNotification> {
    let rest = &line[line.find("%NOTIFICATION")? + "%NOTIFICATION".len()..];
    let hard_reset = rest.starts_with("(Hard Reset)");
    let rest = &rest[rest.find(": received from neighbor ")? + 25..];
    let (neighbor, rest) = rest.split_once(' ')?;
    let (codes, rest) = rest.split_once(' ')?;
    let (code, subcode) = codes.split_once('/')?;
    let rest = rest.strip_prefix('(')?;
    let close = rest.find(')')?;
    let description = rest[..close].to_string();
    let tail = rest[close + 1..].trim();
    let message = tail
        .strip_prefix('"')
        .and_then(|t| t.rfind('"').map(|end| t[..end].to_string()));
    Some(ReceivedNotification {
        neighbor: neighbor.to_string(),
        code: code.parse().ok()?,
        subcode: subcode.parse().ok()?,
        description,
        message,
        hard_reset,
    })
}

/// A `TcpExt` counter of /proc/net/netstat inside namespace `ns` (e.g. "TCPMD5Failure").
pub fn tcp_ext_counter(ns: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/netstat"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("read /proc/net/netstat in {ns}: {e}"));
    let text = lossy(&out.stdout);
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let Some(values) = lines.next() else { break };
        if !header.starts_with("TcpExt:") {
            continue;
        }
        let counters: BTreeMap<&str, &str> = header
            .split_whitespace()
            .zip(values.split_whitespace())
            .collect();
        return counters.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    }
    0
}

// ---------------------------------------------------------------------- pgcast status

/// `routing.bgp.neighbors[]` of a `pgcast status --json`.
#[derive(Debug, Clone)]
pub struct StatusNeighbor {
    pub address: String,
    pub state: String,
    pub remote_as: u64,
    pub hold_time: u64,
    pub last_error: String,
    /// Who opened the session's connection: "local" (pgcast) or "remote" (the router).
    pub connection: String,
    /// `prefixes[]`: prefix → (announced, reason)
    pub prefixes: BTreeMap<String, (bool, String)>,
}

pub fn status_bgp_neighbors(status: &Value) -> Vec<StatusNeighbor> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    status["routing"]["bgp"]["neighbors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| StatusNeighbor {
            address: text(&n["address"]),
            state: text(&n["state"]),
            remote_as: n["remote_as"].as_u64().unwrap_or(0),
            hold_time: n["hold_time"].as_u64().unwrap_or(0),
            last_error: text(&n["last_error"]),
            connection: text(&n["connection"]),
            prefixes: n["prefixes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        text(&p["prefix"]),
                        (
                            p["announced"].as_bool().unwrap_or(false),
                            text(&p["reason"]),
                        ),
                    )
                })
                .collect(),
        })
        .collect()
}

/// pgcast in balancer `n` reports its session with `peer` Established.
pub fn pgcast_established(lab: &NetLab, n: usize, peer: &str) -> bool {
    lab.status(n).is_some_and(|s| {
        status_bgp_neighbors(&s)
            .iter()
            .any(|nb| nb.address == peer && nb.state == "Established")
    })
}

/// `routing.bfd.sessions[]` of a `pgcast status --json`: (peer, state).
pub fn status_bfd_sessions(status: &Value) -> Vec<(String, String)> {
    status["routing"]["bfd"]["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["peer"].as_str().unwrap_or("").to_string(),
                s["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------- waiting

/// Router BGP/BFD state, its bgpd/bfdd logs, then netlab's diagnostics.
pub fn diagnostics(lab: &NetLab) -> String {
    let vty = |cmd: &str| {
        Command::new("vtysh")
            .args(["-N", &lab.router, "-c", cmd])
            .output()
            .map(|o| format!("{}{}", lossy(&o.stdout), lossy(&o.stderr)))
            .unwrap_or_else(|e| format!("<vtysh: {e}>"))
    };
    let mut s = format!(
        "==== bgplab {} ====\n---- router: show bgp summary\n{}\
         ---- router: show bgp ipv4 unicast {ANYCAST}\n{}---- router: show bfd peers brief\n{}",
        lab.prefix,
        vty("show bgp summary"),
        vty(&format!("show bgp ipv4 unicast {ANYCAST}")),
        vty("show bfd peers brief"),
    );
    for daemon in ["bgpd", "bfdd"] {
        let path = lab.state.join(format!("{}-{daemon}.log", lab.router));
        if path.exists() {
            s.push_str(&format!(
                "---- router {daemon} log (tail)\n{}\n",
                file_tail(&path, 5000)
            ));
        }
    }
    s.push_str(&lab.diagnostics());
    s
}

/// Polls `pred` every 10 ms; panics with [`diagnostics`] after `timeout`. The time it took.
pub fn wait_until(
    lab: &NetLab,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&NetLab) -> bool,
) -> Duration {
    match poll_until(timeout, || pred(lab)) {
        Some(d) => d,
        None => panic!(
            "not reached within {timeout:?}: {what}\n{}",
            diagnostics(lab)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_notification_log_lines_parse() {
        let plain = "2026/11/22 04:56:39.244 BGP: [H7QV4-WR3ZD] %NOTIFICATION: received from \
                     neighbor 198.18.9.1 6/2 (Cease/Administrative Shutdown) \"pgcast: bye\"";
        assert_eq!(
            parse_received_notification(plain),
            Some(ReceivedNotification {
                neighbor: "198.18.9.1".into(),
                code: 6,
                subcode: 2,
                description: "Cease/Administrative Shutdown".into(),
                message: Some("pgcast: bye".into()),
                hard_reset: false,
            })
        );
        let wrapped = "2026/11/22 05:03:00.173 BGP: [H7QV4-WR3ZD] %NOTIFICATION(Hard Reset): \
                       received from neighbor 198.18.1.95 6/2 (Cease/Administrative Shutdown) \
                       \"pgcast b2: draining (SIGTERM)\"";
        let n = parse_received_notification(wrapped).expect("parses");
        assert!(n.hard_reset);
        assert_eq!(n.message.as_deref(), Some("pgcast b2: draining (SIGTERM)"));
        let sent = "%NOTIFICATION: sent to neighbor 198.18.9.1 4/0 (Hold Timer Expired) 0 bytes";
        assert_eq!(parse_received_notification(sent), None);
    }
}
