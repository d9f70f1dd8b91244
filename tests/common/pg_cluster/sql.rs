//! SQL through `psql`, and the roles, database and tables every test cluster gets.

use super::*;

impl PgCluster {
    /// The primary's client backends of the test users (what a pool's cap bounds).
    pub fn test_user_backends_on_primary(&self) -> i64 {
        self.psql(
            &self.primary,
            DATABASE,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename IN ('{SCRAM_USER}', '{MD5_USER}')"
            ),
        )
        .trim()
        .parse()
        .expect("a count")
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

    /// Creates login roles `names` with `password` stored as `encryption` ("scram-sha-256" or
    /// "md5") on the primary.
    pub fn create_roles(&self, encryption: &str, names: &[&str], password: &str) {
        let mut sql = format!("SET password_encryption = '{encryption}';\n");
        for name in names {
            sql.push_str(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}';\n"
            ));
        }
        self.psql(&self.primary, "postgres", &sql);
    }

    pub(super) fn create_app_objects(&self) {
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
}
