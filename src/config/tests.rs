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

const OSPF: &str = r#"
[ospf]
router_id = "198.18.1.94"

[[ospf.interfaces]]
name = "eth0"
hello_interval = 1
dead_interval = 3
auth = { type = "md5", key_id = 7, key = "secret" }

[[prefix]]
address = "198.18.2.0/32"
listeners = ["rw"]
require = "read-write"
when_unhealthy = "last-resort"
"#;

#[test]
fn ospf_and_prefix_sections_are_validated_into_typed_values() {
    let c = parse(&format!("{MINIMAL}{OSPF}")).expect("valid");
    let o = c.ospf.expect("ospf configured");
    assert_eq!(o.router_id, std::net::Ipv4Addr::new(198, 18, 1, 94));
    assert_eq!(o.area, std::net::Ipv4Addr::UNSPECIFIED);
    assert_eq!(o.min_ls_interval, Duration::from_secs(1));
    let i = &o.interfaces[0];
    assert_eq!((i.hello_interval, i.dead_interval, i.priority), (1, 3, 0));
    assert_eq!(i.network, OspfNetwork::Broadcast);
    assert_eq!(
        i.auth,
        OspfAuth::Md5 {
            key_id: 7,
            key: "secret".into()
        }
    );
    assert!(
        !format!("{:?}", i.auth).contains("secret"),
        "keys stay out of logs"
    );
    let p = &c.prefixes[0];
    assert_eq!((p.prefix_len, p.cost, p.last_resort_cost), (32, 10, 65535));
    assert_eq!(p.require, Requirement::ReadWrite);
    assert_eq!(p.when_unhealthy, WhenUnhealthy::LastResort);
    assert_eq!(c.drain.withdraw_grace, Duration::from_secs(2));
}

#[test]
fn ospf_and_prefix_errors_name_key_and_line() {
    let cases = [
        (
            "listeners = [\"rw\"]",
            "listeners = [\"nope\"]",
            "prefix.listeners",
            "nope",
        ),
        ("198.18.2.0/32", "198.18.2.0/24", "prefix.address", "/32"),
        (
            "dead_interval = 3",
            "dead_interval = 1",
            "ospf.interfaces.dead_interval",
            "longer",
        ),
        (
            "type = \"md5\"",
            "type = \"sha1\"",
            "ospf.interfaces.auth.type",
            "sha1",
        ),
        (
            "router_id = \"198.18.1.94\"",
            "router_id = \"x\"",
            "ospf.router_id",
            "IPv4",
        ),
    ];
    for (from, to, key, words) in cases {
        let text = format!("{MINIMAL}{}", OSPF.replace(from, to));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:"), "{e}");
        assert!(e.contains(key) && e.contains(words), "{to}: {e}");
    }
    let e = parse(&format!(
        "{MINIMAL}{}",
        OSPF.replace("hello_interval", "helo_interval")
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("helo_interval"), "{e}");
}
