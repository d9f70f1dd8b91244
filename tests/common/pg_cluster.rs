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

impl PgCluster {
    /// initdb + start the primary "pg1", create roles/database, then
    /// `replicas` streaming replicas "pg2", "pg3", ... and wait until they
    /// are in recovery and listed as streaming by the primary.
    pub fn start(replicas: usize) -> PgCluster {
        let base = std::env::var_os("PGCAST_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("pgcast-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("create tempdir in {}: {e}", base.display()));
        give_to_postgres(dir.path());
        let tag = dir
            .path()
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            })
            .unwrap_or_else(|| "pgcast".into());

        let primary = Self::new_node(dir.path(), "pg1");
        let mut cluster = PgCluster {
            reaper: None,
            primary,
            replicas: Vec::new(),
            tag,
            dir,
        };
        // From here on a panic unwinds through PgCluster::drop, and an abort
        // is covered by the reaper.
        cluster.reaper = Some(cluster.spawn_reaper());

        cluster.init_primary();
        let mut primary = cluster.primary.clone();
        cluster.start_fresh(&mut primary);
        cluster.primary = primary;
        cluster.wait_accepting(&cluster.primary.clone());
        cluster.create_app_objects();

        // Base backups + first start of all replicas in parallel. The nodes
        // are registered first so Drop sees them whatever happens.
        let nodes: Vec<PgNode> = (0..replicas)
            .map(|i| Self::new_node(cluster.dir.path(), &format!("pg{}", i + 2)))
            .collect();
        cluster.replicas = nodes.clone();
        let results: Vec<thread::Result<PgNode>> = thread::scope(|s| {
            let c = &cluster;
            let handles: Vec<_> = nodes
                .into_iter()
                .map(|mut node| {
                    s.spawn(move || {
                        c.base_backup(&node);
                        c.start_fresh(&mut node);
                        node
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut first_panic = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(node) => cluster.replicas[i] = node,
                Err(p) => {
                    first_panic.get_or_insert(p);
                }
            }
        }
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
        cluster.wait_replicas_streaming();
        cluster
    }

    /// Look a node up by name ("pg1", "pg2", ...). Panics if unknown.
    pub fn node(&self, name: &str) -> &PgNode {
        std::iter::once(&self.primary)
            .chain(self.replicas.iter())
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name:?}"))
    }

    /// All nodes, primary first.
    pub fn nodes(&self) -> impl Iterator<Item = &PgNode> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// The cluster's temp directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run SQL (may contain several statements) as superuser `postgres` over
    /// TCP; returns trimmed stdout. Panics with stderr on failure.
    pub fn psql(&self, node: &PgNode, db: &str, sql: &str) -> String {
        self.try_psql(node, db, sql).unwrap_or_else(|e| {
            panic!(
                "psql on {} (port {}) failed: {e}\nSQL: {sql}",
                node.name, node.port
            )
        })
    }

    /// Like [`psql`](Self::psql) but returns the error (stderr) instead of panicking.
    pub fn try_psql(&self, node: &PgNode, db: &str, sql: &str) -> Result<String, String> {
        // psql only talks TCP, so it needs no `runuser`.
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.current_dir(self.dir.path())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=10 application_name=pgcast_harness",
                node.port,
                conn_quote(db)
            ))
            .args(["-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot spawn psql: {e}"))?;
        {
            let mut stdin = child.stdin.take().unwrap();
            // psql executes an unterminated last statement at EOF.
            let mut text = sql.to_string();
            text.push('\n');
            // Ignore EPIPE: psql may exit early (connection failure).
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for psql: {e}"))?;
        if out.status.success() {
            Ok(lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql exited with {}: {}",
                out.status,
                lossy(&out.stderr).trim()
            ))
        }
    }

    /// Stop one node with `pg_ctl stop -m immediate` (no-op if not running).
    pub fn stop(&self, node: &PgNode) {
        if !node.data_dir.join("postmaster.pid").exists() {
            return;
        }
        let out = run(self.pg_ctl_stop(node), "pg_ctl stop");
        if !out.status.success() && node.data_dir.join("postmaster.pid").exists() {
            panic!(
                "pg_ctl stop of {} failed: {}{}\n{}",
                node.name,
                lossy(&out.stdout),
                lossy(&out.stderr),
                log_dump(node)
            );
        }
    }

    /// Start a stopped node again (same port) and wait until it accepts connections.
    pub fn restart(&self, node: &PgNode) {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            match self.pg_ctl_start(node) {
                Ok(()) => break,
                // Someone grabbed the port meanwhile; it must stay the same, so wait.
                Err(bind) if bind && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(500))
                }
                Err(_) => panic!("restart of {} failed\n{}", node.name, log_dump(node)),
            }
        }
        self.wait_accepting(node);
    }

    /// Promote a replica and wait until it has left recovery.
    pub fn promote(&self, node: &PgNode) {
        let r = self.psql(node, "postgres", "SELECT pg_promote(true, 30)");
        if r != "t" {
            panic!(
                "pg_promote on {} returned {r:?}\n{}",
                node.name,
                log_dump(node)
            );
        }
        let ok = wait_until(|| {
            self.try_psql(node, "postgres", "SELECT pg_is_in_recovery()")
                .as_deref()
                == Ok("f")
        });
        if !ok {
            panic!(
                "{} still in recovery after promotion\n{}",
                node.name,
                log_dump(node)
            );
        }
    }

    /// Wait until `replica` replayed all WAL the `primary` has written so far.
    pub fn wait_replica_caught_up(&self, primary: &PgNode, replica: &PgNode) {
        let target = self.psql(primary, "postgres", "SELECT pg_current_wal_lsn()");
        let sql = format!("SELECT coalesce(pg_last_wal_replay_lsn() >= '{target}'::pg_lsn, false)");
        let mut last = String::new();
        let ok = wait_until(|| match self.try_psql(replica, "postgres", &sql) {
            Ok(v) => {
                let done = v == "t";
                last = v;
                done
            }
            Err(e) => {
                last = e;
                false
            }
        });
        if !ok {
            let replay = self
                .try_psql(replica, "postgres", "SELECT pg_last_wal_replay_lsn()")
                .unwrap_or_else(|e| e);
            let stat = self
                .try_psql(
                    primary,
                    "postgres",
                    "SELECT application_name, state, replay_lsn FROM pg_stat_replication",
                )
                .unwrap_or_else(|e| e);
            panic!(
                "{} did not catch up with {} (target {target}, replayed {replay}, last check {last:?})\n\
                 pg_stat_replication on {}: {stat}\n{}\n{}",
                replica.name,
                primary.name,
                primary.name,
                log_dump(replica),
                log_dump(primary)
            );
        }
    }

    // ------------------------------------------------------------------ internals

    fn new_node(root: &Path, name: &str) -> PgNode {
        let node_dir = root.join(name);
        let socket_dir = node_dir.join("sock");
        mkdir_for_postgres(&node_dir);
        mkdir_for_postgres(&socket_dir);
        PgNode {
            name: name.to_string(),
            port: free_port(),
            data_dir: node_dir.join("data"),
            socket_dir,
        }
    }

    /// Per-node settings, included from postgresql.conf (copied by
    /// pg_basebackup, then rewritten for the replica).
    fn write_node_conf(&self, node: &PgNode) {
        let conf = format!(
            "port = {}\nunix_socket_directories = {}\ncluster_name = {}\n",
            node.port,
            conf_quote(&node.socket_dir.to_string_lossy()),
            conf_quote(&format!("{}-{}", self.tag, node.name)),
        );
        write_for_postgres(&node.data_dir.join("pgcast_node.conf"), &conf);
    }

    fn init_primary(&self) {
        let node = &self.primary;
        let mut cmd = pg_command("initdb", self.dir.path());
        cmd.arg("-D").arg(&node.data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        run_ok(cmd, "initdb");

        write_for_postgres(
            &node.data_dir.join("pg_hba.conf"),
            "# written by pgcast test harness\n\
             local   all          postgres                 trust\n\
             local   replication  all                      trust\n\
             host    all          postgres  127.0.0.1/32   trust\n\
             host    replication  all       127.0.0.1/32   trust\n\
             host    all          app_md5   127.0.0.1/32   md5\n\
             host    all          all       127.0.0.1/32   scram-sha-256\n",
        );
        append(
            &node.data_dir.join("postgresql.conf"),
            "\n# ---- pgcast test harness ----\n\
             listen_addresses = '127.0.0.1'\n\
             max_connections = 200\n\
             shared_buffers = 16MB\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             wal_keep_size = '512MB'\n\
             hot_standby = on\n\
             fsync = off\n\
             full_page_writes = off\n\
             ssl = off\n\
             password_encryption = 'scram-sha-256'\n\
             wal_retrieve_retry_interval = '500ms'\n\
             max_parallel_workers_per_gather = 0\n\
             huge_pages = off\n\
             logging_collector = off\n\
             include_if_exists = 'pgcast_node.conf'\n",
        );
        self.write_node_conf(node);
    }

    fn create_app_objects(&self) {
        let p = &self.primary;
        self.psql(
            p,
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';\n\
                 CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}';\n\
                 SET password_encryption = 'md5';\n\
                 CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}';\n\
                 CREATE DATABASE {DATABASE} OWNER {SCRAM_USER};\n"
            ),
        );
        self.psql(
            p,
            DATABASE,
            &format!(
                "GRANT ALL ON DATABASE {DATABASE} TO {SCRAM_USER}, {MD5_USER};\n\
                 GRANT ALL ON SCHEMA public TO {SCRAM_USER}, {MD5_USER};\n\
                 ALTER DEFAULT PRIVILEGES FOR ROLE {SCRAM_USER} IN SCHEMA public GRANT ALL ON TABLES TO {MD5_USER};\n\
                 ALTER DEFAULT PRIVILEGES FOR ROLE {SCRAM_USER} IN SCHEMA public GRANT ALL ON SEQUENCES TO {MD5_USER};\n\
                 ALTER DEFAULT PRIVILEGES FOR ROLE {MD5_USER} IN SCHEMA public GRANT ALL ON TABLES TO {SCRAM_USER};\n\
                 ALTER DEFAULT PRIVILEGES FOR ROLE {MD5_USER} IN SCHEMA public GRANT ALL ON SEQUENCES TO {SCRAM_USER};\n"
            ),
        );
    }

    fn base_backup(&self, node: &PgNode) {
        let mut cmd = pg_command("pg_basebackup", self.dir.path());
        cmd.arg("-d")
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres application_name={}",
                self.primary.port, node.name
            ))
            .arg("-D")
            .arg(&node.data_dir)
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "--no-manifest",
                "-C",
                "-S",
            ])
            .arg(&node.name);
        let out = run(cmd, "pg_basebackup");
        if !out.status.success() {
            panic!(
                "pg_basebackup for {} failed: {}\n{}",
                node.name,
                lossy(&out.stderr),
                log_dump(&self.primary)
            );
        }
        // Copied from the primary: stale pid file must not exist, mode must be 0700.
        let _ = fs::remove_file(node.data_dir.join("postmaster.pid"));
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&node.data_dir, fs::Permissions::from_mode(0o700));
        self.write_node_conf(node);
    }

    /// `pg_ctl start -w`. Err(true) means the port could not be bound.
    fn pg_ctl_start(&self, node: &PgNode) -> Result<(), bool> {
        let log = node.log_file();
        let log_offset = file_len(&log);
        let mut cmd = pg_command("pg_ctl", self.dir.path());
        cmd.arg("start")
            .arg("-D")
            .arg(&node.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"]);
        let out = run(cmd, "pg_ctl start");
        if out.status.success() {
            return Ok(());
        }
        let new_log = file_from(&log, log_offset);
        let bind = new_log.contains("could not bind")
            || new_log.contains("Address already in use")
            || new_log.contains("could not create any TCP/IP sockets");
        if !bind {
            eprintln!(
                "pg_ctl start of {} failed: {}{}",
                node.name,
                lossy(&out.stdout),
                lossy(&out.stderr)
            );
        }
        // Make sure a half-started postmaster does not linger.
        if node.data_dir.join("postmaster.pid").exists() {
            let _ = run(self.pg_ctl_stop(node), "pg_ctl stop");
        }
        Err(bind)
    }

    /// First start of a node: on a port clash pick a new port and retry.
    fn start_fresh(&self, node: &mut PgNode) {
        for attempt in 0..=BIND_RETRIES {
            match self.pg_ctl_start(node) {
                Ok(()) => return,
                Err(true) if attempt < BIND_RETRIES => {
                    node.port = free_port();
                    self.write_node_conf(node);
                }
                Err(_) => panic!("could not start {}\n{}", node.name, log_dump(node)),
            }
        }
    }

    fn pg_ctl_stop(&self, node: &PgNode) -> Command {
        let mut cmd = pg_command("pg_ctl", self.dir.path());
        cmd.arg("stop")
            .arg("-D")
            .arg(&node.data_dir)
            .args(["-m", "immediate", "-w", "-t", "60"]);
        cmd
    }

    fn wait_accepting(&self, node: &PgNode) {
        let mut last = String::new();
        let ok = wait_until(|| match self.try_psql(node, "postgres", "SELECT 1") {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        if !ok {
            panic!(
                "{} does not accept connections: {last}\n{}",
                node.name,
                log_dump(node)
            );
        }
    }

    fn wait_replicas_streaming(&self) {
        for r in &self.replicas {
            let ok = wait_until(|| {
                self.try_psql(r, "postgres", "SELECT pg_is_in_recovery()")
                    .as_deref()
                    == Ok("t")
            });
            if !ok {
                panic!("{} is not in recovery\n{}", r.name, log_dump(r));
            }
        }
        if self.replicas.is_empty() {
            return;
        }
        let names = self
            .replicas
            .iter()
            .map(|r| format!("'{}'", r.name))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name IN ({names})"
        );
        let want = self.replicas.len().to_string();
        let mut last = String::new();
        let ok = wait_until(|| match self.try_psql(&self.primary, "postgres", &sql) {
            Ok(v) => {
                let done = v == want;
                last = v;
                done
            }
            Err(e) => {
                last = e;
                false
            }
        });
        if !ok {
            let mut msg = format!(
                "replicas not streaming (count {last:?}, want {want})\n{}",
                log_dump(&self.primary)
            );
            for r in &self.replicas {
                msg.push('\n');
                msg.push_str(&log_dump(r));
            }
            panic!("{msg}");
        }
    }

    /// Detached shell that outlives us: once this process is gone it stops
    /// every node of this cluster and removes the temp dir.
    fn spawn_reaper(&self) -> Child {
        let root = self.dir.path().to_string_lossy().into_owned();
        let as_pg = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        // 1. wait for the test process to disappear (or become a zombie);
        // 2. `pg_ctl stop -m immediate` every data dir with a pid file;
        // 3. SIGKILL whatever still has its cwd inside the temp dir (postmaster
        //    and backends chdir to their data dir; initdb, pg_ctl,
        //    pg_basebackup, runuser are started with cwd = temp dir), twice
        //    a second apart to catch a postmaster an orphaned pg_ctl forked;
        // 4. rm -rf the temp dir.
        let script = format!(
            r#"trap '' HUP INT
pid={pid}
root={root}
while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$pid/status" 2>/dev/null; do sleep 1; done
cd / || exit 0
sweep() {{
  for d in "$root"/*/data; do
    [ -f "$d/postmaster.pid" ] || continue
    {as_pg}{pg_ctl} stop -D "$d" -m immediate -w -t 30 >/dev/null 2>&1
  done
  for p in $(ls -l /proc/[0-9]*/cwd 2>/dev/null | awk -v r="$root" '{{ i = index($0, " -> "); if (!i) next; t = substr($0, i + 4); if (t == r || index(t, r "/") == 1) {{ s = substr($0, 1, i - 1); sub(/.*\/proc\//, "", s); sub(/\/cwd$/, "", s); print s }} }}'); do
    [ "$p" = "$$" ] || kill -9 "$p" 2>/dev/null
  done
}}
sweep
sleep 1
sweep
rm -rf "$root"
"#,
            pid = std::process::id(),
            root = sh_quote(&root),
            pg_ctl = sh_quote(&pg_bin("pg_ctl").to_string_lossy()),
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C to the test's group does not hit it.
            .process_group(0);
        cmd.spawn().expect("spawn reaper shell")
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
