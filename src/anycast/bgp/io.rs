//! The BGP speaker's I/O: one actor per neighbour (see `neighbor.rs`) and one listener that
//! hands each accepted connection to the neighbour it comes from.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::neighbor::{Command, Event, NeighborTask};
use super::sockopt::{set_gtsm, set_tcp_md5, set_ttl_255, SockoptError};
use super::status::{BgpNeighborStatus, BgpRefusal, BgpRefusedCounters, BgpStatus};
use super::{ConfigError, Session, SessionConfig, SpeakerIdentity};
use crate::anycast::announce::PrefixVerdict;
use crate::config::BgpConfig;

/// Events waiting for one neighbour's actor; received frames wait here too, so a fast peer is
/// slowed down by TCP instead of growing memory.
const EVENT_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BgpIoError {
    #[error("bgp.listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bgp.listen: {0}")]
    ListenOption(#[from] SockoptError),
    #[error("neighbor {address}: {source}")]
    Session {
        address: Ipv4Addr,
        source: ConfigError,
    },
}

struct NeighborHandle {
    address: Ipv4Addr,
    events: mpsc::Sender<Event>,
    status: watch::Receiver<BgpNeighborStatus>,
}

/// The running speaker.
pub struct BgpHandle {
    local_as: u32,
    router_id: Ipv4Addr,
    graceful_shutdown: Duration,
    neighbors: Vec<NeighborHandle>,
    listener: Option<tokio::task::JoinHandle<()>>,
    refused: Arc<BgpRefusedCounters>,
}

/// Starts one actor per neighbour (they connect at once unless passive) and the listener.
pub fn spawn(cfg: &BgpConfig) -> Result<BgpHandle, BgpIoError> {
    let us = SpeakerIdentity {
        router_id: cfg.router_id,
        asn: cfg.local_as,
    };
    let mut neighbors = Vec::new();
    let mut tasks = Vec::new();
    for n in &cfg.neighbors {
        let mut sc = SessionConfig::new(
            cfg.local_as,
            n.remote_as,
            cfg.router_id,
            n.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED),
        );
        sc.next_hop_ipv6 = n.next_hop_ipv6;
        sc.hold_time = n.hold_time;
        sc.local_pref = n.local_pref;
        sc.passive = n.passive;
        sc.connect_retry_time = n.connect_retry;
        sc.connect_retry_max = n.connect_retry_max;
        let session = Session::new(sc).map_err(|source| BgpIoError::Session {
            address: n.address,
            source,
        })?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (status_tx, status_rx) = watch::channel(BgpNeighborStatus::idle(n));
        tasks.push((
            NeighborTask::new(n.clone(), us, session, tx.clone(), status_tx),
            rx,
        ));
        neighbors.push(NeighborHandle {
            address: n.address,
            events: tx,
            status: status_rx,
        });
    }
    let listener = match cfg.listen {
        Some(addr) => Some(bind_listener(addr, cfg)?),
        None => None,
    };
    for (task, rx) in tasks {
        tokio::spawn(task.run(rx));
    }
    let refused = Arc::new(BgpRefusedCounters::default());
    let listener = listener.map(|l| {
        let routes: Vec<(Ipv4Addr, mpsc::Sender<Event>)> = neighbors
            .iter()
            .map(|n| (n.address, n.events.clone()))
            .collect();
        tokio::spawn(accept_loop(l, routes, Arc::clone(&refused)))
    });
    Ok(BgpHandle {
        local_as: cfg.local_as,
        router_id: cfg.router_id,
        graceful_shutdown: cfg.graceful_shutdown,
        neighbors,
        listener,
        refused,
    })
}

/// The listening socket carries every neighbour's TCP-MD5 key (accepted connections inherit
/// them; a SYN from a keyed address without the right signature is dropped by the kernel).
fn bind_listener(addr: SocketAddr, cfg: &BgpConfig) -> Result<TcpListener, BgpIoError> {
    let err = |source| BgpIoError::Listen { addr, source };
    let socket = tokio::net::TcpSocket::new_v4().map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    for n in &cfg.neighbors {
        if let Some(password) = &n.password {
            set_tcp_md5(socket.as_fd(), n.address, password.as_bytes())?;
        }
    }
    // GTSM (RFC 5082): the SYN-ACK leaves with the listener's TTL, before any accepted socket
    // exists, so TTL 255 goes on the listener whenever some neighbour uses GTSM (harmless to
    // the others). IP_MINTTL there would apply to every peer: only when all of them use GTSM;
    // otherwise it is set per accepted connection.
    if cfg.neighbors.iter().all(|n| n.ttl_security) {
        set_gtsm(socket.as_fd())?;
    } else if cfg.neighbors.iter().any(|n| n.ttl_security) {
        set_ttl_255(socket.as_fd())?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(16).map_err(err)
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    routes: Vec<(Ipv4Addr, mpsc::Sender<Event>)>,
    refused: Arc<BgpRefusedCounters>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                refuse(&refused, BgpRefusal::AcceptFailed, None, &e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let IpAddr::V4(ip) = from.ip() else { continue };
        match routes.iter().find(|(a, _)| *a == ip) {
            // Never wait here for one busy neighbour: the others' connections would queue
            // behind it. A dropped connection is retried by the peer.
            Some((_, events)) => {
                if events.try_send(Event::Accepted(stream)).is_err() {
                    refuse(&refused, BgpRefusal::NeighborBusy, Some(from), "");
                }
            }
            None => refuse(&refused, BgpRefusal::NotANeighbor, Some(from), ""),
        }
    }
}

/// Counts a connection the listener closed and logs it at most once per interval per reason:
/// anyone who reaches port 179 can open connections (without TCP-MD5 on the listener, the
/// kernel does not filter them), one line each would let them flood the log.
fn refuse(counters: &BgpRefusedCounters, why: BgpRefusal, from: Option<SocketAddr>, error: &str) {
    counters.count(why);
    let from = from.map(|f| f.to_string()).unwrap_or_default();
    match why {
        BgpRefusal::NotANeighbor => {
            crate::log_limited!(warn, %from, "BGP connection from an address that is not a configured neighbor, closed");
        }
        BgpRefusal::NeighborBusy => {
            crate::log_limited!(warn, %from, "BGP neighbor busy, its new connection closed");
        }
        BgpRefusal::AcceptFailed => {
            crate::log_limited!(warn, "bgp accept: {error}");
        }
    }
}

impl BgpHandle {
    /// Announce exactly these prefixes to every neighbour.
    pub async fn announce(&self, prefixes: &[(IpAddr, u8)]) {
        for n in &self.neighbors {
            let _ = n
                .events
                .send(Event::Command(Command::Announce(prefixes.to_vec())))
                .await;
        }
    }

    /// How long the drain keeps GRACEFUL_SHUTDOWN routes before withdrawing them.
    pub fn graceful_shutdown_time(&self) -> Duration {
        self.graceful_shutdown
    }

    /// Whether any session is Established (draining one makes sense).
    pub fn any_established(&self) -> bool {
        self.neighbors
            .iter()
            .any(|n| n.status.borrow().state == "Established")
    }

    /// RFC 8326: every route re-announced with GRACEFUL_SHUTDOWN (`on`), or without it again
    /// (an undrain).
    pub async fn set_graceful_shutdown(&self, on: bool) {
        for n in &self.neighbors {
            let _ = n
                .events
                .send(Event::Command(Command::GracefulShutdown(on)))
                .await;
        }
    }

    /// Waits (at most `limit`) until no Established neighbour still has a route from us.
    pub async fn wait_withdrawn(&self, limit: Duration) -> bool {
        let all = async {
            for n in &self.neighbors {
                let mut rx = n.status.clone();
                let _ = rx
                    .wait_for(|s| s.state != "Established" || s.sent.is_empty())
                    .await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Cease / Administrative Shutdown to every neighbour (RFC 8203 `reason`), then stop.
    pub async fn stop(&self, reason: &str) {
        let mut waits = Vec::new();
        for n in &self.neighbors {
            let (done, wait) = oneshot::channel();
            let cmd = Command::Stop {
                reason: reason.to_string(),
                done,
            };
            if n.events.send(Event::Command(cmd)).await.is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        if let Some(l) = &self.listener {
            l.abort();
        }
    }

    /// Each neighbour's status channel, which closes when its actor ends: the daemon's
    /// supervisor watches them (a neighbour's actor that died would leave its route with the
    /// router, on a TCP session nobody serves, until the hold time).
    pub fn neighbor_status_receivers(&self) -> Vec<(Ipv4Addr, watch::Receiver<BgpNeighborStatus>)> {
        self.neighbors
            .iter()
            .map(|n| (n.address, n.status.clone()))
            .collect()
    }

    pub fn status_source(&self) -> BgpStatusSource {
        BgpStatusSource {
            local_as: self.local_as,
            router_id: self.router_id,
            neighbors: self.neighbors.iter().map(|n| n.status.clone()).collect(),
            refused: Arc::clone(&self.refused),
        }
    }
}

/// What the admin socket reads.
#[derive(Clone)]
pub struct BgpStatusSource {
    local_as: u32,
    router_id: Ipv4Addr,
    neighbors: Vec<watch::Receiver<BgpNeighborStatus>>,
    refused: Arc<BgpRefusedCounters>,
}

impl BgpStatusSource {
    pub fn get(&self, verdicts: &[PrefixVerdict]) -> BgpStatus {
        let now = Instant::now();
        BgpStatus {
            local_as: self.local_as,
            router_id: Some(self.router_id),
            neighbors: self
                .neighbors
                .iter()
                .map(|n| {
                    let mut s = n.borrow().clone();
                    s.complete(now, verdicts);
                    s
                })
                .collect(),
            refused_connections: self.refused.snapshot(),
        }
    }
}
