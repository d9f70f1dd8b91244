//! A configuration file that holds secrets (passwords, stored password hashes, routing keys)
//! must not be open to others, as ssh refuses a private key others can read: pgcast refuses
//! to run with such a file, and `check-config` fails on it, naming the file, its mode and
//! the fix. Refused: any permission for others, and write permission for the group. Read
//! permission for the group is allowed, so that a service user can read a root-owned file
//! (`root:pgcast`, mode 0640).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Config, ConfigError, OspfAuth};

/// Permission bits that expose a file with secrets: any for others, write for the group.
const EXPOSING: u32 = 0o027;

impl Config {
    /// [`Config::load`], then refuses a file with secrets whose permissions expose them.
    pub fn load_private(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load(path)?;
        let mode = std::fs::metadata(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        let keys = config.secret_keys();
        match exposure(mode) {
            Some(how) if !keys.is_empty() => Err(ConfigError::Exposed {
                path: path.display().to_string(),
                mode: mode & 0o7777,
                how,
                keys: keys.join(", "),
            }),
            _ => Ok(config),
        }
    }

    /// The keys of this configuration that hold secrets.
    pub fn secret_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (i, u) in self.users.iter().enumerate() {
            let held = [
                ("password", u.password.is_some()),
                ("password_hash", u.password_hash.is_some()),
                ("backend_password", u.backend_password.is_some()),
            ];
            keys.extend(
                held.iter()
                    .filter(|h| h.1)
                    .map(|h| format!("users[{i}].{}", h.0)),
            );
        }
        if self.health.password.is_some() {
            keys.push("health.password".to_string());
        }
        let ospf = self.ospf.iter().flat_map(|o| o.interfaces.iter());
        for (i, ifc) in ospf.enumerate() {
            if ifc.auth != OspfAuth::None {
                keys.push(format!("ospf.interfaces[{i}].auth"));
            }
        }
        let neighbors = self.bgp.iter().flat_map(|b| b.neighbors.iter());
        for (i, n) in neighbors.enumerate() {
            if n.password.is_some() {
                keys.push(format!("bgp.neighbors[{i}].password"));
            }
        }
        keys
    }
}

/// Pure: what `mode` lets others do with the file, or `None` when it keeps it private.
pub(super) fn exposure(mode: u32) -> Option<&'static str> {
    crate::file_mode::exposure(mode, EXPOSING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_modes_expose_a_file() {
        for private in [0o600, 0o400, 0o640, 0o440, 0o700, 0o100600] {
            assert_eq!(exposure(private), None, "{private:o}");
        }
        for (mode, how) in [
            (0o644, "readable by others"),
            (0o604, "readable by others"),
            (0o666, "readable by others"),
            (0o620, "writable by others than its owner"),
            (0o602, "writable by others than its owner"),
            (0o601, "open to others"),
        ] {
            assert_eq!(exposure(mode), Some(how), "{mode:o}");
        }
    }

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("pgcast.toml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    const BASE: &str = "[admin]\nsocket = \"/tmp/x.sock\"\n[[listeners]]\nname = \"a\"\n\
                        address = \"127.0.0.1:1\"\nrole = \"auto\"\n[[backends]]\nname = \"pg1\"\n\
                        host = \"h\"\n";

    #[test]
    fn a_file_with_secrets_must_be_private_and_one_without_need_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = format!(
            "{BASE}[[users]]\nname = \"app\"\npassword = \"pw\"\n[health]\npassword = \"hp\"\n"
        );
        let path = write(dir.path(), &with, 0o644);
        let e = Config::load_private(&path).unwrap_err().to_string();
        let shown = path.display();
        assert!(
            e.starts_with(&format!("{shown}: mode 0644: readable by others")),
            "{e}"
        );
        assert!(e.contains("users[0].password, health.password"), "{e}");
        assert!(e.contains(&format!("chmod 600 {shown}")), "{e}");
        Config::load(&path).expect("plain load does not look at the mode");

        let path = write(dir.path(), &with, 0o640);
        Config::load_private(&path).expect("the group may read");
        let path = write(
            dir.path(),
            &format!("{BASE}[[users]]\nname = \"t\"\nauth = \"trust\"\n"),
            0o644,
        );
        assert!(Config::load_private(&path)
            .expect("no secrets")
            .secret_keys()
            .is_empty());
    }
}
