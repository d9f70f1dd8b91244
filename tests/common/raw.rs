//! A bare protocol-level client for what drivers hide: pipelines without Sync, named Parse,
//! counting the ErrorResponses a client receives. MD5 authentication only (pgcast's md5 user).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One backend message: its tag and body.
pub type Msg = (u8, Vec<u8>);

pub struct Raw {
    s: TcpStream,
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstr(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

/// A CopyData message.
pub fn copy_data(data: &[u8]) -> Vec<u8> {
    frame(b'd', data)
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind of `stmt` to the unnamed portal with text parameters.
pub fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &b)
}

pub fn describe_portal() -> Vec<u8> {
    frame(b'D', b"P\0")
}

pub fn execute() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    b.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

pub fn terminate() -> Vec<u8> {
    frame(b'X', &[])
}

/// SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    field(body, b'C')
}

pub fn field(body: &[u8], code: u8) -> String {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let end = body[i + 1..].iter().position(|b| *b == 0).unwrap() + i + 1;
        if body[i] == code {
            return String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    String::new()
}

/// First column of a DataRow, as text.
pub fn first_value(body: &[u8]) -> String {
    let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
    String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned()
}

impl Raw {
    pub fn connect(port: u16, user: &str, password: &str, database: &str) -> Raw {
        Raw::connect_greeted(port, user, password, database).0
    }

    /// Logs in and also returns what the server said before its first ReadyForQuery
    /// (ParameterStatus, BackendKeyData).
    pub fn connect_greeted(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> (Raw, Vec<Msg>) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = Raw { s };
        let mut b = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", database)] {
            cstr(&mut b, k);
            cstr(&mut b, v);
        }
        b.push(0);
        let mut startup = ((b.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend_from_slice(&b);
        r.send(&startup);
        let mut greeting = Vec::new();
        loop {
            let (tag, body) = r.read().expect("startup reply");
            match tag {
                b'R' if body[..4] == 5i32.to_be_bytes() => {
                    let salt: [u8; 4] = body[4..8].try_into().unwrap();
                    let resp = pgcast::proxy::auth::md5_client_response(user, password, salt);
                    let mut p = Vec::new();
                    cstr(&mut p, &resp);
                    r.send(&frame(b'p', &p));
                }
                b'Z' => return (r, greeting),
                b'E' => panic!("login failed: {}", field(&body, b'M')),
                _ => greeting.push((tag, body)),
            }
        }
    }

    /// The socket, for a second thread (e.g. one that writes while this one reads).
    pub fn stream(&self) -> TcpStream {
        self.s.try_clone().expect("clone the socket")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// The next message; None at EOF or after the read timeout.
    pub fn read(&mut self) -> Option<Msg> {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages up to and including the next ReadyForQuery (or until EOF/timeout).
    pub fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Every message until EOF or the read timeout.
    pub fn drain(&mut self, timeout: Duration) -> Vec<Msg> {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            out.push(m);
        }
        out
    }

    /// A simple query's messages, up to ReadyForQuery.
    pub fn simple(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&query(sql));
        self.until_ready()
    }
}

/// The SQLSTATEs of the errors among `msgs`.
pub fn errors(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.0 == b'E')
        .map(|m| sqlstate(&m.1))
        .collect()
}

/// The (name, value) of every ParameterStatus among `msgs`.
pub fn parameters(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.0 == b'S')
        .filter_map(|m| {
            let mut parts = m.1.split(|b| *b == 0);
            let name = String::from_utf8_lossy(parts.next()?).into_owned();
            let value = String::from_utf8_lossy(parts.next()?).into_owned();
            Some((name, value))
        })
        .collect()
}

/// The (pid, secret) of the BackendKeyData among `msgs`.
pub fn backend_key(msgs: &[Msg]) -> Option<(i32, i32)> {
    let m = msgs.iter().find(|m| m.0 == b'K')?;
    let word = |at: usize| Some(i32::from_be_bytes(m.1.get(at..at + 4)?.try_into().ok()?));
    Some((word(0)?, word(4)?))
}

/// The first value of the first DataRow among `msgs`.
pub fn value(msgs: &[Msg]) -> Option<String> {
    msgs.iter().find(|m| m.0 == b'D').map(|m| first_value(&m.1))
}
