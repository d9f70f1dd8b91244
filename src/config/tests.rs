use super::*;

pub(super) const MINIMAL: &str = r#"
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

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

/// Each (from, to, key, words): [`MINIMAL`] plus `base` with `from` replaced by `to` is
/// refused with an error that names the file, `key` and `words`.
pub(super) fn assert_refused(base: &str, cases: &[(&str, &str, &str, &str)]) {
    for (from, to, key, words) in cases {
        let text = format!("{MINIMAL}{}", base.replace(from, to));
        let e = parse(&text).expect_err(to).to_string();
        assert!(e.starts_with("test.toml:"), "{e}");
        assert!(e.contains(key) && e.contains(words), "{to}: {e}");
    }
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
    assert_eq!(c.users[0].password.as_deref(), Some("secret"));
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
fn replica_lag_return_percent_is_optional_and_checked() {
    assert_eq!(
        parse(MINIMAL).unwrap().health.replica_lag_return_percent,
        80
    );
    let text = format!("{MINIMAL}\n[health]\nreplica_lag_return_percent = 100\n");
    assert_eq!(parse(&text).unwrap().health.replica_lag_return_percent, 100);
    let text = format!("{MINIMAL}\n[health]\nrise = 1\nreplica_lag_return_percent = 0\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.starts_with("test.toml:19: health.replica_lag_return_percent: must be between 1 and 100"),
        "{e}"
    );
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

/// `key_preparation` picks the HMAC-SHA-256 keying a router needs (BIRD 2: rfc2104).
#[test]
fn ospf_hmac_key_preparation() {
    let with = |auth: &str| {
        format!("{MINIMAL}{OSPF}").replace(
            "auth = { type = \"md5\", key_id = 7, key = \"secret\" }",
            auth,
        )
    };
    let auth_of =
        |text: &str| parse(text).map(|c| c.ospf.expect("ospf").interfaces[0].auth.clone());
    let default = auth_of(&with(
        "auth = { type = \"hmac-sha-256\", key_id = 1, key = \"k\" }",
    ));
    assert!(matches!(
        default,
        Ok(OspfAuth::HmacSha256 {
            preparation: HmacKeyPreparation::Rfc5709,
            ..
        })
    ));
    let bird = auth_of(&with(
        "auth = { type = \"hmac-sha-256\", key_id = 1, key = \"k\", key_preparation = \"rfc2104\" }",
    ));
    assert!(matches!(
        bird,
        Ok(OspfAuth::HmacSha256 {
            preparation: HmacKeyPreparation::Rfc2104,
            ..
        })
    ));
    let e = auth_of(&with(
        "auth = { type = \"hmac-sha-256\", key_id = 1, key = \"k\", key_preparation = \"bird\" }",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ospf.interfaces.auth.key_preparation") && e.contains("rfc2104"),
        "{e}"
    );
}

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
    assert_eq!(c.drain.quiesce, Duration::from_secs(2));
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
    assert_refused(OSPF, &cases);
    let e = parse(&format!(
        "{MINIMAL}{}",
        OSPF.replace("hello_interval", "helo_interval")
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("helo_interval"), "{e}");
}

const PEERS: &str = r#"
[node]
id = 1

[[peers]]
id = 2
address = "198.18.1.95:5432"

[[peers]]
id = 3
address = "[2001:db8::3]:6432"
"#;

/// 1-based line, in `{MINIMAL}{PEERS}`, of the first occurrence of `needle` in `PEERS`.
fn peers_line(needle: &str) -> usize {
    let at = MINIMAL.len() + PEERS.find(needle).expect("needle in PEERS");
    format!("{MINIMAL}{PEERS}")[..at].matches('\n').count() + 1
}

#[test]
fn no_peers_by_default() {
    assert!(parse(MINIMAL).expect("valid").peers.is_empty());
}

#[test]
fn peers_are_validated_into_typed_values() {
    let c = parse(&format!("{MINIMAL}{PEERS}")).expect("valid");
    let want = [(2, "198.18.1.95:5432"), (3, "[2001:db8::3]:6432")].map(|(id, a)| Peer {
        id,
        address: a.parse().expect("address"),
    });
    assert_eq!(c.peers, want);
}

#[test]
fn peer_errors_name_key_and_line() {
    // (replace, with, key, words); the error must point at the line of the replacement.
    let cases = [
        ("id = 3", "id = 2", "peers[1].id", "duplicate peer id 2"),
        ("id = 3", "id = 1", "peers[1].id", "own node.id"),
        ("id = 3", "id = 256", "peers[1].id", "between 0 and 255"),
        ("id = 2", "id = -1", "peers[0].id", "between 0 and 255"),
        (
            "198.18.1.95:5432",
            "peer-b:5432",
            "peers[0].address",
            "IP:port",
        ),
        (
            "198.18.1.95:5432",
            "198.18.1.95",
            "peers[0].address",
            "IP:port",
        ),
        (
            "198.18.1.95:5432",
            "0.0.0.0:5432",
            "peers[0].address",
            "connected",
        ),
        (
            "198.18.1.95:5432",
            "198.18.1.95:0",
            "peers[0].address",
            "connected",
        ),
        (
            "198.18.1.95:5432",
            "127.0.0.1:6432",
            "peers[0].address",
            "listener of this balancer",
        ),
        (
            "[2001:db8::3]:6432",
            "198.18.1.95:5432",
            "peers[1].address",
            "already the address of peer 2",
        ),
    ];
    for (from, to, key, words) in cases {
        let text = format!("{MINIMAL}{}", PEERS.replacen(from, to, 1));
        let e = parse(&text).unwrap_err().to_string();
        let line = peers_line(from);
        assert!(
            e.starts_with(&format!("test.toml:{line}: {key}: ")),
            "{to}: {e}"
        );
        assert!(e.contains(words), "{to}: {e}");
    }
}

#[test]
fn peer_address_must_not_be_an_anycast_address() {
    let text = format!(
        "{MINIMAL}{OSPF}{}",
        PEERS.replace("198.18.1.95:5432", "198.18.2.0:5432")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("peers[0].address") && e.contains("anycast"),
        "{e}"
    );
}

#[test]
fn peer_keys_are_checked_by_serde() {
    for (from, to, words) in [
        ("id = 2\n", "id = 2\nport = 1\n", "port"),
        ("address = \"198.18.1.95:5432\"\n", "", "address"),
        ("id = 2\n", "", "id"),
        ("id = 2\n", "id = \"2\"\n", "test.toml"),
    ] {
        let text = format!("{MINIMAL}{}", PEERS.replacen(from, to, 1));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(words), "{to:?}: {e}");
    }
}

#[test]
fn peers_change_on_reload() {
    let old = parse(&format!("{MINIMAL}{PEERS}")).expect("valid");
    let new = parse(&format!(
        "{MINIMAL}{}",
        PEERS.replace("198.18.1.95", "198.18.1.96")
    ))
    .expect("valid");
    let (merged, report) = super::merge_reload(&old, new);
    assert!(report.restart_needed.is_empty(), "{report:?}");
    assert_eq!(report.applied, ["[[peer]]"]);
    assert_eq!(merged.peers[0].address.to_string(), "198.18.1.96:5432");
}

const BGP: &str = r#"
[bgp]
local_as = 4200000001
router_id = "198.18.1.94"
hold_time = 30

[[bgp.neighbors]]
address = "198.18.1.90"
remote_as = 65000
password = "s3cret"
med = 10
communities = ["65000:100", "graceful-shutdown"]
large_communities = ["65000:1:2"]
bfd = true

[[bgp.neighbors]]
address = "198.18.1.91"
remote_as = 4200000001
hold_time = 0
passive = true

[bfd]
desired_min_tx_ms = 100
"#;

#[test]
fn bgp_neighbors_and_bfd_timers() {
    let c = parse(&format!("{MINIMAL}{BGP}")).expect("valid");
    let b = c.bgp.expect("bgp configured");
    assert_eq!(b.local_as, 4_200_000_001);
    assert_eq!(b.listen, Some("0.0.0.0:179".parse().unwrap()));
    assert_eq!(b.graceful_shutdown, Duration::from_millis(1000));
    let n = &b.neighbors[0];
    assert_eq!((n.remote_as, n.port, n.hold_time), (65000, 179, 30));
    assert_eq!(n.password.as_deref(), Some("s3cret"));
    assert!(
        !format!("{n:?}").contains("s3cret"),
        "key must not be logged"
    );
    assert_eq!(n.med, Some(10));
    assert_eq!(
        n.communities,
        vec![
            StandardCommunity::new(65000, 100),
            StandardCommunity::GRACEFUL_SHUTDOWN
        ]
    );
    assert_eq!(n.large_communities[0].local_data_2, 2);
    assert!(n.bfd && !n.passive);
    let n = &b.neighbors[1];
    assert_eq!((n.hold_time, n.passive, n.local_pref), (0, true, 100));
    assert_eq!(c.bfd.desired_min_tx, Duration::from_millis(100));
    assert_eq!(c.bfd.required_min_rx, Duration::from_millis(300));
    assert_eq!(c.bfd.detect_multiplier, 3);
}

/// Every section a reload cannot apply is named and keeps its running value; the others are
/// named as applied; nothing that changed goes unmentioned.
#[test]
fn reload_names_what_it_applied_and_what_needs_a_restart() {
    let old = parse(&format!("{MINIMAL}{BGP}")).expect("valid");
    let same = parse(&format!("{MINIMAL}{BGP}")).expect("valid");
    let (_, report) = super::merge_reload(&old, same);
    assert_eq!(report, ReloadReport::default(), "nothing changed");

    let changed = format!("{MINIMAL}{BGP}")
        .replace("remote_as = 65000", "remote_as = 65100")
        .replace("desired_min_tx_ms = 100", "desired_min_tx_ms = 200")
        + "\n[drain]\nquiesce_ms = 500\n";
    let new = parse(&changed).expect("valid");
    let (merged, report) = super::merge_reload(&old, new);
    assert_eq!(report.restart_needed, ["[bgp]"], "{report:?}");
    assert_eq!(report.applied, ["[drain]", "[bfd]"], "{report:?}");
    let bgp = merged.bgp.expect("kept");
    assert_eq!(
        bgp.neighbors[0].remote_as, 65000,
        "[bgp] keeps its running value"
    );
    assert_eq!(merged.bfd.desired_min_tx, Duration::from_millis(200));
    assert_eq!(merged.drain.quiesce, Duration::from_millis(500));
}

#[test]
fn reload_of_partly_live_sections() {
    let old = parse(MINIMAL).expect("valid");
    let new = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_client_connections = 7\nstartup_timeout_ms = 1234\n"
    ))
    .expect("valid");
    let (merged, report) = super::merge_reload(&old, new);
    assert_eq!(report.restart_needed, ["[limits] max_client_connections"]);
    assert_eq!(report.applied, ["[limits]"]);
    assert_eq!(
        merged.limits.max_client_connections,
        old.limits.max_client_connections
    );
    assert_eq!(merged.limits.startup_timeout, Duration::from_millis(1234));
}

#[test]
fn prelogin_limits_default_validate_and_reload_live() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.limits.max_prelogin_connections, 2048);
    assert_eq!(c.limits.max_prelogin_per_source, 256);
    let e = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_prelogin_connections = 10\nmax_prelogin_per_source = 11\n"
    ))
    .expect_err("per source above the total");
    assert!(
        e.to_string().contains("limits.max_prelogin_per_source"),
        "{e}"
    );
    let e = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_prelogin_connections = 0\n"
    ))
    .expect_err("zero");
    assert!(
        e.to_string().contains("limits.max_prelogin_connections"),
        "{e}"
    );
    // Read at each accept: a reload applies them to the next connection.
    let new = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_prelogin_connections = 100\nmax_prelogin_per_source = 5\n"
    ))
    .expect("valid");
    let (merged, report) = super::merge_reload(&c, new);
    assert_eq!(report.applied, ["[limits]"]);
    assert!(report.restart_needed.is_empty(), "{report:?}");
    assert_eq!(merged.limits.max_prelogin_connections, 100);
    assert_eq!(merged.limits.max_prelogin_per_source, 5);
}

#[test]
fn bgp_connect_retry_back_off_is_capped() {
    let c = parse(&format!("{MINIMAL}{BGP}")).expect("valid");
    let n = &c.bgp.expect("bgp").neighbors[0];
    assert_eq!(n.connect_retry, Duration::from_millis(5000));
    assert_eq!(
        n.connect_retry_max,
        Duration::from_millis(5000),
        "never below the first retry"
    );
    let quick = format!("{MINIMAL}{BGP}").replace(
        "hold_time = 30\n",
        "hold_time = 30\nconnect_retry_ms = 1000\n",
    );
    let n = &parse(&quick).expect("valid").bgp.expect("bgp").neighbors[0];
    assert_eq!(
        n.connect_retry_max,
        Duration::from_secs(4),
        "the default cap"
    );
    let bad = quick.replace(
        "connect_retry_ms = 1000\n",
        "connect_retry_ms = 1000\nconnect_retry_max_ms = 500\n",
    );
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bgp.connect_retry_max_ms") && e.contains("at least"),
        "{e}"
    );
}

#[test]
fn bgp_errors_name_the_key_and_line() {
    let cases = [
        ("hold_time = 30", "hold_time = 2", "bgp.hold_time"),
        ("local_as = 4200000001", "local_as = 23456", "bgp.local_as"),
        (
            "\"65000:100\"",
            "\"65000:70000\"",
            "bgp.neighbors[0].communities",
        ),
        (
            "\"65000:1:2\"",
            "\"65000:1\"",
            "bgp.neighbors[0].large_communities",
        ),
        (
            "address = \"198.18.1.91\"",
            "address = \"198.18.1.90\"",
            "bgp.neighbors[1].address",
        ),
        ("router_id = \"198.18.1.94\"\n", "", "bgp.router_id"),
        ("passive = true", "passive = true\nlisten = 1", "listen"),
        (
            "med = 10",
            "med = 10\nnext_hop = \"0.0.0.0\"",
            "bgp.neighbors[0].next_hop",
        ),
        (
            "hold_time = 30",
            "hold_time = 30\nlisten = \"[::]:179\"",
            "bgp.listen",
        ),
        (
            "hold_time = 30",
            "hold_time = 30\ngraceful_shutdown_ms = 600000",
            "bgp.graceful_shutdown_ms",
        ),
        (
            "desired_min_tx_ms = 100",
            "desired_min_tx_ms = 5000000",
            "bfd.desired_min_tx_ms",
        ),
    ];
    for (from, to, key) in cases {
        let text = format!("{MINIMAL}{}", BGP.replacen(from, to, 1));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{from} -> {to}: {e}");
        assert!(e.contains("test.toml"), "{e}");
    }
    let text = format!(
        "{MINIMAL}{}",
        BGP.replace("[bgp]\n", "[bgp]\nlisten = \"off\"\n")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("bgp.neighbors[1].passive"), "{e}");
}

#[test]
fn server_connection_cap_is_validated_and_needs_a_restart() {
    let old = parse(MINIMAL).unwrap();
    assert_eq!(old.pool.max_server_connections, None, "no cap by default");
    assert_eq!(old.pool.checkout_timeout, Duration::from_millis(5000));
    let err = parse(&format!("{MINIMAL}\n[pool]\nmax_server_connections = 0\n")).unwrap_err();
    assert!(
        err.to_string().contains("pool.max_server_connections"),
        "{err}"
    );
    let new = parse(&format!(
        "{MINIMAL}\n[pool]\nmax_server_connections = 20\ncheckout_timeout_ms = 250\n"
    ))
    .unwrap();
    assert_eq!(new.pool.max_server_connections, Some(20));
    let (merged, report) = merge_reload(&old, new);
    assert_eq!(report.restart_needed, ["[pool] max_server_connections"]);
    assert_eq!(report.applied, ["[pool]"]);
    assert_eq!(merged.pool.max_server_connections, None);
    assert_eq!(merged.pool.checkout_timeout, Duration::from_millis(250));
}

#[test]
fn access_rules_parse_in_order() {
    let text = format!(
        "{MINIMAL}
[[access]]
address = \"127.0.0.1\"
user = [\"monitor\"]
method = \"trust\"

[[access]]
address = \"2001:db8::/32\"
listener = [\"rw\"]
database = [\"app\", \"all\"]
tls = false
method = \"md5\"

[[access]]
address = \"all\"
method = \"reject\"
"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.access.len(), 3);
    let r = &c.access[0];
    assert_eq!(r.network, Some("127.0.0.1/32".parse().unwrap()));
    assert_eq!(r.users, NameSet::Names(vec!["monitor".into()]));
    assert_eq!(r.listeners, NameSet::All);
    assert_eq!(r.method, AccessMethod::Trust);
    let r = &c.access[1];
    assert_eq!(r.network, Some("2001:db8::/32".parse().unwrap()));
    assert_eq!(r.listeners, NameSet::Names(vec!["rw".into()]));
    assert_eq!(r.databases, NameSet::All, "\"all\" in a list means all");
    assert_eq!(r.tls, Some(false));
    assert_eq!(r.method, AccessMethod::Md5);
    assert_eq!(c.access[2].network, None);
    assert_eq!(c.access[2].method, AccessMethod::Reject);
    assert!(c.warnings.is_empty(), "loopback trust: {:?}", c.warnings);
    assert!(parse(MINIMAL).unwrap().access.is_empty());
}

#[test]
fn access_errors_name_the_key_and_line() {
    let rule = |body: &str| format!("{MINIMAL}\n[[access]]\n{body}\n");
    let cases = [
        (
            "address = \"10.0.0.1/8\"\nmethod = \"md5\"",
            "test.toml:20: access[0].address: 10.0.0.1/8 has host bits set; write 10.0.0.0/8",
        ),
        (
            "address = \"10.0.0.300\"\nmethod = \"md5\"",
            "test.toml:20: access[0].address: \"10.0.0.300\" is not",
        ),
        (
            "address = \"all\"\nmethod = \"password\"",
            "test.toml:21: access[0].method: unknown method \"password\"",
        ),
        (
            "address = \"all\"\nlistener = [\"nope\"]\nmethod = \"md5\"",
            "test.toml:21: access[0].listener: no listener named \"nope\"",
        ),
        (
            "address = \"all\"\nuser = []\nmethod = \"md5\"",
            "test.toml:21: access[0].user: must list names",
        ),
        ("method = \"md5\"", "missing field `address`"),
        (
            "address = \"all\"\nmethod = \"md5\"\nhost = \"x\"",
            "unknown field `host`",
        ),
    ];
    for (body, want) in cases {
        let e = parse(&rule(body)).unwrap_err().to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn trust_beyond_loopback_is_a_warning() {
    let trust = |address: &str| {
        let text = format!("{MINIMAL}\n[[access]]\naddress = \"{address}\"\nmethod = \"trust\"\n");
        parse(&text).expect("valid").warnings
    };
    for loopback in ["127.0.0.0/8", "127.0.0.1", "::1"] {
        assert!(trust(loopback).is_empty(), "{loopback}");
    }
    for open in ["0.0.0.0/0", "10.0.0.0/8", "::/0", "all"] {
        let w = trust(open);
        assert_eq!(w.len(), 1, "{open}: {w:?}");
        assert!(
            w[0].starts_with("test.toml:21: access[0].method: \"trust\" lets anyone from"),
            "{}",
            w[0]
        );
    }
}

#[test]
fn a_user_may_have_a_stored_hash_instead_of_a_password() {
    let scram = postgres_protocol::password::scram_sha_256(b"pw");
    let md5 = postgres_protocol::password::md5(b"pw", "old");
    let users = format!(
        "\n[[users]]\nname = \"new\"\npassword_hash = \"{scram}\"\n\
         [[users]]\nname = \"old\"\nauth = \"md5\"\npassword_hash = \"{md5}\"\n"
    );
    let c = parse(&format!("{MINIMAL}{users}")).expect("valid");
    assert!(matches!(
        c.users[1].password_hash,
        Some(PasswordHash::Scram(_))
    ));
    assert_eq!(
        c.users[2].password_hash,
        Some(PasswordHash::Md5(md5.clone()))
    );
    assert_eq!(c.users[1].password, None);
    assert!(
        !format!("{:?}", c.users).contains(&md5[3..]),
        "hashes are never printed"
    );

    let user = |body: &str| format!("{MINIMAL}\n[[users]]\nname = \"u\"\n{body}\n");
    let cases = [
        (
            format!("password = \"x\"\npassword_hash = \"{md5}\""),
            "test.toml:22: users[1].password_hash: give either password or password_hash",
        ),
        (
            "password_hash = \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\"".to_string(),
            "test.toml:21: users[1].password_hash: not a SCRAM-SHA-256 verifier",
        ),
        (
            "password_hash = \"secret\"".to_string(),
            "test.toml:21: users[1].password_hash: expected a SCRAM-SHA-256 verifier",
        ),
        (
            format!("password_hash = \"{md5}\""),
            "test.toml:21: users[1].password_hash: an MD5 hash cannot check SCRAM-SHA-256",
        ),
        (
            "auth = \"md5\"".to_string(),
            "users[1].password: password or password_hash required",
        ),
    ];
    for (body, want) in cases {
        let e = parse(&user(&body)).unwrap_err().to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn auth_query_defaults_and_errors() {
    let c = parse(&format!(
        "{MINIMAL}\n[health]\ndatabase = \"app\"\n[auth_query]\nquery = \"SELECT f($1)\"\n"
    ))
    .expect("valid");
    let aq = c.auth_query.expect("configured");
    assert_eq!(aq.database, "app", "the health database by default");
    assert_eq!(aq.ttl, Duration::from_secs(60));
    assert!(parse(MINIMAL).unwrap().auth_query.is_none());
    let e = parse(&format!("{MINIMAL}\n[auth_query]\nquery = \"SELECT 1\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("test.toml:19: auth_query.query: required"),
        "{e}"
    );
}
