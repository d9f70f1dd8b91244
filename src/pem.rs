//! PEM files of certificates and keys, read for TLS on both sides (`proxy::tls` towards the
//! clients, `backend_tls` towards the backends). A leaf but for the wording of `file_mode`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error(
        "{path}: mode {mode:04o}: {how}; a private key file must not be open to its group or \
         others (0640 only when owned by root), as PostgreSQL requires: chmod 600 {path}"
    )]
    ExposedKey {
        path: PathBuf,
        mode: u32,
        how: &'static str,
    },
}

fn read_file(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in the file, in order (a chain, or CA certificates); at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Bad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key in the file (PKCS#8, PKCS#1 RSA or SEC1 EC); refused when its mode lets
/// others read or change it.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let meta = std::fs::metadata(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(how) = key_exposure(meta.mode(), meta.uid() == 0) {
        return Err(PemError::ExposedKey {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
            how,
        });
    }
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PemError::Bad {
        path: path.to_path_buf(),
        reason: format!("no usable private key ({e})"),
    })
}

/// Pure: how a key file with `mode` is open to others, or `None` when it is private enough.
/// PostgreSQL's rule for `ssl_key_file`: no permission for group or others, except that a
/// root-owned key may be group-readable (0640), so a root-managed key can be shared with a
/// service group.
fn key_exposure(mode: u32, owned_by_root: bool) -> Option<&'static str> {
    let forbidden = if owned_by_root { 0o037 } else { 0o077 };
    crate::file_mode::exposure(mode, forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn which_key_modes_are_refused() {
        for (mode, root) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o100600, false),
        ] {
            assert_eq!(key_exposure(mode, root), None, "{mode:o} root={root}");
        }
        for (mode, root, how) in [
            (0o644, true, "readable by others"),
            (0o604, false, "readable by others"),
            (0o640, false, "readable by its group"),
            (0o660, true, "writable by others than its owner"),
            (0o620, false, "writable by others than its owner"),
            (0o610, true, "open to others"),
            (0o601, false, "open to others"),
        ] {
            assert_eq!(key_exposure(mode, root), Some(how), "{mode:o} root={root}");
        }
    }

    #[test]
    fn read_key_names_an_exposed_file_and_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.key");
        std::fs::write(&path, "not read: refused before").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_key(&path).unwrap_err().to_string();
        let shown = path.display();
        assert!(
            e.starts_with(&format!("{shown}: mode 0644: readable by others")),
            "{e}"
        );
        assert!(e.ends_with(&format!("chmod 600 {shown}")), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = read_key(&path).unwrap_err().to_string();
        assert!(e.contains("no usable private key"), "{e}");
    }
}
