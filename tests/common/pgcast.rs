//! Test harness: a real `pgcast` process (the binary cargo built) in front of a [`PgCluster`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgcast::status::{BackendStatus, Status};
use tempfile::TempDir;

use super::pg_cluster::{free_port, PgCluster, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};

pub struct Pgcast {
    child: Child,
    dir: TempDir,
    pub auto_port: u16,
    pub replica_port: u16,
    pub primary_port: u16,
    pub admin: PathBuf,
    pub config_path: PathBuf,
}

/// Writes a config for `cluster` with `extra` TOML appended (sections not otherwise present).
pub fn config_text(
    cluster: &PgCluster,
    ports: (u16, u16, u16),
    admin: &std::path::Path,
    extra: &str,
) -> String {
    node_config_text(cluster, 7, ports, admin, extra)
}

/// [`config_text`] for the balancer with `node.id = node_id`.
pub fn node_config_text(
    cluster: &PgCluster,
    node_id: u8,
    ports: (u16, u16, u16),
    admin: &std::path::Path,
    extra: &str,
) -> String {
    node_config_text_with(cluster, node_id, ports, admin, "", extra)
}

/// [`node_config_text`] with `node_keys` (lines) added to the `[node]` table.
pub fn node_config_text_with(
    cluster: &PgCluster,
    node_id: u8,
    ports: (u16, u16, u16),
    admin: &std::path::Path,
    node_keys: &str,
    extra: &str,
) -> String {
    let mut s = format!(
        r#"
[node]
id = {node_id}
name = "test"
{node_keys}

[admin]
socket = "{}"

[[listeners]]
name = "auto"
address = "127.0.0.1:{}"
role = "auto"

[[listeners]]
name = "ro"
address = "127.0.0.1:{}"
role = "replica"

[[listeners]]
name = "rw"
address = "127.0.0.1:{}"
role = "primary"

[[users]]
name = "{SCRAM_USER}"
password = "{SCRAM_PASSWORD}"

[[users]]
name = "{MD5_USER}"
password = "{MD5_PASSWORD}"
auth = "md5"
"#,
        admin.display(),
        ports.0,
        ports.1,
        ports.2
    );
    for n in cluster.nodes() {
        s.push_str(&format!(
            "\n[[backends]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            n.name, n.port
        ));
    }
    s.push_str(extra);
    s
}

/// Writes a pgcast config file readable by its owner only: pgcast refuses a file with
/// secrets (passwords, hashes) that others may read.
pub fn write_config(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl Pgcast {
    /// Starts pgcast with health checks every 100 ms (rise 1, fall 2) unless `extra` sets [health].
    pub fn start(cluster: &PgCluster, extra: &str) -> Pgcast {
        let ports = (free_port(), free_port(), free_port());
        Pgcast::start_node(cluster, 7, ports, extra)
    }

    /// [`Pgcast::start`] with a given `node.id` and (auto, replica, primary) listener ports, for
    /// tests with several balancers that must know each other's addresses up front.
    pub fn start_node(
        cluster: &PgCluster,
        node_id: u8,
        ports: (u16, u16, u16),
        extra: &str,
    ) -> Pgcast {
        Pgcast::start_with(cluster, node_id, ports, "", extra)
    }

    /// [`Pgcast::start`] with `node_keys` (lines) added to the `[node]` table.
    pub fn start_with_node_keys(cluster: &PgCluster, node_keys: &str) -> Pgcast {
        let ports = (free_port(), free_port(), free_port());
        Pgcast::start_with(cluster, 7, ports, node_keys, "")
    }

    /// [`Pgcast::start`] with the written configuration passed through `edit` first (e.g. to
    /// give a listener a key of its own).
    pub fn start_edited(cluster: &PgCluster, extra: &str, edit: fn(String) -> String) -> Pgcast {
        let ports = (free_port(), free_port(), free_port());
        Pgcast::start_with_edit(cluster, 7, ports, "", extra, edit)
    }

    fn start_with(
        cluster: &PgCluster,
        node_id: u8,
        ports: (u16, u16, u16),
        node_keys: &str,
        extra: &str,
    ) -> Pgcast {
        Pgcast::start_with_edit(cluster, node_id, ports, node_keys, extra, |t| t)
    }

    fn start_with_edit(
        cluster: &PgCluster,
        node_id: u8,
        ports: (u16, u16, u16),
        node_keys: &str,
        extra: &str,
        edit: fn(String) -> String,
    ) -> Pgcast {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("admin.sock");
        let extra = if extra.contains("[health]") {
            extra.to_string()
        } else {
            format!("{extra}\n[health]\ninterval_ms = 100\ntimeout_ms = 2000\nrise = 1\nfall = 2\ndatabase = \"app\"\n")
        };
        let text = edit(node_config_text_with(
            cluster, node_id, ports, &admin, node_keys, &extra,
        ));
        let config_path = dir.path().join("pgcast.toml");
        write_config(&config_path, &text);
        let log = std::fs::File::create(dir.path().join("pgcast.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgcast"))
            .args(["run", "-c"])
            .arg(&config_path)
            .env("PGCAST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pgcast");
        let p = Pgcast {
            child,
            dir,
            auto_port: ports.0,
            replica_port: ports.1,
            primary_port: ports.2,
            admin,
            config_path,
        };
        p.wait_until(
            "primary known, replicas in the read set, functions loaded",
            |s| {
                s.primary.is_some()
                    && s.statement_cache.functions_loaded
                    && s.backends.iter().filter(|b| b.in_read_set).count() == cluster.replicas.len()
            },
        );
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgcast.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Option<Status> {
        // Plain std I/O, so this works inside and outside an async runtime.
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.admin).ok()?;
        stream.write_all(b"status\n").ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).ok()?;
        serde_json::from_slice(&buf).ok()
    }

    /// The status of the backend pgcast sees as the primary (panics without one).
    pub fn primary_status(&self) -> BackendStatus {
        self.status()
            .expect("status")
            .backends
            .into_iter()
            .find(|b| b.role == "primary")
            .expect("a primary")
    }

    /// Polls the admin socket until `pred` holds (60 s at most).
    pub fn wait_until(&self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
                if Instant::now() > deadline {
                    panic!(
                        "pgcast never reached: {what}\nstatus: {s:#?}\nlog:\n{}",
                        self.log()
                    );
                }
            } else if Instant::now() > deadline {
                panic!(
                    "pgcast admin socket never answered ({what})\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn conninfo(&self, port: u16, user: &str, password: &str) -> String {
        format!("host=127.0.0.1 port={port} user={user} password={password} dbname=app connect_timeout=10")
    }

    /// Conninfo for the auto listener as the SCRAM user.
    pub fn auto(&self) -> String {
        self.conninfo(self.auto_port, SCRAM_USER, SCRAM_PASSWORD)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the pgcast process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit (after SIGTERM); returns whether it exited in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Pgcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
