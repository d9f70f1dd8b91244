use super::*;

const MINIMAL: &str = r#"
[admin]
socket = "/tmp/pgcast.sock"

[[listeners]]
name = "rw"
address = "127.0.0.1:6432"
role = "auto"

[[backends]]
name = "pg1"
host = "127.0.0.1"
port = 5432

[[users]]
name = "app"
password = "secret"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!(c.health.rise, 2);
    assert_eq!(c.routing.read_your_writes, ReadYourWrites::Session);
    assert_eq!(c.listeners[0].role, ListenerRole::Auto);
    assert_eq!(c.backends[0].weight, 1);
    assert_eq!(c.users[0].auth, ClientAuthMethod::ScramSha256);
    assert!(c.users[0].scram.is_some());
    assert!(c.metrics_listen.is_none(), "metrics are off by default");
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let text = MINIMAL.replace("port = 5432", "port = 5432\nwieght = 3");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("wieght"), "{e}");
    assert!(e.contains("line 14"), "{e}");
}

#[test]
fn invalid_value_names_key_and_line() {
    let text = MINIMAL.replace("127.0.0.1:6432", "localhost");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("test.toml:5: listeners[0].address:"), "{e}");
}

#[test]
fn duplicate_backend_is_rejected() {
    let text = format!("{MINIMAL}\n[[backends]]\nname = \"pg1\"\nhost = \"h\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("backends[1].name"), "{e}");
}

#[test]
fn password_required_unless_trust() {
    let text = MINIMAL.replace("password = \"secret\"", "auth = \"md5\"");
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("users[0].password"));
    let text = MINIMAL.replace("password = \"secret\"", "auth = \"trust\"");
    assert!(parse(&text).is_ok());
}

#[test]
fn read_your_writes_window() {
    let text = format!(
        "{MINIMAL}\n[routing]\nread_your_writes = \"window\"\nread_your_writes_window_ms = 250\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(
        c.routing.read_your_writes,
        ReadYourWrites::Window(Duration::from_millis(250))
    );
    let text = format!("{MINIMAL}\n[routing]\nread_your_writes = \"forever\"\n");
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("routing.read_your_writes"));
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pgcast.toml");
    Config::load(&path).expect("examples/pgcast.toml must stay valid");
}
