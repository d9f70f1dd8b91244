//! The self-check: can a new client reach this balancer's listeners right now? The backends
//! can be fine while this process cannot serve (file descriptors exhausted, so `accept` fails
//! and clients wait in the backlog; a stalled process), and then the anycast prefix must go.
//!
//! Each listener is probed through its own socket, the way a client arrives: a TCP connection
//! and an SSLRequest (PostgreSQL protocol, "SSL Session Encryption"), which the proxy answers
//! with one byte, `S` or `N`, from the session task it spawned for the connection. No login,
//! no backend: the check costs the proxy one accept and one task. While the listeners are
//! paused on purpose (a drain drops SYNs), nothing is probed and the last state holds.
//!
//! The probe must not compete with strangers for what they can exhaust (issue 14: idle
//! sockets took every slot, the probe got 53300 like them, and the prefix was withdrawn from a
//! balancer that was fine). So each probe binds its source address first and registers it in
//! [`ProbeSources`], which the proxy consults at accept: a registered peer is the probe, and
//! takes no pre-login place. Nobody else can connect from that address and port to the same
//! listener while the probe holds them (a TCP connection is unique by its four-tuple), and a
//! packet from outside claiming a local source address does not complete a handshake. And a
//! listener that answers "too many connections" (SQLSTATE 53300) did accept and decide: it is
//! alive, only full, and reads as accepting.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HealthError;
use crate::config::Config;

/// SSLRequest: length 8, then the code 1234 5679 (80877103).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// SQLSTATE too_many_connections: the listener is full, not dead.
const TOO_MANY_CONNECTIONS: &str = "53300";
/// The longest ErrorResponse the probe reads (PostgreSQL's start-up errors are far shorter).
const MAX_ERROR_BYTES: usize = 4096;

/// One self-check result: the listener's name and the outcome.
pub type SelfCheckResult = (String, Result<(), String>);

/// The source addresses of the self-check's connections in flight, shared with the proxy
/// (which the daemon hands it to): a connection from one of them is the probe.
#[derive(Debug, Default)]
pub struct ProbeSources {
    in_flight: Mutex<HashSet<SocketAddr>>,
}

impl ProbeSources {
    pub fn new() -> Arc<Self> {
        Arc::new(ProbeSources::default())
    }

    /// Whether a connection from `peer` is one of the self-check's probes.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.lock().contains(&peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, source: SocketAddr) -> Registration {
        self.lock().insert(source);
        Registration {
            sources: Arc::clone(self),
            source,
        }
    }
}

/// A probe's source, registered until the probe ends.
struct Registration {
    sources: Arc<ProbeSources>,
    source: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sources.lock().remove(&self.source);
    }
}

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

/// What the first bytes a listener sent after the SSLRequest mean.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `S` or `N`, or an ErrorResponse 53300: the listener takes connections.
    Accepting,
    /// Another ErrorResponse.
    Refused { sqlstate: String, message: String },
    /// Anything else (the first byte).
    Unexpected(u8),
}

/// Pure: the answer in `first` (the first byte) and, for an ErrorResponse (`E`), its body
/// (the fields after the length).
fn classify_answer(first: u8, error_body: &[u8]) -> Answer {
    match first {
        b'S' | b'N' => Answer::Accepting,
        b'E' => {
            let (mut sqlstate, mut message) = (String::new(), String::new());
            // Fields: a type byte and a NUL-terminated string each, then a NUL.
            let mut rest = error_body;
            while let Some((&kind, tail)) = rest.split_first() {
                if kind == 0 {
                    break;
                }
                let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                let value = String::from_utf8_lossy(&tail[..end]).into_owned();
                match kind {
                    b'C' => sqlstate = value,
                    b'M' => message = value,
                    _ => {}
                }
                rest = tail.get(end + 1..).unwrap_or(&[]);
            }
            if sqlstate == TOO_MANY_CONNECTIONS {
                Answer::Accepting
            } else {
                Answer::Refused { sqlstate, message }
            }
        }
        other => Answer::Unexpected(other),
    }
}

/// Connects to `addr` from a source registered in `probes` when it can bind one (the target's
/// own address: a listener's address is local); else from wherever the kernel picks, then
/// unrecognised, like any client.
async fn connect_registered(
    addr: SocketAddr,
    probes: &Arc<ProbeSources>,
) -> Result<(TcpStream, Option<Registration>), HealthError> {
    let connect_err = |source| HealthError::SelfConnect { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(connect_err)?;
    let registration = match socket
        .bind(SocketAddr::new(addr.ip(), 0))
        .and_then(|()| socket.local_addr())
    {
        Ok(source) => Some(probes.register(source)),
        Err(e) => {
            tracing::debug!(%addr, error = %e, "self-check: cannot bind the probe's source");
            None
        }
    };
    let stream = socket.connect(addr).await.map_err(connect_err)?;
    Ok((stream, registration))
}

/// One check of the listener at `addr`, within `timeout`.
pub async fn check_listener(
    addr: SocketAddr,
    timeout: Duration,
    probes: &Arc<ProbeSources>,
) -> Result<(), HealthError> {
    let exchange = async {
        let (mut stream, _registration) = connect_registered(addr, probes).await?;
        let io_err = |source| HealthError::SelfIo { addr, source };
        stream.write_all(&SSL_REQUEST).await.map_err(io_err)?;
        let mut first = [0u8; 1];
        if stream.read(&mut first).await.map_err(io_err)? == 0 {
            return Err(HealthError::SelfClosed(addr));
        }
        let mut body = Vec::new();
        if first[0] == b'E' {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await.map_err(io_err)?;
            let len = u32::from_be_bytes(len) as usize;
            if !(5..=MAX_ERROR_BYTES).contains(&len) {
                return Err(HealthError::SelfAnswer { addr, byte: b'E' });
            }
            body.resize(len - 4, 0);
            stream.read_exact(&mut body).await.map_err(io_err)?;
        }
        match classify_answer(first[0], &body) {
            Answer::Accepting => Ok(()),
            Answer::Refused { sqlstate, message } => Err(HealthError::SelfRefused {
                addr,
                sqlstate,
                message,
            }),
            Answer::Unexpected(byte) => Err(HealthError::SelfAnswer { addr, byte }),
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
    probes: Arc<ProbeSources>,
    tx: mpsc::Sender<SelfCheckResult>,
) -> Vec<JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|(name, bound)| {
            let config_rx = config_rx.clone();
            let paused = paused.clone();
            let tx = tx.clone();
            let probes = Arc::clone(&probes);
            tokio::spawn(async move {
                let addr = probe_address(bound);
                loop {
                    let health = config_rx.borrow().health.clone();
                    if health.self_check && !*paused.borrow() {
                        let result = check_listener(addr, health.timeout, &probes).await;
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

    /// An ErrorResponse as a listener sends it.
    fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in [(b'S', "FATAL"), (b'C', sqlstate), (b'M', message)] {
            body.push(kind);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = vec![b'E'];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn answers_table() {
        let body = |code: &str, msg: &str| error_response(code, msg)[5..].to_vec();
        let cases: [(u8, Vec<u8>, Answer); 6] = [
            (b'N', vec![], Answer::Accepting),
            (b'S', vec![], Answer::Accepting),
            (
                b'E',
                body("53300", "sorry, too many clients already"),
                Answer::Accepting,
            ),
            (
                b'E',
                body("57P03", "the database system is starting up"),
                Answer::Refused {
                    sqlstate: "57P03".into(),
                    message: "the database system is starting up".into(),
                },
            ),
            // Truncated fields: no panic, no SQLSTATE.
            (
                b'E',
                b"C533".to_vec(),
                Answer::Refused {
                    sqlstate: "533".into(),
                    message: String::new(),
                },
            ),
            (b'X', vec![], Answer::Unexpected(b'X')),
        ];
        for (first, body, expected) in cases {
            assert_eq!(
                classify_answer(first, &body),
                expected,
                "{first:#04x} {body:?}"
            );
        }
    }

    /// A listener that answers the SSLRequest with `answer` (empty: closes at once).
    async fn server(answer: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 8];
                s.read_exact(&mut req).await.unwrap();
                assert_eq!(req, SSL_REQUEST);
                s.write_all(&answer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn accepting_answers_pass_everything_else_fails_with_its_reason() {
        let t = Duration::from_secs(2);
        let p = ProbeSources::new();
        assert!(check_listener(server(b"N".to_vec()).await, t, &p)
            .await
            .is_ok());
        assert!(check_listener(server(b"S".to_vec()).await, t, &p)
            .await
            .is_ok());
        let full = error_response("53300", "sorry, too many clients already");
        assert!(
            check_listener(server(full).await, t, &p).await.is_ok(),
            "full is alive"
        );
        let e = check_listener(server(b"X".to_vec()).await, t, &p)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("0x58"), "{e}");
        let refused = error_response("57P03", "starting up");
        let e = check_listener(server(refused).await, t, &p)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("57P03: starting up"), "{e}");
        let e = check_listener(server(vec![]).await, t, &p)
            .await
            .unwrap_err();
        assert!(matches!(e, HealthError::SelfClosed(_)), "{e}");
        // Nothing listens there any more.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let e = check_listener(addr, t, &p).await.unwrap_err();
        assert!(matches!(e, HealthError::SelfConnect { .. }), "{e}");
        assert!(
            p.lock().is_empty(),
            "every registration ended with its probe"
        );
    }

    #[tokio::test]
    async fn the_listener_recognises_the_probe_by_its_source_and_nobody_else() {
        let probes = ProbeSources::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::clone(&probes);
        // Answers 'N' to the probe and 'X' to anyone else, as a listener whose strangers'
        // budget is exhausted answers them with an error.
        tokio::spawn(async move {
            while let Ok((mut s, peer)) = l.accept().await {
                let answer = if seen.contains(peer) { b'N' } else { b'X' };
                let mut req = [0u8; 8];
                let _ = s.read_exact(&mut req).await;
                let _ = s.write_all(&[answer]).await;
            }
        });
        let t = Duration::from_secs(2);
        check_listener(addr, t, &probes)
            .await
            .expect("the probe is recognised");
        let mut stranger = TcpStream::connect(addr).await.unwrap();
        stranger.write_all(&SSL_REQUEST).await.unwrap();
        let mut b = [0u8; 1];
        stranger.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], b'X', "a stranger from loopback is not the probe");
    }

    #[tokio::test]
    async fn a_listener_that_never_accepts_times_out() {
        // Bound and listening, never accepted from: the kernel completes the handshake into
        // the backlog, and nobody answers — what a process out of file descriptors looks like.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        let addr = listener.local_addr().unwrap();
        let e = check_listener(addr, Duration::from_millis(200), &ProbeSources::new())
            .await
            .unwrap_err();
        assert!(matches!(e, HealthError::Timeout(_)), "{e}");
        drop(listener);
    }
}
