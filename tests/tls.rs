//! TLS towards clients against a real PostgreSQL 15 behind pgcast: libpq (psql) with
//! `sslmode=require` and `verify-full` (right and wrong CA), `openssl s_client -starttls
//! postgres`, PostgreSQL 17's direct TLS with ALPN, a TLS-only listener refusing clear text,
//! certificate rotation by SIGHUP while a TLS session stays open, and `check-config` naming a
//! bad certificate file.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::Certs;
use common::pg_cluster::{PgCluster, DATABASE, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};
use common::pgcast::Pgcast;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// pgcast with `[tls]` in front of a PostgreSQL 15 (dropped in this order).
struct Setup {
    p: Pgcast,
    certs: Certs,
    _cluster: PgCluster,
}

impl Setup {
    fn new() -> Setup {
        let cluster = PgCluster::start(0);
        let certs = Certs::new();
        let p = Pgcast::start(&cluster, &certs.tls_section());
        Setup {
            p,
            certs,
            _cluster: cluster,
        }
    }
}

/// psql's output (stdout and stderr) and whether it succeeded, as the MD5 user.
fn psql(port: u16, extra_conninfo: &str, sql: &str) -> (bool, String) {
    psql_as((MD5_USER, MD5_PASSWORD), port, extra_conninfo, sql)
}

fn psql_as(
    (user, password): (&str, &str),
    port: u16,
    extra_conninfo: &str,
    sql: &str,
) -> (bool, String) {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={user} dbname={DATABASE} connect_timeout=10 {extra_conninfo}"
    );
    let out = Command::new("psql")
        .args([conninfo.as_str(), "-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql");
    (out.status.success(), common::client::output_text(&out))
}

#[test]
fn libpq_verify_full_with_the_right_ca_and_not_with_a_wrong_one() {
    let s = Setup::new();
    let (p, certs) = (&s.p, &s.certs);
    let ca = certs.path("ca.crt");
    let verify = |ca: &Path| format!("sslmode=verify-full sslrootcert={}", ca.display());

    let (ok, out) = psql(p.auto_port, &verify(&ca), "\\conninfo");
    assert!(ok, "{out}");
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    let (ok, out) = psql(p.auto_port, &verify(&ca), "SELECT 40 + 2");
    assert!(ok && out.trim() == "42", "{out}");

    let (ok, out) = psql(
        p.auto_port,
        &verify(&certs.path("other-ca.crt")),
        "SELECT 1",
    );
    assert!(!ok, "a certificate from another CA must not verify: {out}");
    assert!(out.contains("certificate verify failed"), "{out}");

    let (ok, out) = psql(p.auto_port, "sslmode=require", "SELECT 'require'");
    assert!(ok && out.trim() == "require", "{out}");
    let (ok, out) = psql(p.auto_port, "sslmode=disable", "SELECT 'clear'");
    assert!(
        ok && out.trim() == "clear",
        "an allow listener serves clear text too: {out}"
    );
}

/// SCRAM-SHA-256-PLUS over TLS: libpq's `channel_binding=require` logs in; without TLS there
/// is nothing to bind to and libpq refuses by itself.
#[test]
fn channel_binding_require_works_over_tls() {
    let s = Setup::new();
    let scram = (SCRAM_USER, SCRAM_PASSWORD);
    let (ok, out) = psql_as(
        scram,
        s.p.auto_port,
        "sslmode=require channel_binding=require",
        "SELECT 'bound'",
    );
    assert!(ok && out.trim() == "bound", "{out}");
    let (ok, out) = psql_as(
        scram,
        s.p.auto_port,
        "sslmode=disable channel_binding=require",
        "SELECT 1",
    );
    assert!(!ok, "{out}");
    let (ok, out) = psql_as(
        scram,
        s.p.auto_port,
        "sslmode=require channel_binding=disable",
        "SELECT 'unbound'",
    );
    assert!(ok && out.trim() == "unbound", "{out}");
}

/// An RSA certificate signed with RSASSA-PSS over SHA-384: the channel binding hashes it with
/// the hash the signature's parameters name, as libpq does, so `channel_binding=require` logs
/// in (before, no PLUS was offered for such a certificate and libpq refused).
#[test]
fn channel_binding_with_an_rsa_pss_signed_certificate() {
    let cluster = PgCluster::start(0);
    let certs = Certs::new();
    certs.self_signed_rsa_pss("pss", "sha384");
    let p = Pgcast::start(&cluster, &certs.tls_section_of("pss"));
    let (ok, out) = psql_as(
        (SCRAM_USER, SCRAM_PASSWORD),
        p.auto_port,
        "sslmode=require channel_binding=require",
        "SELECT 'bound'",
    );
    assert!(ok && out.trim() == "bound", "{out}");
}

#[test]
fn openssl_starttls_sees_tls_1_2_or_newer() {
    let s = Setup::new();
    let (p, certs) = (&s.p, &s.certs);
    let s_client = |version: &str| {
        let out = Command::new("openssl")
            .args(["s_client", "-starttls", "postgres", version, "-CAfile"])
            .arg(certs.path("ca.crt"))
            .args(["-connect", &format!("127.0.0.1:{}", p.auto_port)])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl s_client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = s_client("-tls1_3");
    assert!(
        out.contains("Protocol: TLSv1.3") || out.contains("TLSv1.3"),
        "{out}"
    );
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let out = s_client("-tls1_2");
    assert!(out.contains("TLSv1.2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
}

/// A minimal TLS client of the PostgreSQL protocol (md5 login, simple queries).
struct TlsClient {
    s: StreamOwned<ClientConnection, TcpStream>,
}

fn client_config(ca: &Path, alpn: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Arc::new(cfg)
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

impl TlsClient {
    /// `direct`: TLS from the first byte (PostgreSQL 17's `sslnegotiation=direct`), else an
    /// SSLRequest first.
    fn connect(port: u16, ca: &Path, direct: bool, alpn: bool) -> std::io::Result<TlsClient> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        if !direct {
            tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer)?;
            assert_eq!(&answer, b"S", "SSLRequest answered");
        }
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn =
            ClientConnection::new(client_config(ca, alpn), name).map_err(std::io::Error::other)?;
        let mut c = TlsClient {
            s: StreamOwned::new(conn, tcp),
        };
        c.login()?;
        Ok(c)
    }

    fn login(&mut self) -> std::io::Result<()> {
        let mut body = 196608i32.to_be_bytes().to_vec();
        for kv in [b"user\0".as_slice(), MD5_USER.as_bytes(), b"\0"] {
            body.extend_from_slice(kv);
        }
        for kv in [b"database\0".as_slice(), DATABASE.as_bytes(), b"\0\0"] {
            body.extend_from_slice(kv);
        }
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        self.s.write_all(&startup)?;
        loop {
            let (tag, body) = self.read()?;
            match tag {
                b'R' if body[..4] == 5i32.to_be_bytes() => {
                    let salt: [u8; 4] = body[4..8].try_into().expect("salt");
                    let resp =
                        pgcast::proxy::auth::md5_client_response(MD5_USER, MD5_PASSWORD, salt);
                    let mut p = resp.into_bytes();
                    p.push(0);
                    self.s.write_all(&frame(b'p', &p))?;
                }
                b'Z' => return Ok(()),
                b'E' => {
                    return Err(std::io::Error::other(
                        String::from_utf8_lossy(&body).into_owned(),
                    ))
                }
                _ => {}
            }
        }
    }

    fn read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head)?;
        let len = i32::from_be_bytes(head[1..5].try_into().expect("len")) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.s.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    /// The first value of the first row of a simple query.
    fn value(&mut self, sql: &str) -> String {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.s.write_all(&frame(b'Q', &q)).expect("send query");
        let mut value = None;
        loop {
            let (tag, body) = self.read().expect("reply");
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes(body[2..6].try_into().expect("len")) as usize;
                    value.get_or_insert_with(|| {
                        String::from_utf8_lossy(&body[6..6 + len]).into_owned()
                    });
                }
                b'E' => panic!("{sql}: {}", String::from_utf8_lossy(&body)),
                b'Z' => return value.expect("a row"),
                _ => {}
            }
        }
    }

    /// The server certificate's DER.
    fn server_certificate(&self) -> Vec<u8> {
        self.s.conn.peer_certificates().expect("certificates")[0].to_vec()
    }

    fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.s.conn.protocol_version()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn direct_tls_with_alpn_and_not_without() {
    let s = Setup::new();
    let (p, certs) = (&s.p, &s.certs);
    let ca = certs.path("ca.crt");
    let mut direct = TlsClient::connect(p.auto_port, &ca, true, true).expect("direct TLS");
    assert_eq!(direct.value("SELECT 'direct'"), "direct");
    assert_eq!(
        direct.s.conn.alpn_protocol(),
        Some(b"postgresql".as_slice())
    );
    let e = TlsClient::connect(p.auto_port, &ca, true, false)
        .err()
        .expect("direct TLS without ALPN is refused");
    assert!(e.to_string().contains("ALPN"), "{e}");
    let mut negotiated = TlsClient::connect(p.auto_port, &ca, false, false).expect("SSLRequest");
    assert_eq!(negotiated.value("SELECT 'negotiated'"), "negotiated");
}

#[test]
fn a_tls_only_listener_refuses_clear_text() {
    let c = PgCluster::start(0);
    let certs = Certs::new();
    let p = Pgcast::start_edited(&c, &certs.tls_section(), |t| {
        t.replace(
            "role = \"primary\"\n",
            "role = \"primary\"\ntls = \"require\"\n",
        )
    });
    let (ok, out) = psql(p.primary_port, "sslmode=disable", "SELECT 1");
    assert!(!ok, "{out}");
    assert!(out.contains("accepts TLS connections only"), "{out}");
    let (ok, out) = psql(p.primary_port, "sslmode=require", "SELECT 'tls'");
    assert!(ok && out.trim() == "tls", "{out}");
}

#[test]
fn sighup_rotates_the_certificate_and_open_sessions_go_on() {
    let s = Setup::new();
    let (p, certs) = (&s.p, &s.certs);
    let ca = certs.path("ca.crt");
    let mut open = TlsClient::connect(p.auto_port, &ca, false, false).expect("TLS session");
    assert!(contains(&open.server_certificate(), "pgcast-test-one"));
    assert!(open.protocol().is_some());

    certs.issue("server", "pgcast-test-two");
    p.signal("HUP");
    let fresh = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let c = TlsClient::connect(p.auto_port, &ca, false, false).expect("TLS login");
            contains(&c.server_certificate(), "pgcast-test-two").then_some(c)
        })
        .expect("new handshakes use the new certificate");
    drop(fresh);
    assert_eq!(open.value("SELECT 'still here'"), "still here");
    let status = p.status().expect("status");
    let reload = status.reload.expect("a reload report");
    assert!(
        reload.applied.iter().any(|a| a.starts_with("[tls]")),
        "{reload:?}"
    );

    // A broken file at the next reload: the running certificate stays, and status says why.
    std::fs::write(certs.path("server.crt"), "not a certificate\n").expect("break the file");
    p.signal("HUP");
    let failed = p.wait_until("the failed reload reported", |s| {
        s.reload.as_ref().is_some_and(|r| !r.failed.is_empty())
    });
    let failed = failed.reload.expect("report").failed;
    assert!(failed[0].contains("server.crt"), "{failed:?}");
    let c = TlsClient::connect(p.auto_port, &ca, false, false).expect("TLS login still works");
    assert!(contains(&c.server_certificate(), "pgcast-test-two"));
}

#[test]
fn check_config_names_a_bad_certificate_file() {
    let certs = Certs::new();
    std::fs::write(
        certs.path("server.crt"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .expect("write");
    let config = certs.path("pgcast.toml");
    let text = format!(
        "[node]\nid = 1\nname = \"t\"\n[admin]\nsocket = \"/tmp/x.sock\"\n\
         [[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nrole = \"auto\"\n\
         [[backends]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = 5432\n{}",
        certs.tls_section()
    );
    common::pgcast::write_config(&config, &text);
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pgcast"))
            .args(["check-config", "-c"])
            .arg(&config)
            .output()
            .expect("run check-config");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        err
    };
    let err = check();
    assert!(err.contains("[tls]") && err.contains("server.crt"), "{err}");
    certs.issue("server", "again");
    std::fs::remove_file(certs.path("server.key")).expect("remove key");
    let err = check();
    assert!(err.contains("server.key"), "{err}");
    // A key others may read is refused, as PostgreSQL refuses it.
    certs.issue("server", "again");
    let key = certs.path("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = check();
    assert!(
        err.contains(&format!("{}: mode 0644: readable by others", key.display())),
        "{err}"
    );
}
