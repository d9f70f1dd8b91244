//! Test harness: a real PostgreSQL 15 primary plus streaming replicas on
//! 127.0.0.1, each instance in its own directory below one `TempDir`.
//!
//! * Every PostgreSQL binary (except `psql`, which only talks TCP) runs as the
//!   OS user `postgres` through `runuser` when the test runs as root.
//! * Cleanup happens in `Drop` (immediate stop of every node, then the temp
//!   dir is removed) and, as a safety net for aborts / `process::exit` /
//!   clusters kept in statics, in a detached reaper shell that waits for the
//!   test process to disappear and then does the same.
//! * Uses only std + tempfile.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod instance;
mod replication;
mod sql;

pub const SCRAM_USER: &str = "app_scram";
pub const SCRAM_PASSWORD: &str = "scram-secret";
pub const MD5_USER: &str = "app_md5";
pub const MD5_PASSWORD: &str = "md5-secret";
pub const DATABASE: &str = "app";

/// Deadline of every wait loop.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `pg_ctl start` is retried when the port turned out to be taken.
const BIND_RETRIES: usize = 5;

/// One PostgreSQL instance.
#[derive(Debug, Clone)]
pub struct PgNode {
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
}

impl PgNode {
    /// Server log written by `pg_ctl -l` (next to the data dir).
    pub fn log_file(&self) -> PathBuf {
        self.node_dir().join("postgres.log")
    }

    fn node_dir(&self) -> PathBuf {
        self.data_dir
            .parent()
            .expect("data dir has a parent")
            .to_path_buf()
    }

    /// libpq/tokio-postgres key=value connection string for this node over TCP.
    pub fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=10",
            self.port,
            conn_quote(user),
            conn_quote(password),
            conn_quote(db)
        )
    }
}

/// A primary ("pg1") and its streaming replicas ("pg2", "pg3", ...).
pub struct PgCluster {
    // Removed (by TempDir's own Drop) only after `PgCluster::drop` stopped the servers.
    dir: TempDir,
    pub primary: PgNode,
    pub replicas: Vec<PgNode>,
    reaper: Option<Child>,
    /// Unique prefix used for `cluster_name` (visible in `ps`).
    tag: String,
}

/// Directory of the PostgreSQL binaries (`PGCAST_PG_BIN` or the Debian path).
pub fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PGCAST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    dir.join(name)
}

/// A currently free TCP port on 127.0.0.1. Never returns the same port twice
/// within one process, so stopped nodes keep "their" port.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let set = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if set.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused port found");
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // "Uid:\treal\teffective\tsaved\tfs"
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
                if let Some(euid) = line.split_whitespace().nth(2) {
                    return euid == "0";
                }
            }
        }
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// (uid, gid) of the `postgres` OS user; only needed when running as root.
fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let get = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .expect("run `id`");
            assert!(
                out.status.success(),
                "OS user `postgres` not found: {}",
                lossy(&out.stderr)
            );
            lossy(&out.stdout).trim().parse().expect("numeric id")
        };
        (get("-u"), get("-g"))
    })
}

/// Make `path` owned by `postgres` (no-op when not root).
fn give_to_postgres(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn mkdir_for_postgres(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    give_to_postgres(path);
}

fn write_for_postgres(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    give_to_postgres(path);
}

fn append(path: &Path, contents: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("append {}: {e}", path.display()));
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Quote a value for a libpq key=value connection string.
fn conn_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quote for POSIX sh.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Quote for a postgresql.conf string value.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The last `max` bytes of a file, for panic messages.
fn file_tail(path: &Path, max: u64) -> String {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    lossy(&buf)
}

fn file_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_end(&mut buf);
    }
    lossy(&buf)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn log_dump(node: &PgNode) -> String {
    format!(
        "---- {} log ({}) ----\n{}",
        node.name,
        node.log_file().display(),
        file_tail(&node.log_file(), 16 * 1024)
    )
}

/// Command for a PostgreSQL binary, run as `postgres` when we are root.
fn pg_command(bin: &str, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    };
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
    cmd
}

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: cannot spawn: {e}"))
}

fn run_ok(cmd: Command, what: &str) -> Output {
    let out = run(cmd, what);
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
    }
    out
}

/// Poll `f` every 50 ms until it returns true or the deadline passes.
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Stop all running nodes in parallel (immediate mode).
        let mut children = Vec::new();
        for node in self.nodes() {
            if node.data_dir.join("postmaster.pid").exists() {
                let mut cmd = self.pg_ctl_stop(node);
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                if let Ok(c) = cmd.spawn() {
                    children.push(c);
                }
            }
        }
        for mut c in children {
            let _ = c.wait();
        }
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        // `self.dir` (TempDir) is removed when the fields are dropped.
    }
}
