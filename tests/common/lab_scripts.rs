//! The anycast lab of `lab/` driven through its scripts: `lab/up` with a unique namespace
//! prefix and state directory (the pgcast binary cargo built, or `$PGCAST_BIN`), `lab/down`
//! whatever happens, and single `lab/lib.sh` functions (`Lab::lib`). Used by `tests/lab.rs`
//! (the scenarios) and `tests/soak.rs` (the chaos soak). Needs `mod netlab` beside it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::netlab;
use super::netlab::lossy;

/// One lab at a time in this process: labs share the two CPUs with each other's timers.
static ONE_LAB: Mutex<()> = Mutex::new(());

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Lab {
    /// LAB_NAME: the namespace prefix (`NAME-r1`, `NAME-b1` ...).
    pub name: String,
    /// LAB_STATE: configs, logs, PIDs, PostgreSQL data.
    pub state: PathBuf,
    /// LAB_ROUTING: "ospf" or "bgp".
    pub routing: &'static str,
    /// LAB_BFD: "1" or "0".
    pub bfd: &'static str,
    _one: MutexGuard<'static, ()>,
}

impl Lab {
    /// `lab/up` with LAB_ROUTING and LAB_BFD ("1" or "0") and a fresh prefix; `None` (after
    /// saying why) when labs cannot run here, which fails under CI (`CI` set).
    pub fn up_with(routing: &'static str, bfd: &'static str) -> Option<Lab> {
        if let Some(reason) = netlab::skip_reason() {
            assert!(
                std::env::var("CI").is_err(),
                "lab tests cannot run under CI: {reason}"
            );
            eprintln!("skipping: {reason}");
            return None;
        }
        let one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let state = std::env::temp_dir().join(format!("pgcast-labtest-{name}"));
        let lab = Lab {
            name,
            state,
            routing,
            bfd,
            _one: one,
        };
        let out = lab.run("up", &[]);
        assert!(
            out.status.success(),
            "lab/up failed:\n{}{}",
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
        Some(lab)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LAB_NAME", &self.name)
            .env("LAB_STATE", &self.state)
            .env("LAB_BUILD", "0")
            .env("LAB_ROUTING", self.routing)
            .env("LAB_BFD", self.bfd)
            .env("PGCAST_BIN", netlab::pgcast_bin())
            .env("LAB_PGCAST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `lab/SCRIPT ARGS`.
    pub fn run(&self, script: &str, args: &[&str]) -> Output {
        self.command(&repo().join("lab").join(script))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run lab/{script}: {e}"))
    }

    /// Runs `lab/lib.sh` function `func` with `args` against this lab (after `lab_load`).
    pub fn lib(&self, func: &str, args: &[&str]) -> Output {
        self.command(Path::new("bash"))
            .arg("-c")
            .arg(r#"set -euo pipefail; source "$0"; lab_load; "$@""#)
            .arg(repo().join("lab/lib.sh"))
            .arg(func)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run lab/lib.sh {func}: {e}"))
    }

    /// The namespace of lab host `host` (r1, c1, b1 ...).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// The last `lines` lines of each balancer's pgcast.log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut logs = String::new();
        for b in 1..=3 {
            let log = self.state.join(format!("b{b}/pgcast.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            logs += &format!("--- b{b} pgcast.log (tail)\n");
            for l in tail.into_iter().rev() {
                logs += l;
                logs.push('\n');
            }
        }
        logs
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.run("down", &[]);
        if !out.status.success() {
            eprintln!("lab/down failed: {}", lossy(&out.stderr));
        }
    }
}
