//! A stand-in PostgreSQL server for proxy-bound benchmarks (bench/proxy-cpu): it answers at
//! once, with fixed rows, so that the proxy in front of it, not the server, is the bottleneck.
//!
//! `pg_standin [ADDR]` (default 127.0.0.1:5432) accepts any user with trust authentication and
//! answers what `pgbench -n -S` sends (simple, extended and prepared), pgbench's start-up
//! queries, pgcast's health probe and catalog query, and session commands (SET, RESET,
//! DISCARD ALL, BEGIN/COMMIT). Any other statement gets a plausible generic answer: a SELECT
//! one int4 row, anything else its command tag. Nothing is stored; no SQL is parsed beyond a
//! few prefixes. `PG_STANDIN_LOG=1` prints every statement (to see what a client sends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Larger messages are refused: a benchmark never sends them, and a garbled length must not
/// make the stand-in allocate gigabytes.
const MAX_MESSAGE: usize = 1 << 20;
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
const PROTOCOL_3: u32 = 196608;

// Type OIDs (pg_type): tokio-postgres checks them against the Rust types it decodes into.
const BOOL: u32 = 16;
const CHAR: u32 = 18;
const INT8: u32 = 20;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const FLOAT8: u32 = 701;

/// One field of a fixed row, encoded in text or binary format as the client asks.
#[derive(Clone, Copy)]
enum Val {
    Null,
    Bool(bool),
    Int4(i32),
    Int8(i64),
    Text(&'static str),
}

/// A fixed answer: columns (name, type), rows, command tag and its effect on the transaction.
struct Shape {
    cols: &'static [(&'static str, u32)],
    rows: &'static [&'static [Val]],
    tag: &'static str,
    tx: Option<u8>,
}

const fn rows(cols: &'static [(&'static str, u32)], rows: &'static [&'static [Val]]) -> Shape {
    let tag = if rows.is_empty() {
        "SELECT 0"
    } else {
        "SELECT 1"
    };
    Shape {
        cols,
        rows,
        tag,
        tx: None,
    }
}
const fn command(tag: &'static str, tx: Option<u8>) -> Shape {
    Shape {
        cols: &[],
        rows: &[],
        tag,
        tx,
    }
}

/// pgcast's health probe (src/health/checker.rs): a primary, at a fixed WAL position.
const PROBE: Shape = rows(
    &[
        ("pg_is_in_recovery", BOOL),
        ("text", TEXT),
        ("text", TEXT),
        ("float8", FLOAT8),
    ],
    &[&[
        Val::Bool(false),
        Val::Text("0/3000000"),
        Val::Null,
        Val::Null,
    ]],
);
/// pgcast's catalog query (src/proxy/catalog_refresh.rs): no functions at all.
const FUNCTIONS: Shape = rows(
    &[("proname", TEXT), ("bool_or", BOOL), ("bool_and", BOOL)],
    &[],
);
/// pgbench's scale: `select count(*) from pgbench_branches`.
const BRANCHES: Shape = rows(&[("count", INT8)], &[&[Val::Int8(1)]]);
/// pgbench's partition detection: pgbench_accounts is found first in the search path and is
/// not partitioned (NULL strategy, 0 partitions); no row would make pgbench stop.
const PARTITIONS: Shape = rows(
    &[("n", INT4), ("partstrat", CHAR), ("count", INT8)],
    &[&[Val::Int4(1), Val::Null, Val::Int8(0)]],
);
/// pgbench -S's statement, and any other SELECT: one int4 row.
const SELECT: Shape = rows(&[("?column?", INT4)], &[&[Val::Int4(1)]]);
const SHOW: Shape = rows(&[("setting", TEXT)], &[&[Val::Text("")]]);
const BEGIN: Shape = command("BEGIN", Some(b'T'));
const COMMIT: Shape = command("COMMIT", Some(b'I'));
const ROLLBACK: Shape = command("ROLLBACK", Some(b'I'));

/// What a statement gets. Other statements answer with their first word as the tag.
enum Answer {
    Fixed(&'static Shape),
    Tag(String),
    Empty,
}

/// Classifies a statement by its start (and two substrings pgbench and pgcast are known by).
/// Done once per Parse, and per simple Query, without allocating on pgbench's statements.
fn classify(sql: &str) -> Answer {
    let s = sql.trim_start();
    let word_end = s
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(s.len());
    let word = &s[..word_end];
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    let fixed = |shape: &'static Shape| Answer::Fixed(shape);
    if word.is_empty() {
        return if s
            .trim_matches(|c: char| c == ';' || c.is_whitespace())
            .is_empty()
        {
            Answer::Empty
        } else {
            Answer::Tag("SELECT 0".into())
        };
    }
    if is("select") || is("with") || is("values") || is("table") {
        if s.contains("pg_is_in_recovery()") && s.contains("::float8") {
            fixed(&PROBE)
        } else if s.contains("FROM pg_proc GROUP BY proname") {
            fixed(&FUNCTIONS)
        } else if s.contains("pg_partitioned_table") {
            fixed(&PARTITIONS)
        } else if s.contains("count(*) from pgbench_branches") {
            fixed(&BRANCHES)
        } else {
            fixed(&SELECT)
        }
    } else if is("begin") || is("start") {
        fixed(&BEGIN)
    } else if is("commit") || is("end") {
        fixed(&COMMIT)
    } else if is("rollback") || is("abort") {
        fixed(&ROLLBACK)
    } else if is("show") {
        fixed(&SHOW)
    } else if is("discard") {
        // PostgreSQL's tag names what was discarded: "DISCARD ALL", "DISCARD PLANS", ...
        Answer::Tag(s.trim_end_matches([';', ' ', '\n']).to_ascii_uppercase())
    } else if is("deallocate") {
        let rest = s[word_end..].trim_matches(|c: char| c == ';' || c.is_whitespace());
        let all = rest.eq_ignore_ascii_case("all");
        Answer::Tag(if all { "DEALLOCATE ALL" } else { "DEALLOCATE" }.into())
    } else if is("insert") {
        Answer::Tag("INSERT 0 0".into())
    } else if is("update") || is("delete") {
        Answer::Tag(format!("{} 0", word.to_ascii_uppercase()))
    } else {
        Answer::Tag(word.to_ascii_uppercase())
    }
}

/// Parameters of a statement: the highest `$N` in it (its Describe announces that many int4
/// parameters, unless Parse gave their types: pgbench's only parameter is an int4 key).
fn param_count(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut max = 0;
    for (i, _) in sql.match_indices('$') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
            max = max.max(n);
        }
    }
    max
}

struct Statement {
    answer: Answer,
    params: Vec<u32>,
}

/// A bound portal: its statement's answer and the result formats asked for.
struct Portal {
    statement: String,
    formats: Vec<i16>,
}

/// A backend message under construction: type byte, length patched in by `end`.
fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    out.extend_from_slice(&[0; 4]);
    out.len() - 4
}
fn end(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}
fn simple(out: &mut Vec<u8>, tag: u8) {
    out.extend_from_slice(&[tag, 0, 0, 0, 4]);
}
fn ready(out: &mut Vec<u8>, status: u8) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
}
fn complete(out: &mut Vec<u8>, tag: &str) {
    let at = begin(out, b'C');
    cstr(out, tag);
    end(out, at);
}
fn error(out: &mut Vec<u8>, code: &str, message: &str) {
    let at = begin(out, b'E');
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        out.push(field);
        cstr(out, value);
    }
    out.push(0);
    end(out, at);
}
fn row_description(out: &mut Vec<u8>, shape: &Shape, formats: &[i16]) {
    let at = begin(out, b'T');
    out.extend_from_slice(&(shape.cols.len() as u16).to_be_bytes());
    for (i, (name, oid)) in shape.cols.iter().enumerate() {
        cstr(out, name);
        out.extend_from_slice(&[0; 6]); // table OID, column number: none
        out.extend_from_slice(&oid.to_be_bytes());
        let size: i16 = match *oid {
            BOOL | CHAR => 1,
            INT4 => 4,
            INT8 | FLOAT8 => 8,
            _ => -1,
        };
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
        out.extend_from_slice(&format_of(formats, i).to_be_bytes());
    }
    end(out, at);
}
/// The format of column `i`: none given → text, one → all columns, else per column.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}
fn data_rows(out: &mut Vec<u8>, shape: &Shape, formats: &[i16]) {
    for row in shape.rows {
        let at = begin(out, b'D');
        out.extend_from_slice(&(row.len() as u16).to_be_bytes());
        for (i, v) in row.iter().enumerate() {
            let binary = format_of(formats, i) == 1;
            let mut put = |bytes: &[u8]| {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            };
            match (*v, binary) {
                (Val::Null, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
                (Val::Bool(b), true) => put(&[b as u8]),
                (Val::Bool(b), false) => put(if b { b"t" } else { b"f" }),
                (Val::Int4(n), true) => put(&n.to_be_bytes()),
                (Val::Int4(n), false) => put(n.to_string().as_bytes()),
                (Val::Int8(n), true) => put(&n.to_be_bytes()),
                (Val::Int8(n), false) => put(n.to_string().as_bytes()),
                (Val::Text(t), _) => put(t.as_bytes()),
            }
        }
        end(out, at);
    }
}

/// The answer to a statement: RowDescription only for a simple Query (an extended client
/// gets it from Describe), then its rows and tag. Returns the new transaction status, if the
/// statement changes it.
fn execute(answer: &Answer, formats: &[i16], describe: bool, out: &mut Vec<u8>) -> Option<u8> {
    match answer {
        Answer::Fixed(shape) => {
            if describe && !shape.cols.is_empty() {
                row_description(out, shape, formats);
            }
            data_rows(out, shape, formats);
            complete(out, shape.tag);
            shape.tx
        }
        Answer::Tag(tag) => {
            complete(out, tag);
            None
        }
        Answer::Empty => {
            simple(out, b'I');
            None
        }
    }
}

/// One client connection: the transaction status, prepared statements and portals.
struct Conn {
    status: u8,
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
    /// After an error in an extended-protocol batch, messages are skipped up to Sync.
    skipping: bool,
    log: bool,
}

impl Conn {
    /// Answers one frontend message (type, body) into `out`; false: close the connection.
    fn message(&mut self, tag: u8, mut body: &[u8], out: &mut Vec<u8>) -> Option<bool> {
        if self.skipping && tag != b'S' {
            return Some(true);
        }
        match tag {
            b'Q' => {
                let sql = take_str(&mut body)?;
                self.trace(sql);
                if let Some(status) = execute(&classify(sql), &[], true, out) {
                    self.status = status;
                }
                ready(out, self.status);
            }
            b'P' => {
                let name = take_str(&mut body)?.to_owned();
                let sql = take_str(&mut body)?;
                self.trace(sql);
                let n = take_u16(&mut body)? as usize;
                let mut params = (0..n)
                    .map(|_| take_u32(&mut body))
                    .collect::<Option<Vec<_>>>()?;
                params.resize(params.len().max(param_count(sql)), INT4);
                for p in params.iter_mut().filter(|p| **p == 0) {
                    *p = INT4;
                }
                let answer = classify(sql);
                self.statements.insert(name, Statement { answer, params });
                simple(out, b'1');
            }
            b'B' => {
                let portal = take_str(&mut body)?.to_owned();
                let statement = take_str(&mut body)?.to_owned();
                // Parameter formats and values are not needed: the answer does not use them.
                let n = take_u16(&mut body)? as usize;
                body = body.get(n * 2..)?;
                for _ in 0..take_u16(&mut body)? {
                    let len = take_u32(&mut body)? as i32;
                    body = body.get(len.max(0) as usize..)?;
                }
                let n = take_u16(&mut body)? as usize;
                let formats = (0..n)
                    .map(|_| take_u16(&mut body).map(|f| f as i16))
                    .collect::<Option<_>>()?;
                if !self.statements.contains_key(&statement) {
                    return Some(self.fail(out, "26000", "prepared statement does not exist"));
                }
                self.portals.insert(portal, Portal { statement, formats });
                simple(out, b'2');
            }
            b'D' => {
                let kind = *body.first()?;
                body = &body[1..];
                let name = take_str(&mut body)?;
                let found = if kind == b'S' {
                    self.statements.get(name).map(|s| {
                        let at = begin(out, b't');
                        out.extend_from_slice(&(s.params.len() as u16).to_be_bytes());
                        s.params
                            .iter()
                            .for_each(|p| out.extend_from_slice(&p.to_be_bytes()));
                        end(out, at);
                        (&s.answer, &[][..])
                    })
                } else {
                    self.portals.get(name).and_then(|p| {
                        let s = self.statements.get(&p.statement)?;
                        Some((&s.answer, &p.formats[..]))
                    })
                };
                match found {
                    Some((Answer::Fixed(shape), formats)) if !shape.cols.is_empty() => {
                        row_description(out, shape, formats)
                    }
                    Some(_) => simple(out, b'n'),
                    None => return Some(self.fail(out, "26000", "no such statement or portal")),
                }
            }
            b'E' => {
                let name = take_str(&mut body)?;
                let found = self.portals.get(name).and_then(|p| {
                    let s = self.statements.get(&p.statement)?;
                    Some(execute(&s.answer, &p.formats, false, out))
                });
                match found {
                    Some(Some(status)) => self.status = status,
                    Some(None) => {}
                    None => return Some(self.fail(out, "34000", "portal does not exist")),
                }
            }
            b'S' => {
                self.skipping = false;
                self.portals.remove("");
                ready(out, self.status);
            }
            b'C' => {
                let kind = *body.first()?;
                body = &body[1..];
                let name = take_str(&mut body)?;
                if kind == b'S' {
                    self.statements.remove(name);
                } else {
                    self.portals.remove(name);
                }
                simple(out, b'3');
            }
            b'H' => {} // Flush: the batch's answers are written when its input is used up.
            b'X' => return Some(false),
            _ => {
                error(out, "08P01", "unsupported message type");
                return Some(false);
            }
        }
        Some(true)
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) -> bool {
        error(out, code, message);
        self.skipping = true;
        if self.status == b'T' {
            self.status = b'E';
        }
        true
    }

    fn trace(&self, sql: &str) {
        if self.log {
            eprintln!("pg_standin: {sql}");
        }
    }
}

fn take_str<'a>(body: &mut &'a [u8]) -> Option<&'a str> {
    let nul = body.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&body[..nul]).ok()?;
    *body = &body[nul + 1..];
    Some(s)
}
fn take_u16(body: &mut &[u8]) -> Option<u16> {
    let v = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    *body = &body[2..];
    Some(v)
}
fn take_u32(body: &mut &[u8]) -> Option<u32> {
    let v = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    *body = &body[4..];
    Some(v)
}

/// Reads until `buf` holds at least `n` bytes; false at end of stream.
async fn fill(sock: &mut TcpStream, buf: &mut BytesMut, n: usize) -> std::io::Result<bool> {
    while buf.len() < n {
        if sock.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

static NEXT_PID: AtomicI32 = AtomicI32::new(1000);

/// Serves one client connection until it terminates or goes away (public: tests/standin.rs
/// runs the stand-in inside its own process).
pub async fn serve(mut sock: TcpStream, log: bool) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    // Start-up: SSL and GSS encryption are declined ('N'), a CancelRequest is ignored.
    loop {
        if !fill(&mut sock, &mut buf, 8).await? {
            return Ok(());
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(8..=MAX_MESSAGE).contains(&len) || !fill(&mut sock, &mut buf, len).await? {
            return Ok(());
        }
        let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        buf.advance(len);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => sock.write_all(b"N").await?,
            PROTOCOL_3 => break,
            // Nothing runs long enough to cancel: the request is read and the connection closed.
            CANCEL_REQUEST => return Ok(()),
            // Another protocol version, or garbage.
            _ => return Ok(()),
        }
    }
    // Trust: AuthenticationOk and what PostgreSQL 15 reports after it.
    out.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    for (name, value) in [
        ("server_version", "15.99 (pg_standin)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "on"),
        ("session_authorization", "postgres"),
        ("application_name", ""),
        ("default_transaction_read_only", "off"),
        ("in_hot_standby", "off"),
    ] {
        let at = begin(&mut out, b'S');
        cstr(&mut out, name);
        cstr(&mut out, value);
        end(&mut out, at);
    }
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    out.extend_from_slice(&[b'K', 0, 0, 0, 12]);
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&pid.wrapping_mul(0x5bd1e995).to_be_bytes());
    ready(&mut out, b'I');
    sock.write_all(&out).await?;
    out.clear();

    let mut conn = Conn {
        status: b'I',
        statements: HashMap::new(),
        portals: HashMap::new(),
        skipping: false,
        log,
    };
    // Every complete message in what one read brought is answered, then all answers are
    // written at once: one read and one write per request batch.
    loop {
        let mut open = true;
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if !(4..=MAX_MESSAGE).contains(&len) {
                return Ok(());
            }
            if buf.len() < len + 1 {
                break;
            }
            let msg = buf.split_to(len + 1);
            match conn.message(msg[0], &msg[5..], &mut out) {
                Some(true) => {}
                Some(false) => {
                    open = false;
                    break;
                }
                None => {
                    error(&mut out, "08P01", "malformed message");
                    open = false;
                    break;
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if !open || sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let log = std::env::var_os("PG_STANDIN_LOG").is_some_and(|v| v == "1");
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("pg_standin: listening on {}", listener.local_addr()?);
    loop {
        let (sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client that goes away mid-message is its own business, not an error here.
            let _ = serve(sock, log).await;
        });
    }
}
