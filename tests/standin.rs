//! Smoke test of bench/proxy-cpu's stand-in server (examples/pg_standin.rs, run here inside the
//! test process): tokio-postgres talks to it directly and through pgcast, whose health check
//! must see it as a healthy primary, and pgbench's statements round-trip in simple and extended
//! form.

mod common;
#[allow(dead_code)]
#[path = "../examples/pg_standin.rs"]
mod standin;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{connect, simple_value};
use common::pg_cluster::free_port;
use tokio::net::TcpListener;
use tokio_postgres::Client;

/// Starts the stand-in on a free port of 127.0.0.1, serving on this test's runtime.
async fn start_standin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(standin::serve(sock, false));
        }
    });
    port
}

/// What pgbench -S sends, in the forms it uses, and a transaction block.
async fn pgbench_like(c: &Client) {
    assert_eq!(
        simple_value(c, "select count(*) from pgbench_branches").await,
        "1"
    );
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let row = c.query_one(sql, &[&42i32]).await.expect("extended select");
    assert_eq!(row.get::<_, i32>(0), 1);
    let prepared = c.prepare(sql).await.expect("prepare");
    assert_eq!(prepared.params().len(), 1);
    for aid in [1i32, 7] {
        let row = c
            .query_one(&prepared, &[&aid])
            .await
            .expect("prepared select");
        assert_eq!(row.get::<_, i32>(0), 1);
    }
    let simple = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
    assert_eq!(simple_value(c, simple).await, "1");
    c.batch_execute("BEGIN; SET application_name = 'x'; COMMIT; DISCARD ALL")
        .await
        .expect("session commands");
}

/// Kills pgcast when the test ends, however it ends.
struct Proxy(Child);
impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standin_answers_directly_and_through_pgcast() {
    let backend = start_standin().await;
    let direct = format!("host=127.0.0.1 port={backend} user=bench dbname=bench");
    pgbench_like(&connect(&direct).await.expect("connect to the stand-in")).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin.sock");
    let listen = free_port();
    let config = format!(
        r#"
[node]
id = 1

[admin]
socket = "{}"

[health]
interval_ms = 100
user = "postgres"
database = "bench"

[[listeners]]
name = "primary"
address = "127.0.0.1:{listen}"
role = "primary"

[[backends]]
name = "standin"
host = "127.0.0.1"
port = {backend}

[[users]]
name = "bench"
auth = "trust"
"#,
        admin.display()
    );
    let config_path = dir.path().join("pgcast.toml");
    std::fs::write(&config_path, config).expect("write config");
    let log_path = dir.path().join("pgcast.log");
    let _proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_pgcast"))
            .args(["run", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log"))
            .spawn()
            .expect("spawn pgcast"),
    );
    // The health probe and the catalog query are the stand-in's answers too.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin_status(&admin);
        let ready = status.as_ref().is_some_and(|s| {
            s.primary.as_deref() == Some("standin") && s.statement_cache.functions_loaded
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pgcast never saw the stand-in as its primary: {status:#?}\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proxied = format!("host=127.0.0.1 port={listen} user=bench dbname=bench");
    pgbench_like(&connect(&proxied).await.expect("connect through pgcast")).await;
}

fn admin_status(admin: &std::path::Path) -> Option<pgcast::status::Status> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(admin).ok()?;
    stream.write_all(b"status\n").ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}
