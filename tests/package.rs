//! The Debian package (`packaging/build-deb`): what it holds, what lintian says of it, and a
//! real install, upgrade, removal and purge on a throw-away overlay of this machine
//! (`packaging/check-deb`). Packs the test build of pgcast, not a release build: what is
//! checked here is the packaging, and a release build would add minutes to the suite.
//! Runs as root, as CI does (check-deb mounts an overlay in a namespace of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `dir` and returns its path.
fn build_deb(dir: &Path) -> PathBuf {
    let out = run(Command::new(repo().join("packaging/build-deb"))
        .env("PGCAST_BIN", env!("CARGO_BIN_EXE_pgcast"))
        .env("DEB_OUT", dir));
    let path = stdout(&out)
        .lines()
        .last()
        .expect("the package's path")
        .to_string();
    PathBuf::from(path)
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
    stdout(&out).trim().to_string()
}

/// (mode string, owner, path) of every entry of the package, from `dpkg-deb --contents`.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    stdout(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[5].to_string())
        })
        .collect()
}

#[test]
fn the_package_holds_the_binary_the_unit_and_a_private_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let arch = stdout(&run(Command::new("dpkg").arg("--print-architecture")));
    assert_eq!(field(&deb, "Package"), "pgcast");
    assert_eq!(
        field(&deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(field(&deb, "Architecture"), arch.trim());
    let depends = field(&deb, "Depends");
    assert!(depends.contains("libc6 (>= 2."), "{depends}");
    assert!(depends.contains("adduser"), "{depends}");

    let entries = contents(&deb);
    let entry = |path: &str| {
        entries
            .iter()
            .find(|e| e.2 == path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {entries:?}"))
            .clone()
    };
    assert_eq!(entry("./usr/bin/pgcast").0, "-rwxr-xr-x");
    assert_eq!(entry("./lib/systemd/system/pgcast.service").0, "-rw-r--r--");
    // Private as shipped; postinst hands it to the group pgcast.
    let conf = entry("./etc/pgcast/pgcast.toml");
    assert_eq!(
        (conf.0.as_str(), conf.1.as_str()),
        ("-rw-------", "root/root")
    );
    entry("./usr/share/man/man1/pgcast.1.gz");
    entry("./usr/share/doc/pgcast/copyright");
    entry("./usr/share/doc/pgcast/changelog.Debian.gz");
    entry("./usr/share/doc/pgcast/examples/pgcast.toml");
    assert!(entries.iter().all(|e| e.1 == "root/root"), "{entries:?}");

    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(stdout(&conffiles).trim(), "/etc/pgcast/pgcast.toml");

    // The packaged binary is the one built, stripped.
    let unpacked = dir.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let version = run(Command::new(unpacked.join("usr/bin/pgcast")).arg("--version"));
    assert_eq!(
        stdout(&version).trim(),
        format!("pgcast {}", env!("CARGO_PKG_VERSION"))
    );
    // readelf lists every section header; objdump -h leaves out .symtab.
    let sections = run(Command::new("readelf")
        .args(["-S", "-W"])
        .arg(unpacked.join("usr/bin/pgcast")));
    let sections = stdout(&sections);
    assert!(
        !sections.contains(".debug_info"),
        "not stripped: {sections}"
    );
    assert!(!sections.contains(".symtab"), "not stripped: {sections}");
}

#[test]
fn lintian_finds_no_error_in_the_package() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    // Exit status 1 also for warnings; errors are what is refused here ("E: " lines).
    let out = Command::new("lintian")
        .arg("--no-tag-display-limit")
        .arg(&deb)
        .output()
        .expect("lintian (scripts/deps installs it)");
    let report = stdout(&out);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
    assert!(
        out.status.success() || report.lines().any(|l| l.starts_with("W: ")),
        "lintian failed without a report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_upgrade_remove_and_purge_on_a_copy_of_this_machine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let before = machine_state();
    let out = run(Command::new(repo().join("packaging/check-deb")).arg(&deb));
    let report = stdout(&out);
    for check in [
        "ok: dpkg -i: installed",
        "ok: user and group pgcast",
        "ok: /etc/pgcast/pgcast.toml: root:pgcast 640",
        "ok: pgcast check-config as user pgcast: exit 0",
        "ok: pgcast.service installed, not enabled",
        "ok: upgrade: an unedited /etc/pgcast/pgcast.toml replaced by the new one, root:pgcast 640",
        "ok: upgrade: the edited /etc/pgcast/pgcast.toml kept, root:pgcast 640",
        "ok: dpkg -r: binary and unit gone, configuration kept",
        "ok: dpkg -P: configuration and statoverride gone, user kept",
        "check-deb: every check passed",
    ] {
        assert!(report.contains(check), "missing {check:?} in:\n{report}");
    }
    // The copy has what this machine has: systemd-analyze where systemd is installed.
    let has_systemd_analyze = Path::new("/usr/bin/systemd-analyze").exists();
    assert_eq!(
        report.contains("ok: systemd-analyze verify pgcast.service: no complaint"),
        has_systemd_analyze,
        "{report}"
    );
    // This machine is as it was: the install happened on the overlay only.
    assert_eq!(before, machine_state());
}

/// What an install of the package would change on this machine: dpkg's view of pgcast, its
/// statoverrides, the users and groups, /usr/bin/pgcast and /etc/pgcast.
fn machine_state() -> Vec<String> {
    let output = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).output().expect(program);
        format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
    };
    vec![
        output("dpkg-query", &["-W", "-f=${Status}", "pgcast"]),
        output("dpkg-statoverride", &["--list"]),
        std::fs::read_to_string("/etc/passwd").expect("/etc/passwd"),
        std::fs::read_to_string("/etc/group").expect("/etc/group"),
        format!("{}", Path::new("/usr/bin/pgcast").exists()),
        format!("{}", Path::new("/etc/pgcast").exists()),
    ]
}

/// The manual page has a section for every command `pgcast --help` lists, and groff formats
/// it without a warning.
#[test]
fn the_manual_page_covers_every_command() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_pgcast")).arg("--help"));
    let page = std::fs::read_to_string(repo().join("packaging/pgcast.1")).expect("pgcast.1");
    let commands: Vec<String> = stdout(&help)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    for c in &commands {
        let heading = format!(".SS {}", c.replace('-', "\\-"));
        assert!(
            page.lines().any(|l| l == heading),
            "no {heading:?} in packaging/pgcast.1"
        );
    }
    let out = run(Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(repo().join("packaging/pgcast.1"))
        .env("MANWIDTH", "80")
        .env("MAN_DISABLE_SECCOMP", "1"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "man --warnings: {warnings}");
}
