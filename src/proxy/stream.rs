//! A connection's two halves, in clear or in TLS (either side's: a client's connection to
//! pgcast, or pgcast's to a backend), so the relay reads and writes them alike.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// Writes `bytes` and flushes them: TLS keeps written data in its own buffer until flushed.
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

pub(super) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

pub fn split_plain(tcp: TcpStream) -> (Reader, Writer) {
    let (r, w) = tcp.into_split();
    (Reader::Plain(r), Writer::Plain(w))
}

pub fn split_tls(tls: TlsStream<TcpStream>) -> (Reader, Writer) {
    let (r, w) = tokio::io::split(tls);
    (Reader::Tls(r), Writer::Tls(w))
}

/// The reading half of a connection (a client's or a backend's).
pub enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
    Closed,
}

impl Reader {
    /// Waits for the client's next bytes and appends them to `buf`; `Ok(0)` at EOF. On a plain
    /// connection `buf` grows (by `chunk` when it has less than `min` free) only once the
    /// socket is readable, so a client idle between transactions holds no buffer; TLS reads
    /// go through rustls's own buffers and reserve first.
    pub async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        min: usize,
        chunk: usize,
    ) -> io::Result<usize> {
        let reserve = |buf: &mut BytesMut| {
            if buf.capacity() == 0 {
                *buf = super::spare_buffers::take(super::spare_buffers::Kind::Read, min, chunk);
            } else if buf.capacity() - buf.len() < min {
                buf.reserve(chunk);
            }
        };
        match self {
            Reader::Plain(rd) => {
                std::future::poll_fn(|cx| {
                    // `poll_read_ready`, not `readable()`: the latter's future joins a list of
                    // waiters under the socket's lock and leaves it on drop, on every wait
                    // (~450 instructions per transaction, callgrind); this keeps one waker.
                    std::task::ready!(rd.as_ref().poll_read_ready(cx))?;
                    reserve(buf);
                    // A read through poll_read, not try_read: a short read then clears the
                    // socket's readiness, so the next wait does not begin with a read that
                    // finds nothing (one recvfrom per transaction less, seen with strace).
                    std::pin::pin!(rd.read_buf(&mut *buf)).poll(cx)
                })
                .await
            }
            Reader::Tls(rd) => {
                reserve(buf);
                rd.read_buf(buf).await
            }
            Reader::Closed => Ok(0),
        }
    }
}

/// The writing half of a connection.
pub enum Writer {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
    Closed,
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Writer::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Writer::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(s) => Pin::new(s).poll_flush(cx),
            Writer::Tls(s) => Pin::new(s).poll_flush(cx),
            Writer::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Writer::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Writer::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Reader::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Reader::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl Reader {
    /// Reads what is there without waiting (`WouldBlock` if nothing is); on TLS, also what
    /// rustls holds decrypted already.
    pub fn try_read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Plain(r) => r.try_read(buf),
            Reader::Tls(r) => futures_util::FutureExt::now_or_never(r.read(buf))
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
            Reader::Closed => Ok(0),
        }
    }
}

impl Writer {
    /// Writes without waiting, as much as fits (a goodbye on a closing connection).
    pub fn try_write_now(&mut self, bytes: &[u8]) {
        match self {
            Writer::Plain(w) => {
                let _ = w.try_write(bytes);
            }
            Writer::Tls(w) => {
                let _ = futures_util::FutureExt::now_or_never(send(w, bytes));
            }
            Writer::Closed => {}
        }
    }
}
