//! Starting and stopping the instances: the cluster as a whole (`PgCluster::start`, the
//! reaper), initdb of the primary, each node's configuration, `pg_ctl` start/stop/restart.

use super::*;

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

    pub(super) fn new_node(root: &Path, name: &str) -> PgNode {
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
    pub(super) fn write_node_conf(&self, node: &PgNode) {
        let conf = format!(
            "port = {}\nunix_socket_directories = {}\ncluster_name = {}\n",
            node.port,
            conf_quote(&node.socket_dir.to_string_lossy()),
            conf_quote(&format!("{}-{}", self.tag, node.name)),
        );
        write_for_postgres(&node.data_dir.join("pgcast_node.conf"), &conf);
    }

    pub(super) fn init_primary(&self) {
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
             host    all          all       127.0.0.1/32   scram-sha-256\n\
             host    all          postgres  ::1/128        trust\n\
             host    all          app_md5   ::1/128        md5\n\
             host    all          all       ::1/128        scram-sha-256\n",
        );
        append(
            &node.data_dir.join("postgresql.conf"),
            "\n# ---- pgcast test harness ----\n\
             listen_addresses = '127.0.0.1,::1'\n\
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

    /// `pg_ctl start -w`. Err(true) means the port could not be bound.
    pub(super) fn pg_ctl_start(&self, node: &PgNode) -> Result<(), bool> {
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
    pub(super) fn start_fresh(&self, node: &mut PgNode) {
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

    pub(super) fn pg_ctl_stop(&self, node: &PgNode) -> Command {
        let mut cmd = pg_command("pg_ctl", self.dir.path());
        cmd.arg("stop")
            .arg("-D")
            .arg(&node.data_dir)
            .args(["-m", "immediate", "-w", "-t", "60"]);
        cmd
    }

    pub(super) fn wait_accepting(&self, node: &PgNode) {
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

    /// Detached shell that outlives us: once this process is gone it stops
    /// every node of this cluster and removes the temp dir.
    pub(super) fn spawn_reaper(&self) -> Child {
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
