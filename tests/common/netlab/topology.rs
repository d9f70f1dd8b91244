//! The namespaces and veths: `ospf-topology up` and `down` (through the reaper and
//! `Drop`), the faults injected into the topology, and the logs kept after a failure.

use super::*;

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

    /// Makes balancer `n` unhealthy: the PostgreSQL host becomes a blackhole from there.
    pub fn blackhole_pg(&self, n: usize) {
        self.ip_route(n, "add");
    }

    /// Undoes [`blackhole_pg`](Self::blackhole_pg).
    pub fn unblackhole_pg(&self, n: usize) {
        self.ip_route(n, "del");
    }

    pub(super) fn ip_route(&self, n: usize, verb: &str) {
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

    pub(super) fn spawn_reaper(&self) -> Child {
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
    pub(super) fn keep_logs(&self) -> PathBuf {
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
