//! The pgcast process of each balancer: start, signals, stop, its CLI, status and config.

use super::*;

impl NetLab {
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
        self.record_pid(pid, &format!("b{n}-pgcast"));
        let answered = poll_until(Duration::from_secs(20), || {
            self.status(n).is_some() || !self.running_ref(n)
        });
        if answered.is_none() || !self.running_ref(n) {
            panic!("pgcast in b{n} did not come up\n{}", self.diagnostics());
        }
    }

    /// The PID of pgcast in balancer `n` (`ip netns exec` execs it), while it runs.
    pub fn pid(&self, n: usize) -> Option<u32> {
        self.balancers[n - 1].child.as_ref().map(Child::id)
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
        // Overwriting keeps the file's mode (0600 from ospf-topology): it may hold passwords.
        fs::write(&self.b(n).config, text).expect("write pgcast.toml");
    }

    pub fn pgcast_log(&self, n: usize) -> String {
        fs::read_to_string(&self.b(n).log).unwrap_or_default()
    }
}
