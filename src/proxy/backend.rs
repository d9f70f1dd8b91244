//! A connection from pgcast to one PostgreSQL server: connect, authenticate with the configured
//! credentials, collect the startup parameters, then read/write framed messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::backend_auth::{self, BackendSecret, Sasl};
use super::message::{self, ErrorFields, Message};
use super::stream::{self, Reader, Writer};
use super::ProxyError;
use crate::backend_tls::{BackendTls, Negotiated};
use crate::config::SslMode;

/// What a backend told us during its startup.
#[derive(Debug)]
pub struct BackendStartup {
    /// Raw ParameterStatus messages, in the order the server sent them.
    pub parameter_status: Vec<Message>,
    pub pid: i32,
    pub secret: i32,
}

/// Read side of a backend connection: a socket half plus its receive buffer.
pub struct BackendReader {
    pub rd: Reader,
    pub buf: BytesMut,
    max_message: usize,
}

impl BackendReader {
    pub fn new(rd: Reader, max_message: usize) -> BackendReader {
        BackendReader {
            rd,
            buf: BytesMut::with_capacity(16 * 1024),
            max_message,
        }
    }

    /// Next complete message, reading from the socket as needed. `Ok(None)` on clean EOF.
    pub async fn next(&mut self) -> Result<Option<Message>, ProxyError> {
        loop {
            if let Some(m) = message::decode_message(&mut self.buf, self.max_message)
                .map_err(ProxyError::BackendProtocol)?
            {
                return Ok(Some(m));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The longest message this connection accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// A message already buffered, without reading.
    pub fn buffered(&mut self) -> Result<Option<Message>, ProxyError> {
        message::decode_message(&mut self.buf, self.max_message)
            .map_err(ProxyError::BackendProtocol)
    }
}

/// Credentials and parameters for one backend login.
pub struct LoginParams<'a> {
    /// The backend's name in the configuration: errors a client may see name the backend by
    /// it, not by its address (the network behind the balancer is the operator's business).
    pub backend: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub secret: &'a BackendSecret,
    /// Startup parameters forwarded from the client (user and database included).
    pub params: &'a super::pool::StartupParams,
    pub connect_timeout: Duration,
    pub max_message: usize,
    /// TLS as this backend's `sslmode` says.
    pub tls: Arc<BackendTls>,
    pub sslmode: SslMode,
}

/// Opens a connection and runs the startup/authentication exchange up to ReadyForQuery.
pub async fn connect(
    login: &LoginParams<'_>,
) -> Result<(BackendReader, Writer, BackendStartup), ProxyError> {
    let name = login.backend;
    // (host, port), not "host:port": an IP address (IPv6 too) is taken as it is, without a
    // name lookup on the blocking pool.
    let addr = (login.host, login.port);
    let stream = tokio::time::timeout(login.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ProxyError::BackendUnavailable(format!("connect to {name} timed out")))?
        .map_err(|e| ProxyError::BackendUnavailable(format!("connect to {name}: {e}")))?;
    stream.set_nodelay(true)?;
    let negotiated = tokio::time::timeout(
        login.connect_timeout,
        login.tls.negotiate(stream, login.sslmode, login.host),
    )
    .await
    .map_err(|_| ProxyError::BackendUnavailable(format!("TLS with {name} timed out")))?
    .map_err(|e| ProxyError::BackendUnavailable(format!("{name}: {e}")))?;
    let (rd, mut wr) = match negotiated {
        Negotiated::Plain(tcp) => stream::split_plain(tcp),
        Negotiated::Tls(tls) => stream::split_tls(tokio_rustls::TlsStream::Client(*tls)),
    };
    let mut reader = BackendReader::new(rd, login.max_message);
    let mut out = BytesMut::new();
    message::write_startup(&mut out, login.params);
    stream::send(&mut wr, &out).await?;

    let startup = tokio::time::timeout(
        login.connect_timeout,
        handshake(login, &mut reader, &mut wr),
    )
    .await
    .map_err(|_| ProxyError::BackendUnavailable(format!("startup with {name} timed out")))??;
    Ok((reader, wr, startup))
}

async fn handshake(
    login: &LoginParams<'_>,
    reader: &mut BackendReader,
    wr: &mut Writer,
) -> Result<BackendStartup, ProxyError> {
    let mut sasl: Option<Sasl> = None;
    let mut startup = BackendStartup {
        parameter_status: Vec::new(),
        pid: 0,
        secret: 0,
    };
    loop {
        let m = reader.next().await?.ok_or_else(|| {
            ProxyError::BackendUnavailable("backend closed during startup".into())
        })?;
        let body = m.body();
        match m.tag {
            b'R' => {
                let code = read_i32(body, 0)?;
                let mut out = BytesMut::new();
                backend_auth::answer(
                    code,
                    body.get(4..).unwrap_or(&[]),
                    login,
                    &mut sasl,
                    &mut out,
                )
                .await?;
                if !out.is_empty() {
                    stream::send(wr, &out).await?;
                }
            }
            b'S' => startup.parameter_status.push(m),
            b'K' => {
                startup.pid = read_i32(body, 0)?;
                startup.secret = read_i32(body, 4)?;
            }
            b'Z' => return Ok(startup),
            b'E' => {
                return Err(ProxyError::BackendError(
                    message::decode_error_fields(body),
                    m,
                ))
            }
            // Notices during startup are not interesting to the client.
            b'N' => {}
            _ => {
                return Err(ProxyError::BackendProtocol(
                    message::DecodeError::Malformed("unexpected message during backend startup"),
                ))
            }
        }
    }
}

fn read_i32(body: &[u8], at: usize) -> Result<i32, ProxyError> {
    body.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or(ProxyError::BackendProtocol(
            message::DecodeError::Malformed("short message"),
        ))
}

/// Sends a CancelRequest for (pid, secret) to a server on a fresh connection.
pub async fn send_cancel(
    host: &str,
    port: u16,
    pid: i32,
    secret: i32,
    timeout: Duration,
) -> Result<(), ProxyError> {
    let shown = crate::config::host_port(host, port);
    deliver_cancel((host, port), &shown, pid, secret, timeout).await
}

/// Hands a client's CancelRequest, unchanged, to the peer balancer that issued the key.
/// The peer treats it like any client's: the request needs no authentication, the key is the
/// credential.
pub async fn forward_cancel(
    peer: SocketAddr,
    pid: i32,
    secret: i32,
    timeout: Duration,
) -> Result<(), ProxyError> {
    deliver_cancel(peer, &format!("peer {peer}"), pid, secret, timeout).await
}

async fn deliver_cancel(
    addr: impl ToSocketAddrs,
    shown: &str,
    pid: i32,
    secret: i32,
    timeout: Duration,
) -> Result<(), ProxyError> {
    let mut s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            ProxyError::BackendUnavailable(format!("cancel: connect to {shown} timed out"))
        })??;
    let mut out = BytesMut::new();
    message::write_cancel_request(&mut out, pid, secret);
    s.write_all(&out).await?;
    // The server closes the connection after reading the request; wait for that so the
    // cancel is delivered before we report success. (A peer pgcast closes only after it has
    // passed the request on to its backends, so this also covers the forwarded case.)
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(timeout, s.read(&mut sink)).await;
    Ok(())
}

impl ErrorFields {
    /// True for errors after which the server closes the connection.
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTlsConfig;

    /// A client may see why a backend could not be reached: by the backend's configured name,
    /// never by the address behind the balancer.
    #[tokio::test]
    async fn a_failed_connect_names_the_backend_not_its_address() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let tls = BackendTls::new(&BackendTlsConfig {
            sslmode: SslMode::Disable,
            ca: None,
            client_cert: None,
        })
        .expect("plain");
        let params: super::super::pool::StartupParams = vec![("user".into(), "u".into())].into();
        let login = LoginParams {
            backend: "pg9",
            host: "127.0.0.1",
            port,
            user: "u",
            secret: &BackendSecret::None,
            params: &params,
            connect_timeout: Duration::from_secs(5),
            max_message: 1 << 20,
            tls: Arc::new(tls),
            sslmode: SslMode::Disable,
        };
        let Err(e) = connect(&login).await else {
            panic!("connected to a closed port");
        };
        let text = e.to_string();
        assert!(text.contains("connect to pg9: "), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
    }
}
