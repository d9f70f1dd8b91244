//! TLS towards clients, with rustls (TLS 1.2 and 1.3 only, rustls's default cipher suites:
//! AEAD with forward secrecy).
//!
//! A client asks with an SSLRequest and gets 'S' and a handshake (PostgreSQL protocol §53.2.10),
//! or, as PostgreSQL 17's `sslnegotiation=direct` does, starts the handshake at once with ALPN
//! "postgresql". The certificate and key are read at start, by `check-config`, and again at every
//! SIGHUP: sessions already open keep the certificate they shook hands with.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use super::stream::send;
use super::stream::{self, Reader, Writer};
use crate::config::TlsConfig;
use crate::pem::{read_certs, read_key, PemError};

/// The ALPN protocol name PostgreSQL 17 registered for its direct TLS connections.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1, ContentType 22): a
/// direct-TLS client's first byte, where a start-up packet's length would be.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{cert} and {key}: {source}")]
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A certificate and key, ready to accept handshakes.
pub struct LoadedTls {
    pub acceptor: TlsAcceptor,
    /// The certificate's `tls-server-end-point` data, for SCRAM-SHA-256-PLUS (none: no hash
    /// RFC 5929 can use, so no channel binding is offered).
    pub end_point: Option<Arc<[u8]>>,
}

/// Reads and checks the certificate chain and key.
pub fn load(cfg: &TlsConfig) -> Result<LoadedTls, TlsError> {
    let chain = read_certs(&cfg.cert)?;
    let end_point = super::channel_binding::end_point_data(&chain[0]).map(Arc::from);
    let key = read_key(&cfg.key)?;
    // aws-lc-rs, not ring: with an RSA certificate the signature dominated ring's handshake;
    // aws-lc-rs halves the handshake's CPU (bench/tls, docs/benchmarks.md).
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| TlsError::Rejected {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(LoadedTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

/// The certificate new handshakes use; replaced at reload.
#[derive(Default)]
pub struct ServerTls {
    current: RwLock<Option<Arc<LoadedTls>>>,
}

impl ServerTls {
    /// Loads `[tls]` if configured.
    pub fn new(cfg: Option<&TlsConfig>) -> Result<ServerTls, TlsError> {
        let tls = ServerTls::default();
        tls.reload(cfg)?;
        Ok(tls)
    }

    pub fn current(&self) -> Option<Arc<LoadedTls>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again. On an error the running certificate stays; `Ok(false)`: no
    /// `[tls]` configured (TLS is off for new connections).
    pub fn reload(&self, cfg: Option<&TlsConfig>) -> Result<bool, TlsError> {
        let loaded = cfg.map(load).transpose()?;
        let on = loaded.is_some();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded.map(Arc::new);
        Ok(on)
    }
}

/// A client connection, in clear or in TLS.
pub enum ClientStream {
    Plain(TcpStream),
    /// With the end-point data of the certificate it shook hands with.
    Tls(Box<TlsStream<TcpStream>>, Option<Arc<[u8]>>),
    /// Only while a handshake runs, or after it failed.
    Closed,
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(..))
    }

    /// The channel-binding data of this connection (TLS with a usable certificate only).
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(_, end_point) => end_point.as_deref(),
            _ => None,
        }
    }

    /// The first byte the client sent, without taking it (plain connections only).
    pub async fn peek_first_byte(&self) -> io::Result<Option<u8>> {
        let ClientStream::Plain(tcp) = self else {
            return Ok(None);
        };
        let mut b = [0u8; 1];
        let n = tcp.peek(&mut b).await?;
        Ok((n == 1).then_some(b[0]))
    }

    /// Runs the server side of the handshake on a plain connection.
    pub async fn upgrade(&mut self, tls: &LoadedTls) -> io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Closed) else {
            return Err(io::Error::other("not a plain connection"));
        };
        let stream = tls.acceptor.accept(tcp).await?;
        *self = ClientStream::Tls(Box::new(stream), tls.end_point.clone());
        Ok(())
    }

    /// The ALPN protocol the handshake agreed on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(s, _) => s.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    pub fn into_split(self) -> (Reader, Writer) {
        match self {
            ClientStream::Plain(tcp) => stream::split_plain(tcp),
            ClientStream::Tls(tls, _) => stream::split_tls(tokio_rustls::TlsStream::Server(*tls)),
            ClientStream::Closed => (Reader::Closed, Writer::Closed),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Closed => Poll::Ready(Err(stream::closed())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Closed => Poll::Ready(Err(stream::closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
