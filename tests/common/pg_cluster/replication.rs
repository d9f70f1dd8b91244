//! Streaming replication: base backups of the replicas, waiting until they stream and
//! catch up, promotion.

use super::*;

impl PgCluster {
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

    pub(super) fn base_backup(&self, node: &PgNode) {
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

    pub(super) fn wait_replicas_streaming(&self) {
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
}
