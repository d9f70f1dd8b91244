//! Test harness: the network-namespace topology of `lab/netns/ospf-topology` (an FRR router,
//! pgcast balancer namespaces, a PostgreSQL 15 primary) with pgcast processes in it.
//!
//! * Every lab has its own name prefix (`pgct<pid>n<k>`) and state dir (`/tmp/pgct-<pid>-<k>`),
//!   so tests run in parallel without colliding with each other or with `lab/up`.
//! * pgcast runs as `ip netns exec NS $PGCAST_BIN run -c STATE/bN/pgcast.toml`; its PID is
//!   recorded in `STATE/pids`, so `ospf-topology down` stops exactly it.
//! * Cleanup: `Drop` kills our pgcast children and runs `down`; a detached reaper shell runs
//!   `down` once the test process is gone (abort, `process::exit`), as in `pg_cluster.rs`.
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

impl NetLab {
    /// `ospf-topology up` with a fresh prefix and state dir (FRR router debug logging on).
    pub fn up(opts: Options) -> NetLab {
        Self::up_with(opts, &[])
    }

    /// [`up`](Self::up) with more `ospf-topology up` flags (e.g. `--routing bgp`).
    pub fn up_with(opts: Options, extra_args: &[String]) -> NetLab {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let k = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("pgct{pid}n{k}");
        let state = PathBuf::from(format!("/tmp/pgct-{pid}-{k}"));
        let _ = fs::remove_dir_all(&state);
        let mut lab = NetLab {
            state: state.clone(),
            prefix: prefix.clone(),
            router: String::new(),
            router_addr: String::new(),
            pg_ns: String::new(),
            pg_addr: String::new(),
            balancers: Vec::new(),
            reaper: None,
        };
        // Before anything exists: an abort from here on is covered.
        lab.reaper = Some(lab.spawn_reaper());

        let mut cmd = Command::new(topology_script());
        cmd.arg("up").arg(&state).arg(&prefix).arg("--debug");
        cmd.args(["--balancers", &opts.balancers.to_string()]);
        if opts.p2p {
            cmd.arg("--p2p");
        }
        if let Some(a) = &opts.auth {
            cmd.args(["--auth", a]);
        }
        cmd.args(extra_args);
        let started = Instant::now();
        let out = run(&mut cmd);
        if !out.status.success() {
            panic!(
                "ospf-topology up failed ({}):\n{}{}",
                out.status,
                lossy(&out.stdout),
                lossy(&out.stderr)
            );
        }
        eprintln!(
            "netlab {prefix}: up in {:.2?} ({opts:?} {extra_args:?}), state {}",
            started.elapsed(),
            state.display()
        );

        let env: BTreeMap<String, String> = fs::read_to_string(state.join("topology.env"))
            .expect("read topology.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("topology.env lacks {k}"))
        };
        lab.router = get("router");
        lab.router_addr = get("router_addr");
        lab.pg_ns = get("pg");
        lab.pg_addr = get("pg_addr");
        let n: usize = get("balancers").parse().expect("balancers");
        for i in 1..=n {
            let dir = PathBuf::from(get(&format!("b{i}_dir")));
            lab.balancers.push(Balancer {
                index: i,
                ns: get(&format!("b{i}_ns")),
                addr: get(&format!("b{i}_addr")),
                nexthop: get(&format!("b{i}_nexthop")),
                iface: get(&format!("b{i}_iface")),
                config: PathBuf::from(get(&format!("b{i}_config"))),
                log: dir.join("pgcast.log"),
                dir,
                child: None,
            });
        }
        lab
    }

    /// Balancer `n` (1-based).
    pub fn b(&self, n: usize) -> &Balancer {
        &self.balancers[n - 1]
    }

    // ------------------------------------------------------------------ pgcast

    /// Starts pgcast in balancer `n` and waits until its admin socket answers.
    pub fn start(&mut self, n: usize) {
        let pid = {
            let b = &mut self.balancers[n - 1];
            assert!(b.child.is_none(), "pgcast already runs in b{n}");
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&b.log)
                .expect("open pgcast log");
            let _ = writeln!(&log, "==== netlab: pgcast start ====");
            let filter = std::env::var("NETLAB_PGCAST_LOG").unwrap_or_else(|_| "debug".into());
            let child = Command::new("ip")
                .args(["netns", "exec", &b.ns])
                .arg(pgcast_bin())
                .args(["run", "-c"])
                .arg(&b.config)
                .env("PGCAST_LOG", filter)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn pgcast in {}: {e}", b.ns));
            let pid = child.id();
            b.child = Some(child);
            pid
        };
        // `ip netns exec` execs: this is pgcast's own PID. Record it for `down`.
        if let Some(st) = start_time(pid) {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(self.state.join("pids"))
                .expect("open STATE/pids");
            let _ = f.write_all(format!("{pid} {st} TERM b{n}-pgcast\n").as_bytes());
        }
        let answered = poll_until(Duration::from_secs(20), || {
            self.status(n).is_some() || !self.running_ref(n)
        });
        if answered.is_none() || !self.running_ref(n) {
            panic!("pgcast in b{n} did not come up\n{}", self.diagnostics());
        }
    }

    /// Whether pgcast in balancer `n` is still running.
    pub fn running(&mut self, n: usize) -> bool {
        match self.balancers[n - 1].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Like [`running`](Self::running) without `&mut`: the process exists and is no zombie.
    pub fn running_ref(&self, n: usize) -> bool {
        let Some(c) = self.balancers[n - 1].child.as_ref() else {
            return false;
        };
        fs::read_to_string(format!("/proc/{}/stat", c.id()))
            .map(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            })
            .unwrap_or(false)
    }

    /// Sends a signal ("TERM", "KILL", "STOP", ...) to pgcast in balancer `n`.
    pub fn signal(&self, n: usize, sig: &str) {
        let c = self.balancers[n - 1]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("pgcast does not run in b{n}"));
        let st = run(Command::new("kill").args([&format!("-{sig}"), &c.id().to_string()]));
        assert!(
            st.status.success(),
            "kill -{sig} b{n}: {}",
            lossy(&st.stderr)
        );
    }

    /// Waits for pgcast in balancer `n` to exit; its exit status, or `None` on timeout.
    pub fn wait_exit(&mut self, n: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.balancers[n - 1].child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.balancers[n - 1].child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM and wait (15 s) for the exit; panics if pgcast does not stop.
    pub fn stop(&mut self, n: usize) -> std::process::ExitStatus {
        self.signal(n, "TERM");
        match self.wait_exit(n, Duration::from_secs(15)) {
            Some(st) => st,
            None => panic!(
                "pgcast in b{n} did not exit within 15 s of SIGTERM\n{}",
                self.diagnostics()
            ),
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self, n: usize) {
        self.signal(n, "KILL");
        assert!(
            self.wait_exit(n, Duration::from_secs(5)).is_some(),
            "pgcast in b{n} survived SIGKILL"
        );
    }

    /// `pgcast ARGS -c CONFIG` run inside balancer `n`: its exit code, stdout and stderr.
    pub fn pgcast(&self, n: usize, args: &[&str]) -> (Option<i32>, String, String) {
        let b = self.b(n);
        let out = Command::new("ip")
            .args(["netns", "exec", &b.ns])
            .arg(pgcast_bin())
            .args(args)
            .arg("-c")
            .arg(&b.config)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run pgcast {args:?} in {}: {e}", b.ns));
        (out.status.code(), lossy(&out.stdout), lossy(&out.stderr))
    }

    /// `pgcast status --json` run inside balancer `n`; `None` if it printed no JSON.
    pub fn status(&self, n: usize) -> Option<Value> {
        serde_json::from_str(&self.pgcast(n, &["status", "--json"]).1).ok()
    }

    /// Whether a TCP connection from the router to balancer `n`'s own address and `port` is
    /// accepted within 3 s (a paused listener drops the SYNs).
    pub fn router_connects(&self, n: usize, port: u16) -> bool {
        let target = format!("exec 3<>/dev/tcp/{}/{port}", self.b(n).addr);
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.router,
                "timeout",
                "3",
                "bash",
                "-c",
                &target,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The config file of balancer `n`.
    pub fn config_text(&self, n: usize) -> String {
        fs::read_to_string(&self.b(n).config).expect("read pgcast.toml")
    }

    /// Replaces the config file of balancer `n` (before `start`).
    pub fn set_config_text(&self, n: usize, text: &str) {
        fs::write(&self.b(n).config, text).expect("write pgcast.toml");
    }

    /// The router's log of one FRR daemon ("zebra", "ospfd").
    pub fn router_log(&self, daemon: &str) -> String {
        let path = self.state.join(format!("{}-{daemon}.log", self.router));
        fs::read_to_string(path).unwrap_or_default()
    }

    pub fn pgcast_log(&self, n: usize) -> String {
        fs::read_to_string(&self.b(n).log).unwrap_or_default()
    }

    // ------------------------------------------------------------------ faults

    /// Makes balancer `n` unhealthy: the PostgreSQL host becomes a blackhole from there.
    pub fn blackhole_pg(&self, n: usize) {
        self.ip_route(n, "add");
    }

    /// Undoes [`blackhole_pg`](Self::blackhole_pg).
    pub fn unblackhole_pg(&self, n: usize) {
        self.ip_route(n, "del");
    }

    fn ip_route(&self, n: usize, verb: &str) {
        let target = format!("{}/32", self.pg_addr);
        let out = run(Command::new("ip").args([
            "-n",
            &self.b(n).ns,
            "route",
            verb,
            "blackhole",
            &target,
        ]));
        assert!(
            out.status.success(),
            "ip route {verb} blackhole in b{n}: {}",
            lossy(&out.stderr)
        );
    }

    // ------------------------------------------------------------------ router views

    /// `vtysh -N ROUTER -c CMD` output (panics if vtysh fails).
    pub fn vtysh(&self, cmd: &str) -> String {
        let out = run(Command::new("vtysh").args(["-N", &self.router, "-c", cmd]));
        assert!(
            out.status.success(),
            "vtysh -N {} -c {cmd:?}: {}{}",
            self.router,
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
        lossy(&out.stdout)
    }

    fn vtysh_json(&self, cmd: &str) -> Value {
        let text = self.vtysh(cmd);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("vtysh {cmd:?}: {e}: {text}"))
    }

    /// The router kernel's next hops for the anycast prefix (`ip -j route show`), sorted.
    pub fn kernel_nexthops(&self) -> Vec<NextHop> {
        let out =
            run(Command::new("ip").args(["-n", &self.router, "-j", "route", "show", ANYCAST]));
        assert!(
            out.status.success(),
            "ip route show: {}",
            lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ip -j route: {e}: {}", lossy(&out.stdout)));
        let mut hops = Vec::new();
        for route in v.as_array().into_iter().flatten() {
            let one = |h: &Value| NextHop {
                gateway: h["gateway"].as_str().unwrap_or("").to_string(),
                dev: h["dev"].as_str().unwrap_or("").to_string(),
            };
            match route["nexthops"].as_array() {
                Some(list) => hops.extend(list.iter().map(one)),
                None => hops.push(one(route)),
            }
        }
        hops.sort();
        hops
    }

    /// Just the gateways of [`kernel_nexthops`](Self::kernel_nexthops).
    pub fn kernel_gateways(&self) -> BTreeSet<String> {
        self.kernel_nexthops()
            .into_iter()
            .map(|h| h.gateway)
            .collect()
    }

    /// FRR's view (`show ip route PREFIX json`): gateways of the selected route's active
    /// next hops that are in the FIB.
    pub fn frr_gateways(&self) -> BTreeSet<String> {
        let v = self.vtysh_json(&format!("show ip route {ANYCAST} json"));
        let mut set = BTreeSet::new();
        for route in v[ANYCAST].as_array().into_iter().flatten() {
            if route["selected"] != Value::Bool(true) {
                continue;
            }
            for h in route["nexthops"].as_array().into_iter().flatten() {
                if h["active"] == Value::Bool(true) && h["fib"] == Value::Bool(true) {
                    if let Some(ip) = h["ip"].as_str() {
                        set.insert(ip.to_string());
                    }
                }
            }
        }
        set
    }

    /// The router's OSPF neighbours.
    pub fn router_neighbors(&self) -> Vec<RouterNeighbor> {
        let v = self.vtysh_json("show ip ospf neighbor json");
        let mut list = Vec::new();
        for (rid, entries) in v["neighbors"].as_object().into_iter().flatten() {
            for e in entries.as_array().into_iter().flatten() {
                let state = e["nbrState"].as_str().or(e["state"].as_str()).unwrap_or("");
                list.push(RouterNeighbor {
                    router_id: rid.clone(),
                    address: e["ifaceAddress"]
                        .as_str()
                        .or(e["address"].as_str())
                        .unwrap_or("")
                        .to_string(),
                    state: state.to_string(),
                });
            }
        }
        list
    }

    /// Router ids of the router's neighbours in state Full.
    pub fn router_full_neighbors(&self) -> BTreeSet<String> {
        self.router_neighbors()
            .into_iter()
            .filter(|n| n.state.starts_with("Full"))
            .map(|n| n.router_id)
            .collect()
    }

    // ------------------------------------------------------------------ waiting

    /// Polls `pred` until it holds; panics with [`diagnostics`](Self::diagnostics) after
    /// `timeout`. Returns how long it took.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&NetLab) -> bool,
    ) -> Duration {
        match poll_until(timeout, || pred(self)) {
            Some(d) => d,
            None => panic!(
                "not reached within {timeout:?}: {what}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Router and pgcast state for a failure message.
    pub fn diagnostics(&self) -> String {
        let vty = |cmd: &str| {
            let out = Command::new("vtysh")
                .args(["-N", &self.router, "-c", cmd])
                .output();
            match out {
                Ok(o) => format!("{}{}", lossy(&o.stdout), lossy(&o.stderr)),
                Err(e) => format!("<vtysh: {e}>"),
            }
        };
        let route = Command::new("ip")
            .args(["-n", &self.router, "route", "show", ANYCAST])
            .output()
            .map(|o| lossy(&o.stdout))
            .unwrap_or_default();
        let mut s = format!(
            "==== netlab {} (state {}) ====\n---- router: show ip ospf neighbor\n{}\
             ---- router: kernel route {ANYCAST}\n{route}\
             ---- router: show ip ospf database router\n{}",
            self.prefix,
            self.state.display(),
            vty("show ip ospf neighbor"),
            vty("show ip ospf database router"),
        );
        let ospfd_log = self.state.join(format!("{}-ospfd.log", self.router));
        s.push_str(&format!(
            "---- router ospfd log (tail)\n{}\n",
            file_tail(&ospfd_log, 6000)
        ));
        for b in &self.balancers {
            let running = self.running_ref(b.index);
            s.push_str(&format!(
                "---- b{} ({}) pgcast running: {running}\n",
                b.index, b.ns
            ));
            if running {
                let st = self
                    .status(b.index)
                    .map(|v| v["routing"].to_string())
                    .unwrap_or_else(|| "<no status>".into());
                s.push_str(&format!("status.routing: {st}\n"));
            }
            s.push_str(&format!("log (tail):\n{}\n", file_tail(&b.log, 4000)));
        }
        s
    }

    // ------------------------------------------------------------------ cleanup

    fn spawn_reaper(&self) -> Child {
        let script = format!(
            "trap '' HUP INT\n\
             pid={pid}\n\
             while kill -0 \"$pid\" 2>/dev/null && ! grep -q '^State:[[:space:]]*[ZX]' \"/proc/$pid/status\" 2>/dev/null; do sleep 1; done\n\
             [ -d {state} ] && {script} down {state}\n",
            pid = std::process::id(),
            state = sh_quote(&self.state.to_string_lossy()),
            script = sh_quote(&topology_script().to_string_lossy()),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn reaper shell")
    }

    /// Copies logs and configs (not the database) to /tmp/netlab-failed-PREFIX.
    fn keep_logs(&self) -> PathBuf {
        let dest = PathBuf::from(format!("/tmp/netlab-failed-{}", self.prefix));
        let _ = fs::create_dir_all(&dest);
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.state) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_file() {
                    files.push((e.path(), name));
                }
            }
        }
        for b in &self.balancers {
            for f in ["pgcast.toml", "pgcast.log"] {
                files.push((b.dir.join(f), format!("b{}-{f}", b.index)));
            }
        }
        files.push((self.state.join("pg/postgres.log"), "postgres.log".into()));
        for (src, name) in files {
            let _ = fs::copy(src, dest.join(name));
        }
        dest
    }
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

// ---------------------------------------------------------------------- status JSON

/// `routing.ospf.interfaces[].neighbors[]` of a `pgcast status --json`: (router_id, state).
pub fn status_neighbors(status: &Value) -> Vec<(String, String)> {
    let mut list = Vec::new();
    for ifc in status["routing"]["ospf"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for n in ifc["neighbors"].as_array().into_iter().flatten() {
            list.push((
                n["router_id"].as_str().unwrap_or("").to_string(),
                n["state"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    list
}

/// Whether pgcast reports a Full adjacency with `router_id`.
pub fn status_full_with(status: &Value, router_id: &str) -> bool {
    status_neighbors(status)
        .iter()
        .any(|(rid, st)| rid == router_id && st.to_ascii_lowercase().starts_with("full"))
}

/// `routing.prefixes[]` entry for `prefix` ("a.b.c.d/len"): (announced, reason).
/// Accepts the contract's `{prefix: "a.b.c.d/len", announced}` and the
/// `{prefix: "a.b.c.d", prefix_len, announce}` shape pgcast printed during development.
pub fn status_prefix(status: &Value, prefix: &str) -> Option<(bool, String)> {
    status["routing"]["prefixes"]
        .as_array()?
        .iter()
        .find(|p| {
            let name = match (p["prefix"].as_str(), p["prefix_len"].as_u64()) {
                (Some(a), Some(len)) if !a.contains('/') => format!("{a}/{len}"),
                (Some(a), _) => a.to_string(),
                _ => String::new(),
            };
            name == prefix
        })
        .map(|p| {
            let announced = p["announced"].as_bool().or(p["announce"].as_bool());
            (
                announced.unwrap_or(false),
                match &p["reason"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    v => v.to_string(),
                },
            )
        })
}

/// `routing.ospf.dropped` as reason → count.
pub fn status_dropped(status: &Value) -> BTreeMap<String, u64> {
    status["routing"]["ospf"]["dropped"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}
