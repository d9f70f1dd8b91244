//! The self-check: can a new client reach this balancer's listeners right now? The backends
//! can be fine while this process cannot serve (file descriptors exhausted, so `accept` fails
//! and clients wait in the backlog; a stalled process), and then the anycast prefix must go.
//!
//! Each listener is probed through its own socket, the way a client arrives: a TCP connection
//! and an SSLRequest (PostgreSQL protocol, "SSL Session Encryption"), which the proxy answers
//! with one byte, `S` or `N`, from the session task it spawned for the connection. No login,
//! no backend: the check costs the proxy one accept and one task. While the listeners are
//! paused on purpose (a drain drops SYNs), nothing is probed and the last state holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HealthError;
use crate::config::Config;

/// SSLRequest: length 8, then the code 1234 5679 (80877103).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// One self-check result: the listener's name and the outcome.
pub type SelfCheckResult = (String, Result<(), String>);

/// Where to connect to reach a listener bound to `bound`: its own address, or loopback when
/// it listens on every address.
pub fn probe_address(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, bound.port())
}

/// One check of the listener at `addr`, within `timeout`.
pub async fn check_listener(addr: SocketAddr, timeout: Duration) -> Result<(), HealthError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| HealthError::SelfConnect { addr, source })?;
        stream
            .write_all(&SSL_REQUEST)
            .await
            .map_err(|source| HealthError::SelfIo { addr, source })?;
        let mut answer = [0u8; 1];
        match stream.read(&mut answer).await {
            Ok(0) => Err(HealthError::SelfClosed(addr)),
            Ok(_) if matches!(answer[0], b'S' | b'N') => Ok(()),
            Ok(_) => Err(HealthError::SelfAnswer {
                addr,
                byte: answer[0],
            }),
            Err(source) => Err(HealthError::SelfIo { addr, source }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HealthError::Timeout(timeout))?
}

/// Starts one checker task per listener (`name`, bound address), reporting on `tx` every
/// `health.interval` (followed across reloads), except while `paused` is true or
/// `health.self_check` is off.
pub fn spawn_listener_checks(
    listeners: Vec<(String, SocketAddr)>,
    config_rx: watch::Receiver<Arc<Config>>,
    paused: watch::Receiver<bool>,
    tx: mpsc::Sender<SelfCheckResult>,
) -> Vec<JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|(name, bound)| {
            let config_rx = config_rx.clone();
            let paused = paused.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let addr = probe_address(bound);
                loop {
                    let health = config_rx.borrow().health.clone();
                    if health.self_check && !*paused.borrow() {
                        let result = check_listener(addr, health.timeout).await;
                        // Paused while the check ran: the failure would be the pause's.
                        if !*paused.borrow() {
                            let result = result.map_err(|e| e.to_string());
                            if tx.send((name.clone(), result)).await.is_err() {
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(health.interval).await;
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(probe_address(a("0.0.0.0:5432")), a("127.0.0.1:5432"));
        assert_eq!(probe_address(a("[::]:6432")), a("[::1]:6432"));
        assert_eq!(probe_address(a("198.18.2.0:5432")), a("198.18.2.0:5432"));
    }

    /// A listener that answers the SSLRequest with `answer` (none: closes at once).
    async fn server(answer: Option<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 8];
                s.read_exact(&mut req).await.unwrap();
                assert_eq!(req, SSL_REQUEST);
                if let Some(b) = answer {
                    s.write_all(&[b]).await.unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn answers_s_and_n_pass_everything_else_fails_with_its_reason() {
        let t = Duration::from_secs(2);
        assert!(check_listener(server(Some(b'N')).await, t).await.is_ok());
        assert!(check_listener(server(Some(b'S')).await, t).await.is_ok());
        let e = check_listener(server(Some(b'E')).await, t)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("0x45"), "{e}");
        let e = check_listener(server(None).await, t).await.unwrap_err();
        assert!(matches!(e, HealthError::SelfClosed(_)), "{e}");
        // Nothing listens there any more.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let e = check_listener(addr, t).await.unwrap_err();
        assert!(matches!(e, HealthError::SelfConnect { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_listener_that_never_accepts_times_out() {
        // Bound and listening, never accepted from: the kernel completes the handshake into
        // the backlog, and nobody answers — what a process out of file descriptors looks like.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        let addr = listener.local_addr().unwrap();
        let e = check_listener(addr, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, HealthError::Timeout(_)), "{e}");
        drop(listener);
    }
}
