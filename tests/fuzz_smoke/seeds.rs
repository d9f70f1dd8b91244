//! The seed corpus of every fuzz target, built from the captured fixtures (`tests/fixtures/`)
//! and from our own encoders. `fuzz/seeds/<target>/` holds exactly these files; the suite
//! checks that, and `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_smoke committed_seeds` rewrites
//! them.
//!
//! Targets with a mode byte (see `pgcast::fuzz_entry`) get each input once per useful mode.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use pgcast::anycast::bgp::message::{Capabilities, Message, Open};
use pgcast::anycast::bgp::update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateEncoding,
};
use pgcast::anycast::ospf::auth::{decode_packet, AuthConfig};
use pgcast::anycast::ospf::packet::{PacketBody, HEADER_LEN};
use pgcast::proxy::message as wire;

/// One seed: its file name and bytes.
pub type Seed = (String, Vec<u8>);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn seed_dir(target: &str) -> PathBuf {
    repo().join("fuzz/seeds").join(target)
}

/// The captured fixtures of one protocol, sorted by name.
fn fixtures(protocol: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("tests/fixtures").join(protocol);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("fixture directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .map(|path| {
            let name = file_stem(&path);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("fixture names are UTF-8")
        .to_owned()
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

pub fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "startup" => startup(),
        "message" => message(),
        "sasl" => sasl(),
        "classify" => classify(),
        "ospf" => ospf(),
        "bgp" => bgp(),
        "bfd" => fixtures("bfd"),
        other => panic!("no seeds for target {other}"),
    }
}

fn startup() -> Vec<Seed> {
    let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let mut psql = BytesMut::new();
    wire::write_startup(
        &mut psql,
        &params(&[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ]),
    );
    let mut ssl_then_startup = BytesMut::new();
    ssl_then_startup.put_i32(8);
    ssl_then_startup.put_u32(wire::SSL_REQUEST_CODE);
    wire::write_startup(&mut ssl_then_startup, &params(&[("user", "u")]));
    let mut gss = BytesMut::new();
    gss.put_i32(8);
    gss.put_u32(wire::GSSENC_REQUEST_CODE);
    let mut cancel = BytesMut::new();
    wire::write_cancel_request(&mut cancel, 4242, -7);
    vec![
        ("psql".to_owned(), psql.to_vec()),
        ("ssl-then-startup".to_owned(), ssl_then_startup.to_vec()),
        ("gssenc".to_owned(), gss.to_vec()),
        ("cancel".to_owned(), cancel.to_vec()),
    ]
}

fn message() -> Vec<Seed> {
    let mut simple = BytesMut::new();
    wire::write_query(&mut simple, "SELECT 1");
    wire::write_terminate(&mut simple);

    let mut extended = BytesMut::new();
    wire::write_message(&mut extended, b'P', |b| {
        wire::put_cstr(b, "s1");
        wire::put_cstr(b, "SELECT $1");
        b.put_i16(0);
    });
    wire::write_message(&mut extended, b'B', |b| {
        wire::put_cstr(b, "");
        wire::put_cstr(b, "s1");
        b.put_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
    });
    wire::write_message(&mut extended, b'D', |b| {
        b.put_u8(b'P');
        wire::put_cstr(b, "");
    });
    wire::write_message(&mut extended, b'E', |b| {
        wire::put_cstr(b, "");
        b.put_i32(0);
    });
    wire::write_message(&mut extended, b'C', |b| {
        b.put_u8(b'S');
        wire::put_cstr(b, "s1");
    });
    wire::write_message(&mut extended, b'S', |_| {});

    let mut backend = BytesMut::new();
    wire::write_auth_request(&mut backend, 0, &[]);
    wire::write_backend_key_data(&mut backend, 17, 99);
    wire::write_error(
        &mut backend,
        "ERROR",
        "42P01",
        "relation \"t\" does not exist",
    );
    wire::write_ready_for_query(&mut backend, b'I');

    let mut auth = BytesMut::new();
    wire::write_sasl_initial(&mut auth, "SCRAM-SHA-256", b"n,,n=,r=abc");
    wire::write_password(&mut auth, b"md5f0f0\0");

    let mut out = Vec::new();
    for (name, bytes) in [
        ("simple", simple),
        ("extended", extended),
        ("backend", backend),
        ("auth", auth),
    ] {
        out.push((name.to_owned(), with_mode(0, &bytes)));
    }
    out.push((
        "extended-small-limit".to_owned(),
        with_mode(1, &out[1].1[1..]),
    ));
    out
}

/// RFC 7677 §3's example exchange, which the sasl target's server takes (and the one client
/// final message that succeeds there), and an MD5 response.
fn sasl() -> Vec<Seed> {
    let client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let mut rfc = BytesMut::new();
    wire::put_cstr(&mut rfc, "SCRAM-SHA-256");
    rfc.put_i32(client_first.len() as i32);
    rfc.put_slice(client_first);
    rfc.put_slice(client_final);
    let md5 = pgcast::proxy::auth::md5_client_response("user", "pencil", [1, 2, 3, 4]);
    vec![
        ("rfc7677".to_owned(), rfc.to_vec()),
        ("md5".to_owned(), md5.into_bytes()),
    ]
}

fn classify() -> Vec<Seed> {
    [
        "SELECT 1",
        "SELECT a, count(*) FROM t JOIN u USING (id) WHERE b > 2 GROUP BY a ORDER BY 2 LIMIT 5",
        "SELECT * FROM t FOR UPDATE",
        "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
        "INSERT INTO t (a, b) VALUES (1, 'x') ON CONFLICT (a) DO NOTHING",
        "BEGIN READ ONLY; SELECT now(); COMMIT",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "SET search_path = app, public; RESET ALL; DISCARD ALL",
        "SELECT nextval('s'), random(), lower('X'), f(1), g(2), t.f FROM t",
        "SELECT set_config('a.b', 'c', false), pg_is_in_recovery()",
        "COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)",
        "COPY t FROM STDIN",
        "DO $$ BEGIN PERFORM 1; END $$",
        "PREPARE p (int) AS SELECT $1; EXECUTE p(1); DEALLOCATE p",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1; FETCH 10 FROM c; MOVE NEXT IN c; CLOSE c",
        "CREATE TEMP TABLE tt AS SELECT 1; SELECT * INTO TEMP x FROM t",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT TRIM(BOTH 'x' FROM y), U&'\\0041', E'a\\'b', $1 /* c */ -- d",
        "LISTEN ch; NOTIFY ch, 'x'; UNLISTEN *; LOCK TABLE t IN ACCESS SHARE MODE",
        "SHOW transaction_read_only; VALUES (1), (2); SELECT * FROM pg_stat_activity",
    ]
    .iter()
    .enumerate()
    .map(|(i, sql)| (format!("sql-{i:02}"), sql.as_bytes().to_vec()))
    .collect()
}

fn ospf() -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, bytes) in fixtures("ospf") {
        out.push((format!("{name}-mode0"), with_mode(0, &bytes)));
        out.push((format!("{name}-mode1"), with_mode(1, &bytes)));
        let packet = decode_packet(&bytes, &AuthConfig::null())
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        out.push((
            format!("{name}-mode3"),
            with_mode(3, &bytes[HEADER_LEN..len]),
        ));
        if let PacketBody::LsUpdate(lsas) = packet.packet.body {
            for (i, lsa) in lsas.iter().enumerate() {
                out.push((format!("{name}-lsa{i}-mode2"), with_mode(2, lsa.raw())));
            }
        }
    }
    out
}

fn bgp() -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, bytes) in fixtures("bgp") {
        // The OPENs and UPDATEs are read as a 4-octet-AS session would read them.
        out.push((format!("{name}-mode1"), with_mode(1, &bytes)));
        out.push((format!("{name}-mode3"), with_mode(3, &bytes[18..])));
    }
    let announce = Update::announce(
        &UpdateEncoding {
            local_as: 4_200_000_001,
            ibgp: true,
            four_octet_as: false,
            next_hop: Ipv4Addr::new(10, 0, 0, 1),
            next_hop_ipv6: None,
        },
        &RouteAttributes {
            med: Some(10),
            local_pref: Some(200),
            communities: vec![
                StandardCommunity(65000 << 16 | 1),
                StandardCommunity::NO_EXPORT,
            ],
            large_communities: vec![LargeCommunity {
                global_admin: 4_200_000_001,
                local_data_1: 1,
                local_data_2: 2,
            }],
        },
        &[Prefix::host(Ipv4Addr::new(192, 0, 2, 1).into())],
    )
    .expect("the seed UPDATE builds");
    let open = Message::Open(Open {
        asn: 65001,
        hold_time: 9,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            four_octet_as: Some(65001),
            mp_ipv4_unicast: true,
            mp_ipv6_unicast: true,
            route_refresh: true,
            mp_other_families: false,
        },
    });
    let mut stream = BytesMut::new();
    open.encode(&mut stream);
    for update in announce {
        Message::Update(update).encode(&mut stream);
    }
    Message::Keepalive.encode(&mut stream);
    out.push((
        "ours-open-update-keepalive-mode0".to_owned(),
        with_mode(0, &stream),
    ));
    out
}
