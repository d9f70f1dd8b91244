//! Certificates for the TLS tests, made with the openssl command: a CA, another CA, and
//! server certificates signed by the first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate for 127.0.0.1 made with openssl in `dir`.
pub struct Certs {
    dir: tempfile::TempDir,
}

/// Runs openssl in `dir` with `args` split at spaces (no argument here contains one).
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key: the arguments of `openssl req` that make one.
const NEW_EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        Certs::make_ca(dir.path(), "ca");
        Certs::make_ca(dir.path(), "other-ca");
        let c = Certs { dir };
        c.issue("server", "pgcast-test-one");
        c
    }

    fn make_ca(dir: &Path, name: &str) {
        openssl(
            dir,
            &format!(
                "req -x509 {NEW_EC_KEY} -keyout {name}.key -out {name}.crt -days 2 -subj /CN={name}"
            ),
        );
    }

    /// (Re)writes `name`.crt/.key: a certificate for 127.0.0.1 with common name `cn`.
    pub fn issue(&self, name: &str, cn: &str) {
        self.issue_for(name, cn, "IP:127.0.0.1,DNS:localhost");
    }

    /// [`Certs::issue`] with another subjectAltName.
    pub fn issue_for(&self, name: &str, cn: &str, san: &str) {
        let d = self.dir.path();
        std::fs::write(d.join("san.ext"), format!("subjectAltName={san}\n"))
            .expect("write san.ext");
        openssl(
            d,
            &format!("req {NEW_EC_KEY} -keyout {name}.key -out {name}.csr -subj /CN={cn}"),
        );
        openssl(
            d,
            &format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                 -out {name}.crt -days 2 -extfile san.ext"
            ),
        );
    }

    /// `name`.crt/.key: a self-signed certificate for 127.0.0.1 with an RSA key, signed with
    /// RSASSA-PSS over `hash` (`sha256`, `sha384`, ...), whose channel binding hashes with that.
    pub fn self_signed_rsa_pss(&self, name: &str, hash: &str) {
        openssl(
            self.dir.path(),
            &format!(
                "req -x509 -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.crt -days 2 \
                 -subj /CN={name} -{hash} -sigopt rsa_padding_mode:pss \
                 -addext subjectAltName=IP:127.0.0.1"
            ),
        );
    }

    /// A `[tls]` section serving `name`.crt/.key.
    pub fn tls_section_of(&self, name: &str) -> String {
        format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.path(&format!("{name}.crt")).display(),
            self.path(&format!("{name}.key")).display()
        )
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn tls_section(&self) -> String {
        self.tls_section_of("server")
    }
}
