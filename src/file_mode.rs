//! How a file's permission bits open it to others: one wording for the configuration file's
//! check (it may hold secrets, `config::secrets`) and the TLS private keys' (`pem`). A leaf.

/// Pure: how the bits of `mode` that `forbidden` names open the file to others, or `None`
/// when `mode` has none of them. The caller's rule decides which bits are forbidden.
pub fn exposure(mode: u32, forbidden: u32) -> Option<&'static str> {
    let open = mode & forbidden;
    if open == 0 {
        return None;
    }
    Some(if open & 0o004 != 0 {
        "readable by others"
    } else if open & 0o040 != 0 {
        "readable by its group"
    } else if open & 0o022 != 0 {
        "writable by others than its owner"
    } else {
        "open to others"
    })
}
