//! Test harness: the network-namespace topology of `lab/netns/ospf-topology` (an FRR router,
//! pgcast balancer namespaces, a PostgreSQL 15 primary) with pgcast processes in it.
//!
//! * Every lab has its own name prefix (`pgct<pid>n<k>`) and state dir (`/tmp/pgct-<pid>-<k>`),
//!   so tests run in parallel without colliding with each other or with `lab/up`.
//! * pgcast runs as `ip netns exec NS $PGCAST_BIN run -c STATE/bN/pgcast.toml`; its PID is
//!   recorded in `STATE/pids`, so `ospf-topology down` stops exactly it.
//! * Cleanup: `Drop` kills our pgcast children and runs `down`; a detached reaper shell runs
//!   `down` once the test process is gone (abort, `process::exit`), as in `pg_cluster/`.
//!   When the test panicked, the logs are copied to `/tmp/netlab-failed-<prefix>/` first.
//! * Uses only std + serde_json.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod balancer;
mod observe;
mod router;
mod topology;

// Not every test that includes netlab reads the status JSON.
#[allow(unused_imports)]
pub use observe::{status_dropped, status_full_with, status_neighbors, status_prefix};

/// The anycast prefix every balancer announces.
pub const ANYCAST: &str = "198.18.2.0/32";
/// How often `wait_until` polls (kernel route reads take a few ms).
const POLL: Duration = Duration::from_millis(10);

/// Why lab tests cannot run here (they then print this and return), or `None`.
pub fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            if !is_root() {
                return Some("not running as root (network namespaces need it)".into());
            }
            let probe = format!("pgctprobe{}", std::process::id());
            match Command::new("ip").args(["netns", "add", &probe]).output() {
                Ok(o) if o.status.success() => {
                    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
                    None
                }
                Ok(o) => Some(format!("`ip netns add` fails: {}", lossy(&o.stderr).trim())),
                Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
            }
        })
        .clone()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `$PGCAST_BIN`, or the binary cargo built for this test.
pub fn pgcast_bin() -> PathBuf {
    std::env::var_os("PGCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pgcast")))
}

fn topology_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/netns/ospf-topology")
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The last `max` bytes of a file, for diagnostics.
pub fn file_tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(b) => lossy(&b[b.len().saturating_sub(max)..]),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Field 22 of /proc/PID/stat (start time), to tell a process from a reused PID.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

impl NetLab {
    /// Records `pid` in `STATE/pids` (with its start time, so a reused PID is never hit):
    /// `down` stops it with SIGTERM. A process already gone is not recorded.
    pub fn record_pid(&self, pid: u32, name: &str) {
        if let Some(st) = start_time(pid) {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(self.state.join("pids"))
                .expect("open STATE/pids");
            let _ = f.write_all(format!("{pid} {st} TERM {name}\n").as_bytes());
        }
    }
}

/// Polls `pred` every 10 ms; the time it took, or `None` after `timeout`.
pub fn poll_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if pred() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Topology options (`ospf-topology up` flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub balancers: usize,
    pub p2p: bool,
    /// `md5:KEYID:KEY`
    pub auth: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            balancers: 3,
            p2p: false,
            auth: None,
        }
    }
}

/// One next hop of the router's route to the anycast prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    pub gateway: String,
    pub dev: String,
}

/// A neighbour in the router's `show ip ospf neighbor json`.
#[derive(Debug, Clone)]
pub struct RouterNeighbor {
    pub router_id: String,
    pub address: String,
    /// e.g. "Full/DROther", "Full/-", "2-Way/DROther", "Init/DROther"
    pub state: String,
}

/// One balancer namespace and its pgcast.
pub struct Balancer {
    pub index: usize,
    pub ns: String,
    /// Its router id and interface address.
    pub addr: String,
    /// The router's next hop towards it.
    pub nexthop: String,
    pub iface: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct NetLab {
    pub state: PathBuf,
    pub prefix: String,
    pub router: String,
    pub router_addr: String,
    pub pg_ns: String,
    pub pg_addr: String,
    pub balancers: Vec<Balancer>,
    reaper: Option<Child>,
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for b in &mut self.balancers {
            if let Some(mut c) = b.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() && self.state.exists() {
            eprintln!(
                "netlab {}: logs kept in {}",
                self.prefix,
                self.keep_logs().display()
            );
        }
        let ok = Command::new(topology_script())
            .arg("down")
            .arg(&self.state)
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if let Some(mut reaper) = self.reaper.take() {
            if ok {
                let _ = reaper.kill();
                let _ = reaper.wait();
            }
            // else: it retries `down` when this process exits.
        }
    }
}
