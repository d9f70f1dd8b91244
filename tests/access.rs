//! `[[access]]` rules against a real PostgreSQL 15 primary and replica: reject, trust, a
//! client from a network no rule names, and a reload that changes the rules.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::client::{connect, simple_value};
use common::pg_cluster::{PgCluster, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start(1))
}

/// The SQLSTATE and message of a refused login.
fn refusal(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => (format!("no SQLSTATE: {e}"), String::new()),
    }
}

fn rules() -> String {
    format!(
        r#"
[[access]]
address = "127.0.0.1"
listener = ["rw"]
user = ["{MD5_USER}"]
method = "trust"

[[access]]
address = "127.0.0.0/8"
user = ["{SCRAM_USER}"]
database = ["postgres"]
method = "reject"

[[access]]
address = "10.0.0.0/8"
method = "scram-sha-256"

[[access]]
address = "127.0.0.0/8"
user = ["{SCRAM_USER}"]
method = "scram-sha-256"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reject_trust_and_refuse_other_networks() {
    let c = cluster();
    let p = Pgcast::start(c, &rules());

    // trust: the md5 user needs no password on the primary listener.
    let trusted = connect(&p.conninfo(p.primary_port, MD5_USER, "not-the-password"))
        .await
        .expect("trust lets the md5 user in");
    assert_eq!(
        simple_value(&trusted, "SELECT current_user").await,
        MD5_USER
    );

    // ... but only there: on the auto listener no rule names it (127.0.0.1 is not 10/8).
    let e = connect(&p.conninfo(p.auto_port, MD5_USER, MD5_PASSWORD))
        .await
        .expect_err("no rule matches");
    assert_eq!(
        refusal(&e),
        (
            "28000".to_string(),
            format!(
                "no pgcast access rule for host \"127.0.0.1\", user \"{MD5_USER}\", \
                 database \"app\", no encryption"
            )
        )
    );

    // reject: refused before any password is asked, even the right one.
    let to_postgres = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname=postgres",
        p.auto_port
    );
    let e = connect(&to_postgres).await.expect_err("rejected");
    assert_eq!(
        refusal(&e),
        (
            "28000".to_string(),
            format!(
                "pgcast access rules reject connection for host \"127.0.0.1\", user \
                 \"{SCRAM_USER}\", database \"postgres\", no encryption"
            )
        )
    );

    // scram-sha-256: the right password logs in, a wrong one is 28P01.
    let ok = connect(&p.auto()).await.expect("scram rule");
    assert_eq!(simple_value(&ok, "SELECT current_user").await, SCRAM_USER);
    let e = connect(&p.conninfo(p.auto_port, SCRAM_USER, "wrong"))
        .await
        .expect_err("wrong password");
    assert_eq!(refusal(&e).0, "28P01");

    let s = p.status().expect("status");
    assert!(
        s.startup_failures.auth_failed >= 3,
        "refusals count as failed logins: {:?}",
        s.startup_failures
    );

    // SIGHUP: rules apply to new logins; the session already in is left alone.
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let text = text.replacen("method = \"trust\"", "method = \"reject\"", 1);
    common::pgcast::write_config(&p.config_path, &text);
    p.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(&p.conninfo(p.primary_port, MD5_USER, "not-the-password")).await {
            Err(e) if refusal(&e).0 == "28000" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "reload not applied: {:?}\n{}",
                    other.map(|_| "logged in"),
                    p.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The new rule is in force a moment before the reload's report is published.
    let report = p
        .wait_until("the reload's report", |s| s.reload.is_some())
        .reload
        .expect("a reload report");
    assert_eq!(report.applied, ["[[access]]"], "{report:?}");
    assert_eq!(simple_value(&trusted, "SELECT 1").await, "1");
}

/// Runs the pgcast binary; its exit code and stderr.
fn pgcast(args: &[&str], config: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcast"))
        .args(args)
        .arg(config)
        .output()
        .expect("run pgcast");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_with_secrets_that_others_may_read_is_refused_and_open_trust_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pgcast.toml");
    let text = format!(
        "[admin]\nsocket = \"{}\"\n[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
         role = \"auto\"\n[[backends]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n\
         [[users]]\nname = \"app\"\npassword = \"pw\"\n\
         [[access]]\naddress = \"0.0.0.0/0\"\nmethod = \"trust\"\n",
        dir.path().join("admin.sock").display()
    );
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let shown = path.display().to_string();
    let refusal =
        format!("{shown}: mode 0644: readable by others, but it holds secrets (users[0].password)");
    for (args, code) in [(&["check-config", "-c"][..], 2), (&["run", "-c"][..], 1)] {
        let (got, stderr) = pgcast(args, &path);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&refusal), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {shown}")),
            "{args:?}: {stderr}"
        );
    }

    common::pgcast::write_config(&path, &std::fs::read_to_string(&path).expect("read"));
    let (got, stderr) = pgcast(&["check-config", "-c"], &path);
    assert_eq!(got, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {shown}:15: access[0].method: \"trust\" lets anyone from 0.0.0.0/0 log in \
             without a password"
        )),
        "{stderr}"
    );
}
