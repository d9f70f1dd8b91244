//! `lab/demo`: pgcast in front of a real PostgreSQL 15 primary and two streaming replicas on
//! this machine's loopback — reads and writes split, `pgcast status`, and a failover followed
//! without a configuration edit. (The network-namespace lab with routers and anycast grows
//! from here in the lab issue.)
//!
//! Run through `lab/demo`, which builds pgcast in release mode first.

#[path = "../tests/common/pg_cluster/mod.rs"]
#[allow(dead_code)]
mod pg_cluster;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pg_cluster::{free_port, PgCluster, DATABASE, SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::NoTls;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pgcast_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/demo -> target/release/pgcast
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("pgcast")
}

fn status(bin: &std::path::Path, admin: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin)
        .args(["status", "--admin"])
        .arg(admin)
        .output()
        .expect("pgcast status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn where_it_ran(conninfo: &str, sql: &str) -> String {
    let (client, conn) = match tokio_postgres::connect(conninfo, NoTls).await {
        Ok(c) => c,
        Err(e) => return format!("error: {e}"),
    };
    tokio::spawn(conn);
    match client.simple_query(sql).await {
        Ok(msgs) => msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .next_back()
            .unwrap_or_default(),
        Err(e) => format!(
            "error: {}",
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or(e.to_string())
        ),
    }
}

#[tokio::main]
async fn main() {
    let t0 = Instant::now();
    println!("== starting PostgreSQL 15: primary pg1 + streaming replicas pg2, pg3 (loopback)");
    let cluster = PgCluster::start(2);
    cluster.psql(
        &cluster.primary,
        DATABASE,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE ledger (id serial PRIMARY KEY, note text);"),
    );
    for n in cluster.nodes() {
        println!("   {} on 127.0.0.1:{}", n.name, n.port);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin.sock");
    let port = free_port();
    let mut config = format!(
        "[node]\nid = 1\nname = \"demo\"\n[admin]\nsocket = \"{}\"\n[health]\ninterval_ms = 200\nrise = 1\nfall = 2\nuser = \"postgres\"\ndatabase = \"{DATABASE}\"\n\
         [[listeners]]\nname = \"auto\"\naddress = \"127.0.0.1:{port}\"\nrole = \"auto\"\n\
         [[users]]\nname = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASSWORD}\"\n",
        admin.display()
    );
    for n in cluster.nodes() {
        config.push_str(&format!(
            "[[backends]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            n.name, n.port
        ));
    }
    let config_path = dir.path().join("pgcast.toml");
    std::fs::write(&config_path, &config).expect("write config");
    // It holds passwords: pgcast refuses a file with secrets that others may read.
    std::fs::set_permissions(
        &config_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod config");
    let bin = pgcast_bin();
    println!("\n== starting pgcast on 127.0.0.1:{port} (role auto); config:\n{config}");
    let _daemon = Daemon(
        Command::new(&bin)
            .args(["run", "-c"])
            .arg(&config_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgcast"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&bin, &admin).0 != 0 {
        assert!(Instant::now() < deadline, "pgcast did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }

    let ci = format!(
        "host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname={DATABASE}"
    );
    println!("== read/write split (each on a new client session)");
    for sql in [
        "SELECT 'read on '  || current_setting('cluster_name')",
        "INSERT INTO ledger (note) VALUES ('demo') RETURNING 'write on ' || current_setting('cluster_name')",
        "SELECT 'FOR UPDATE on ' || current_setting('cluster_name') FROM ledger LIMIT 1 FOR UPDATE",
        "BEGIN READ ONLY; SELECT 'read-only transaction on ' || current_setting('cluster_name'); COMMIT",
    ] {
        println!("   {:<60} -> {}", sql.chars().take(60).collect::<String>(), where_it_ran(&ci, sql).await);
    }
    println!("\n== pgcast status\n{}", status(&bin, &admin).1);

    println!("== failover: stop pg1, promote pg2 (what a failover manager would do)");
    let t = Instant::now();
    cluster.stop(cluster.node("pg1"));
    println!(
        "   write while no primary: {}",
        where_it_ran(
            &ci,
            "INSERT INTO ledger (note) VALUES ('lost?') RETURNING 'ok'"
        )
        .await
    );
    cluster.promote(cluster.node("pg2"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = where_it_ran(&ci, "INSERT INTO ledger (note) VALUES ('after failover') RETURNING 'write on ' || current_setting('cluster_name')").await;
        if !r.starts_with("error") {
            println!(
                "   {r} — {} ms after pg1 stopped, no config edit",
                t.elapsed().as_millis()
            );
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "\n== pgcast status after failover\n{}",
        status(&bin, &admin).1
    );
    println!(
        "demo finished in {:.1} s; everything it started is removed on exit",
        t0.elapsed().as_secs_f64()
    );
}
