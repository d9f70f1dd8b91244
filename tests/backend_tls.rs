//! TLS towards the backends against a PostgreSQL 15 with `ssl = on`: with `verify-full` and the
//! right CA the sessions' server connections and the health checks are encrypted (pg_stat_ssl
//! says so); a certificate that does not name the backend passes `verify-ca` but not
//! `verify-full`, and one from another CA passes neither: the backend is down in
//! `pgcast status`, with the reason. The health checker reconnects with the TLS configuration
//! the daemon loaded, not by reading the files again.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::certs::Certs;
use common::client::{self, simple_value as value};
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER};
use common::pgcast::{write_config, Pgcast};

/// Gives the primary the certificate `name`.crt/.key from `certs` and turns TLS on.
fn serve_tls(c: &PgCluster, certs: &Certs, name: &str) {
    let data = &c.primary.data_dir;
    let owner = std::fs::metadata(data).expect("data dir");
    for (from, to) in [
        (format!("{name}.crt"), "server.crt"),
        (format!("{name}.key"), "server.key"),
    ] {
        let target = data.join(to);
        std::fs::copy(certs.path(&from), &target).expect("copy into the data directory");
        std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid())).expect("chown");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&target, mode).expect("chmod");
    }
    c.psql(
        &c.primary,
        DATABASE,
        "ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
    );
}

fn backend_tls(mode: &str, ca: &Path) -> String {
    format!(
        "\n[backend_tls]\nsslmode = \"{mode}\"\nca = \"{}\"\n",
        ca.display()
    )
}

/// Rewrites pgcast's `[backend_tls]` and reloads it.
fn reconfigure(p: &Pgcast, mode: &str, ca: &Path) {
    let text = std::fs::read_to_string(&p.config_path).expect("read config");
    let start = text
        .find("\n[backend_tls]")
        .expect("a [backend_tls] section");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i);
    let text = format!(
        "{}{}{}",
        &text[..start],
        backend_tls(mode, ca),
        &text[end..]
    );
    write_config(&p.config_path, &text);
    p.signal("HUP");
}

/// The primary's status line in `pgcast status`.
fn primary_status(p: &Pgcast) -> (bool, Option<String>) {
    let s = p.status().expect("status");
    let b = s
        .backends
        .iter()
        .find(|b| b.name == "pg1" || b.role == "primary")
        .expect("the primary");
    (b.up, b.last_error.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_encrypts_and_a_certificate_that_does_not_verify_takes_the_backend_down() {
    let c = PgCluster::start(0);
    let certs = Certs::new();
    certs.issue("pg", "pgcast-test-backend");
    // Valid for another name only: good for verify-ca, not for verify-full.
    certs.issue_for("pgother", "pgcast-test-elsewhere", "DNS:elsewhere.example");
    serve_tls(&c, &certs, "pg");
    let ca = certs.path("ca.crt");
    // Without a pool every login opens (and verifies) a server connection of its own.
    let p = Pgcast::start(
        &c,
        &format!(
            "[pool]\nmode = \"none\"\n{}",
            backend_tls("verify-full", &ca)
        ),
    );

    let dsn = p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD);
    let session = client::connect(&dsn).await.expect("login");
    assert_eq!(
        value(
            &session,
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "true",
        "the session's server connection is encrypted"
    );
    let health_tls = c.psql(
        &c.primary,
        DATABASE,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'pgcast-health' AND s.ssl",
    );
    assert_ne!(health_tls, "0", "the health checks are encrypted");
    drop(session);

    // The primary's certificate now names another host.
    serve_tls(&c, &certs, "pgother");
    reconfigure(&p, "verify-ca", &ca);
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.wait_until("up under verify-ca", |s| {
        s.backends.iter().any(|b| b.up && b.role == "primary")
    });
    let fresh = client::connect(&dsn).await.expect("login under verify-ca");
    assert_eq!(value(&fresh, "SELECT 'chain only'").await, "chain only");

    reconfigure(&p, "verify-full", &ca);
    let down = p.wait_until("down under verify-full", |s| {
        s.backends.iter().any(|b| !b.up && b.last_error.is_some())
    });
    let (up, why) = primary_status(&p);
    assert!(!up, "{down:?}");
    let why = why.expect("a reason");
    assert!(why.contains("certificate") || why.contains("Name"), "{why}");

    // Another CA: not even the chain verifies.
    serve_tls(&c, &certs, "pg");
    reconfigure(&p, "verify-ca", &certs.path("other-ca.crt"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = p.wait_until("down under another CA", |s| {
        s.backends.iter().any(|b| {
            !b.up
                && b.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("Issuer"))
        })
    });
    assert!(
        down.primary.is_none(),
        "no primary while it does not verify"
    );
}

/// A primary serving TLS with the certificate `pg` from a new CA.
fn primary_with_tls() -> (PgCluster, Certs) {
    let c = PgCluster::start(0);
    let certs = Certs::new();
    certs.issue("pg", "pgcast-test-backend");
    serve_tls(&c, &certs, "pg");
    (c, certs)
}

/// A session-pool connection opened in clear text is not handed out after the backend's
/// sslmode changed to TLS: the reload empties the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_change_empties_the_pool() {
    let (c, certs) = primary_with_tls();
    let ca = certs.path("ca.crt");
    let p = Pgcast::start(&c, &backend_tls("disable", &ca));
    let dsn = p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD);
    let ssl = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let first = client::connect(&dsn).await.expect("login");
    assert_eq!(value(&first, ssl).await, "false", "clear text first");
    drop(first);
    p.wait_until("the connection pooled", |s| {
        s.backends.iter().any(|b| b.idle_connections > 0)
    });

    reconfigure(&p, "verify-full", &ca);
    // The report is published once the new configuration is in force.
    p.wait_until("the reload done, the pool emptied", |s| {
        s.reload.is_some() && s.backends.iter().all(|b| b.idle_connections == 0)
    });
    let second = client::connect(&dsn).await.expect("login");
    assert_eq!(
        value(&second, ssl).await,
        "true",
        "a new connection, in TLS"
    );
}

/// The health checker logs in again with the `[backend_tls]` the daemon loaded, as the
/// sessions do: it does not read the files at every reconnect, so a CA file removed (or
/// broken) after the start does not take the backend down until a reload reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reconnects_with_the_loaded_tls_not_the_files() {
    let (c, certs) = primary_with_tls();
    let ca = certs.path("ca.crt");
    let p = Pgcast::start(&c, &backend_tls("verify-full", &ca));
    p.wait_until("the primary up", |s| {
        s.backends.iter().any(|b| b.up && b.role == "primary")
    });
    std::fs::remove_file(&ca).expect("remove the CA file");
    let health = "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                  WHERE a.application_name = 'pgcast-health' AND s.ssl";
    let old = c.psql(
        &c.primary,
        DATABASE,
        &format!("SELECT coalesce(string_agg(pid::text, ','), '0') {health}"),
    );
    assert_ne!(old, "0", "a health connection in TLS");
    c.psql(
        &c.primary,
        DATABASE,
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({old})"),
    );
    let again = format!("SELECT count(*) {health} AND pid NOT IN ({old})");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while c.psql(&c.primary, DATABASE, &again) == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the checker did not log in again; status: {:?}\nlog:\n{}",
            primary_status(&p),
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.wait_until("the primary up after the reconnect", |s| {
        s.backends.iter().any(|b| b.up && b.role == "primary")
    });
}
