//! The FRR router: vtysh, its logs, and its view of the routes and OSPF neighbours.

use super::*;

impl NetLab {
    /// The router's log of one FRR daemon ("zebra", "ospfd").
    pub fn router_log(&self, daemon: &str) -> String {
        let path = self.state.join(format!("{}-{daemon}.log", self.router));
        fs::read_to_string(path).unwrap_or_default()
    }

    /// Kills the router's FRR `daemon` (SIGKILL: it says goodbye to nobody), waits `down_for`,
    /// and starts it again from its configuration with `edit` applied to the text (e.g. to
    /// make its neighbours passive, as after a router reload). The new process is recorded in
    /// `STATE/pids` for `down`. Returns when its vty socket exists: when it is ready.
    pub fn restart_router_daemon(
        &self,
        daemon: &str,
        down_for: Duration,
        edit: impl Fn(&str) -> String,
    ) -> Instant {
        let run_dir = PathBuf::from(format!("/var/run/frr/{}", self.router));
        let pid_of = || -> Option<u32> {
            fs::read_to_string(run_dir.join(format!("{daemon}.pid")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        self.kill_router_daemon(daemon);
        let vty = run_dir.join(format!("{daemon}.vty"));
        thread::sleep(down_for);
        let conf_dir = PathBuf::from(format!("/etc/frr/{}", self.router));
        let conf = conf_dir.join("frr.conf");
        let edited = conf_dir.join(format!("{daemon}-restarted.conf"));
        let text = fs::read_to_string(&conf).expect("router config");
        fs::write(&edited, edit(&text)).expect("write restarted config");
        let _ = run(Command::new("chown").arg("frr:frr").arg(&edited));
        let out = run(Command::new("ip")
            .args(["netns", "exec", &self.router])
            .arg(format!("/usr/lib/frr/{daemon}"))
            .args(["-d", "-N", &self.router, "-P", "0", "-f"])
            .arg(&edited)
            .arg("--log")
            .arg(format!(
                "file:{}",
                self.state
                    .join(format!("{}-{daemon}.log", self.router))
                    .display()
            )));
        assert!(
            out.status.success(),
            "restart {daemon}: {}",
            lossy(&out.stderr)
        );
        poll_until(Duration::from_secs(10), || vty.exists())
            .unwrap_or_else(|| panic!("{daemon} did not come back"));
        let ready = Instant::now();
        if let Some(pid) = pid_of() {
            self.record_pid(pid, &format!("r1-{daemon}"));
        }
        ready
    }

    /// SIGKILLs the router's FRR `daemon` and removes its vty socket.
    pub fn kill_router_daemon(&self, daemon: &str) {
        let run_dir = PathBuf::from(format!("/var/run/frr/{}", self.router));
        let pid = fs::read_to_string(run_dir.join(format!("{daemon}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no pid file for {daemon}"));
        let _ = run(Command::new("kill").args(["-KILL", &pid.to_string()]));
        let _ = fs::remove_file(run_dir.join(format!("{daemon}.vty")));
    }

    /// Starts `argv` in the router's namespace (stdout and stderr appended to `log`), recorded
    /// in `STATE/pids` as `name` so `down` stops it. Returns its PID.
    pub fn spawn_in_router(&self, name: &str, argv: &[&str], log: &Path) -> u32 {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open router process log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.router])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {}: {e}", self.router));
        // `ip netns exec` execs: this is the program's own PID.
        let pid = child.id();
        self.record_pid(pid, name);
        // `down` stops it; this thread reaps it then.
        thread::spawn(move || child.wait());
        pid
    }

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

    pub(super) fn vtysh_json(&self, cmd: &str) -> Value {
        let text = self.vtysh(cmd);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("vtysh {cmd:?}: {e}: {text}"))
    }

    /// The router kernel's next hops for the anycast prefix (`ip -j route show`), sorted.
    pub fn kernel_nexthops(&self) -> Vec<NextHop> {
        self.kernel_nexthops_of(ANYCAST)
    }

    /// The router kernel's next hops for `prefix`, IPv4 or IPv6 (`ip -j [-6] route show`),
    /// sorted.
    pub fn kernel_nexthops_of(&self, prefix: &str) -> Vec<NextHop> {
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        let out = run(Command::new("ip").args([
            "-n",
            &self.router,
            family,
            "-j",
            "route",
            "show",
            prefix,
        ]));
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
}
