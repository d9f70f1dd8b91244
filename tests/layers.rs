//! The layers point one way (the daemon wires them together): config imports none of the
//! parts; health knows neither the proxy nor the anycast speakers; the proxy does not know the
//! speakers; `unsafe` lives only in `src/sys.rs`. Checked on the source text, so a violation
//! fails here instead of waiting for a review.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of the files under `src/<dir>` that mention any of `forbidden`, comments excluded.
fn offending_lines(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    if root.is_dir() {
        rust_files(&root, &mut files);
    } else {
        files.push(root.with_extension("rs"));
    }
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if forbidden.iter().any(|w| code.contains(w)) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn config_is_a_leaf() {
    let v = offending_lines(
        "config",
        &[
            "crate::proxy",
            "crate::health",
            "crate::anycast",
            "crate::daemon",
        ],
    );
    assert!(v.is_empty(), "config imports a part:\n{}", v.join("\n"));
}

#[test]
fn health_knows_neither_proxy_nor_anycast() {
    let v = offending_lines(
        "health",
        &["crate::proxy", "crate::anycast", "crate::daemon"],
    );
    assert!(v.is_empty(), "health imports upward:\n{}", v.join("\n"));
}

#[test]
fn proxy_does_not_know_the_speakers() {
    let v = offending_lines("proxy", &["crate::anycast", "crate::daemon"]);
    assert!(v.is_empty(), "the proxy imports anycast:\n{}", v.join("\n"));
}

#[test]
fn anycast_does_not_know_the_proxy() {
    let v = offending_lines("anycast", &["crate::proxy", "crate::daemon"]);
    assert!(v.is_empty(), "anycast imports the proxy:\n{}", v.join("\n"));
}

#[test]
fn unsafe_only_in_sys() {
    for dir in [
        "config", "health", "proxy", "anycast", "daemon", "admin", "status",
    ] {
        let v = offending_lines(dir, &["unsafe {", "unsafe fn", "unsafe impl"]);
        assert!(v.is_empty(), "unsafe outside src/sys.rs:\n{}", v.join("\n"));
    }
}
