//! The BFD actor: owns the sockets and the clock, feeds the pure [`Session`]s through
//! [`Sessions`], and sends what they ask for. Nothing here decides anything about BFD.
//!
//! ```text
//!  owners (BGP, OSPF, drain) --Command--> actor --watch<BfdStatus>--> owners, admin API
//!  peer --UDP :3784, TTL 255--> receive task --Datagram--> actor
//!  actor --one UDP socket per session, source port 49152..=65535, TTL 255--> peer :3784
//! ```
//!
//! RFC 5881 single hop: control packets go to port 3784 from a source port in
//! 49152..=65535 that stays the same for the session's life (§4), with TTL 255, and a
//! received packet whose TTL is not 255 is discarded (§5).
//!
//! [`Session`]: super::fsm::Session

use std::collections::{BTreeMap, HashMap};
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::fsm::{Action, BfdTimers, ConfigError};
use super::packet::{ControlPacket, State};
use super::sessions::{BfdPeer, Demux, Entry, Sessions};
use super::status::{self, BfdStatus};

/// UDP destination port of single-hop control packets (RFC 5881 §4).
pub const BFD_CONTROL_PORT: u16 = 3784;
/// Source ports of control packets (RFC 5881 §4).
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: sent with TTL 255, and only TTL 255 is accepted, so the peer is one hop away.
const SINGLE_HOP_TTL: u8 = 255;
/// IP precedence "internetwork control", as routing protocols use.
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;
/// How often peers whose local address could not be learned are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Counter-only status updates are published at most this often.
const PUBLISH_COUNTERS_EVERY: Duration = Duration::from_secs(1);
/// Pause after a failed receive.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Errors starting the BFD actor; runtime packet problems are counted, not errors.
#[derive(Debug, thiserror::Error)]
pub enum BfdIoError {
    #[error("bfd timers: {0}")]
    Timers(#[from] ConfigError),
    #[error("bfd: UDP port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
}

/// Where to listen and where to send; both 3784 in production, other ports in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdPorts {
    pub listen: u16,
    pub peer: u16,
}

enum Command {
    SetPeers {
        owner: String,
        peers: Vec<BfdPeer>,
        done: oneshot::Sender<()>,
    },
    AdminDown(bool, oneshot::Sender<()>),
    SetTimers(BfdTimers, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the running actor; cheap to clone.
#[derive(Clone)]
pub struct BfdHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<BfdStatus>,
}

impl BfdHandle {
    /// Replaces the peers `owner` wants watched. A session is shared by every owner naming
    /// its peer address, and ends (with an AdminDown packet) when no owner wants it.
    pub async fn set_peers(&self, owner: &str, peers: Vec<BfdPeer>) {
        let (done, wait) = oneshot::channel();
        let cmd = Command::SetPeers {
            owner: owner.to_string(),
            peers,
            done,
        };
        if self.commands.send(cmd).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn status_receiver(&self) -> watch::Receiver<BfdStatus> {
        self.status.clone()
    }

    /// Drain: every session, present and future, to AdminDown with diag 7, sent at once.
    pub async fn admin_down(&self) {
        self.command(|done| Command::AdminDown(true, done)).await;
    }

    /// New timers for every session, announced with a Poll Sequence where Up (RFC 5880
    /// §6.8.3). Invalid timers are ignored.
    pub async fn set_timers(&self, timers: BfdTimers) {
        self.command(|done| Command::SetTimers(timers, done)).await;
    }

    /// Ends a drain: sessions start over from Down.
    pub async fn enable(&self) {
        self.command(|done| Command::AdminDown(false, done)).await;
    }

    /// Sends AdminDown on every session, then stops the actor and closes its sockets.
    pub async fn shutdown(&self) {
        self.command(Command::Shutdown).await;
    }

    async fn command(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(make(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Starts the actor listening on `port` and sending to the peers' `port`.
pub fn spawn(timers: BfdTimers, port: u16) -> Result<BfdHandle, BfdIoError> {
    spawn_with_ports(
        timers,
        BfdPorts {
            listen: port,
            peer: port,
        },
    )
}

/// Starts the actor; must be called inside a tokio runtime.
pub fn spawn_with_ports(timers: BfdTimers, ports: BfdPorts) -> Result<BfdHandle, BfdIoError> {
    timers.validate()?;
    let rx_sock = open_listener(ports.listen).map_err(|source| BfdIoError::Listen {
        port: ports.listen,
        source,
    })?;
    let (dgram_tx, dgram_rx) = mpsc::channel(1024);
    let receiver = tokio::spawn(receive_loop(rx_sock, dgram_tx));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(BfdStatus::default());
    let actor = Actor {
        sessions: Sessions::new(timers, rand::random()),
        sockets: HashMap::new(),
        pending: Vec::new(),
        dropped: BTreeMap::new(),
        peer_port: ports.peer,
        buf: BytesMut::with_capacity(64),
    };
    tokio::spawn(actor.run(dgram_rx, cmd_rx, status_tx, receiver));
    Ok(BfdHandle {
        commands: cmd_tx,
        status: status_rx,
    })
}

fn open_listener(port: u16) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        port,
    )))?;
    // The TTL of each datagram arrives as ancillary data (RFC 5881 §5 check).
    setsockopt(&sock, sockopt::Ipv4RecvTtl, &true).map_err(std::io::Error::from)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

/// One received datagram: source, TTL (None if the kernel gave none) and payload.
struct Datagram {
    src: Ipv4Addr,
    ttl: Option<i32>,
    payload: Vec<u8>,
}

async fn receive_loop(sock: UdpSocket, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; 2048];
    // Room for one IP_TTL control message (an int).
    let mut cmsg = nix::cmsg_space!(i32);
    loop {
        let got = sock
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<SockaddrIn>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(std::io::Error::from)?;
                let ttl = msg.cmsgs().ok().and_then(|mut it| {
                    it.find_map(|c| match c {
                        ControlMessageOwned::Ipv4Ttl(t) => Some(t),
                        _ => None,
                    })
                });
                Ok((msg.address.map(|a| a.ip()), ttl, msg.bytes))
            })
            .await;
        let (src, ttl, len) = match got {
            Ok((Some(src), ttl, len)) => (src, ttl, len),
            Ok((None, _, _)) => continue,
            Err(e) => {
                // A socket error that persists must not turn this loop into a busy one.
                tracing::debug!(error = %e, "bfd: receive failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        let payload = buf.get(..len).unwrap_or_default().to_vec();
        if tx.send(Datagram { src, ttl, payload }).await.is_err() {
            return;
        }
    }
}

/// The per-session sending socket, bound to the session's local address and a fixed
/// source port for its whole life (RFC 5881 §4).
struct TxSocket {
    sock: Socket,
    to: SockAddr,
}

fn open_tx(
    local: Ipv4Addr,
    peer: Ipv4Addr,
    p: &BfdPeer,
    peer_port: u16,
) -> std::io::Result<TxSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(dev) = &p.interface {
        sock.bind_device(Some(dev.as_bytes()))?;
    }
    sock.set_ttl_v4(u32::from(SINGLE_HOP_TTL))?;
    sock.set_tos_v4(TOS_INTERNETWORK_CONTROL)?;
    sock.set_nonblocking(true)?;
    // The kernel's ephemeral range (32768..=60999 by default on Linux) is not RFC 5881's,
    // so pick ports ourselves, starting at a random one.
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let start = rand::random::<u32>() % span;
    let mut last = std::io::Error::from(std::io::ErrorKind::AddrInUse);
    for i in 0..span {
        let port = SOURCE_PORTS.start() + ((start + i) % span) as u16;
        match sock.bind(&SockAddr::from(SocketAddrV4::new(local, port))) {
            Ok(()) => {
                return Ok(TxSocket {
                    sock,
                    to: SockAddr::from(SocketAddrV4::new(peer, peer_port)),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The source address the kernel would use towards `peer`: connect a throwaway UDP socket
/// (no packet is sent) and read its local address.
fn route_source(peer: Ipv4Addr, interface: Option<&str>, port: u16) -> std::io::Result<Ipv4Addr> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(dev) = interface {
        sock.bind_device(Some(dev.as_bytes()))?;
    }
    sock.connect(&SockAddr::from(SocketAddrV4::new(peer, port)))?;
    sock.local_addr()?
        .as_socket_ipv4()
        .map(|a| *a.ip())
        .ok_or_else(|| std::io::Error::other("not an IPv4 socket"))
}

struct Actor {
    sessions: Sessions,
    sockets: HashMap<Ipv4Addr, TxSocket>,
    /// Wanted peers whose local address or socket could not be set up yet.
    pending: Vec<BfdPeer>,
    /// Drops not attributable to a session.
    dropped: BTreeMap<String, u64>,
    peer_port: u16,
    buf: BytesMut,
}

impl Actor {
    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<Datagram>,
        mut commands: mpsc::Receiver<Command>,
        status: watch::Sender<BfdStatus>,
        receiver: JoinHandle<()>,
    ) {
        let mut retry_at: Option<Instant> = None;
        let mut stop: Option<oneshot::Sender<()>> = None;
        let mut counters_published = Instant::now();
        loop {
            // Owners wake on every publication: publish state changes at once, counters
            // alone at most once per PUBLISH_COUNTERS_EVERY.
            let now = Instant::now();
            let fresh = status::build(&self.sessions, &self.dropped);
            let changed = status.borrow().without_counters() != fresh.without_counters();
            // Counters that moved since the last publication wait for the next slot.
            let mut publish_at = None;
            if changed || stop.is_some() || now >= counters_published + PUBLISH_COUNTERS_EVERY {
                status.send_replace(fresh);
                counters_published = now;
            } else if *status.borrow() != fresh {
                publish_at = Some(counters_published + PUBLISH_COUNTERS_EVERY);
            }
            if let Some(done) = stop.take() {
                receiver.abort();
                let _ = done.send(());
                return;
            }
            let deadline = [self.sessions.next_deadline(), retry_at, publish_at]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(d) = datagrams.recv() => self.on_datagram(d),
                c = commands.recv() => match c {
                    Some(Command::SetPeers { owner, peers, done }) => {
                        self.on_set_peers(&owner, peers);
                        retry_at = (!self.pending.is_empty()).then(|| Instant::now() + RETRY_INTERVAL);
                        let _ = done.send(());
                    }
                    Some(Command::AdminDown(down, done)) => {
                        self.on_admin_down(down);
                        let _ = done.send(());
                    }
                    Some(Command::SetTimers(t, done)) => {
                        self.on_set_timers(t);
                        let _ = done.send(());
                    }
                    Some(Command::Shutdown(done)) => {
                        self.on_admin_down(true);
                        stop = Some(done);
                    }
                    // Every handle is gone: say goodbye as on a shutdown nobody waits for.
                    None => {
                        self.on_admin_down(true);
                        let (done, _) = oneshot::channel();
                        stop = Some(done);
                    }
                },
                _ = sleep => {
                    let now = Instant::now();
                    if retry_at.is_some_and(|t| now >= t) {
                        self.retry_pending();
                        retry_at = (!self.pending.is_empty()).then(|| now + RETRY_INTERVAL);
                    }
                    self.on_tick(now);
                }
            }
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        let now = Instant::now();
        if d.ttl != Some(i32::from(SINGLE_HOP_TTL)) {
            self.count_drop(d.src, "ttl_not_255");
            return;
        }
        let packet = match ControlPacket::decode(&d.payload) {
            Ok(p) => p,
            Err(e) => {
                self.count_drop(d.src, e.reason());
                return;
            }
        };
        let peer = match self.sessions.demux(&packet, d.src) {
            Demux::Session(peer) => peer,
            Demux::Drop(reason) => {
                self.count_drop(d.src, reason);
                return;
            }
        };
        let Some(entry) = self.sessions.get_mut(peer) else {
            return;
        };
        entry.packets_in += 1;
        let actions = entry.session.step(now, super::fsm::Input::Received(packet));
        execute(entry, self.sockets.get(&peer), &mut self.buf, actions);
    }

    /// Attributes a drop to the session with that source address when there is one. Anyone
    /// who can reach port 3784 can make us drop a packet (unknown discriminators, bad TTL,
    /// garbage): every drop is counted, and logged at most once per interval.
    fn count_drop(&mut self, src: Ipv4Addr, reason: &str) {
        match self.sessions.get_mut(src) {
            Some(e) => e.count_drop(reason),
            None => *self.dropped.entry(reason.to_string()).or_default() += 1,
        }
        crate::log_limited!(debug, %src, reason, "bfd: packet dropped");
    }

    fn on_tick(&mut self, now: Instant) {
        for entry in self.sessions.entries_mut() {
            if entry.session.next_deadline().is_some_and(|d| now >= d) {
                let actions = entry.session.step(now, super::fsm::Input::Tick);
                execute(entry, self.sockets.get(&entry.peer), &mut self.buf, actions);
            }
        }
    }

    fn on_set_peers(&mut self, owner: &str, peers: Vec<BfdPeer>) {
        let now = Instant::now();
        let plan = self.sessions.set_owner(owner, peers);
        for peer in plan.remove {
            let actions = self.sessions.remove(peer, now);
            if let Some(sock) = self.sockets.remove(&peer) {
                let mut sent = 0u64;
                for a in actions {
                    if let Action::Send(p) = a {
                        sent += u64::from(send(&sock, &mut self.buf, &p));
                    }
                }
                tracing::info!(%peer, admin_down_sent = sent > 0, "bfd: session removed");
            }
        }
        self.pending
            .retain(|p| plan.create.iter().any(|c| c.peer == p.peer));
        for p in plan.create {
            if !self.create(&p, now) && !self.pending.iter().any(|x| x.peer == p.peer) {
                self.pending.push(p);
            }
        }
    }

    fn retry_pending(&mut self) {
        let now = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if !self.create(&p, now) {
                self.pending.push(p);
            }
        }
    }

    /// Opens the session's socket and adds the session; false to try again later.
    fn create(&mut self, p: &BfdPeer, now: Instant) -> bool {
        let local = match p.local {
            Some(l) => l,
            None => match route_source(p.peer, p.interface.as_deref(), self.peer_port) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(peer = %p.peer, error = %e, "bfd: no route to peer, retrying");
                    return false;
                }
            },
        };
        let sock = match open_tx(local, p.peer, p, self.peer_port) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(peer = %p.peer, %local, error = %e, "bfd: socket failed, retrying");
                return false;
            }
        };
        let actions = self.sessions.insert(p, local, now);
        tracing::info!(peer = %p.peer, %local, owner = %p.owner, "bfd: session added");
        self.sockets.insert(p.peer, sock);
        if let Some(entry) = self.sessions.get_mut(p.peer) {
            execute(entry, self.sockets.get(&p.peer), &mut self.buf, actions);
        }
        true
    }

    fn on_set_timers(&mut self, t: BfdTimers) {
        let now = Instant::now();
        for (peer, actions) in self.sessions.set_timers(t, now) {
            if let Some(entry) = self.sessions.get_mut(peer) {
                execute(entry, self.sockets.get(&peer), &mut self.buf, actions);
            }
        }
    }

    fn on_admin_down(&mut self, down: bool) {
        let now = Instant::now();
        for (peer, actions) in self.sessions.set_admin_down(down, now) {
            if let Some(entry) = self.sessions.get_mut(peer) {
                execute(entry, self.sockets.get(&peer), &mut self.buf, actions);
            }
        }
    }
}

/// Carries out a session's actions: sends, logs state changes, counts drops.
fn execute(entry: &mut Entry, sock: Option<&TxSocket>, buf: &mut BytesMut, actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Send(p) => {
                if let Some(s) = sock {
                    if send(s, buf, &p) {
                        entry.packets_out += 1;
                    } else {
                        entry.send_errors += 1;
                    }
                }
            }
            Action::StateChanged { from, to, diag } => {
                if to == State::Up {
                    entry.up_since = Some(SystemTime::now());
                } else if from == State::Up {
                    entry.up_since = None;
                }
                tracing::info!(
                    peer = %entry.peer,
                    from = from.name(),
                    to = to.name(),
                    diag = ?diag,
                    "bfd: session state changed"
                );
            }
            Action::Dropped { reason } => entry.count_drop(reason),
        }
    }
}

/// One non-blocking send; a full socket buffer loses the packet, which the next periodic
/// one replaces.
fn send(s: &TxSocket, buf: &mut BytesMut, p: &ControlPacket) -> bool {
    buf.clear();
    p.encode(buf);
    match s.sock.send_to(buf, &s.to) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "bfd: send failed");
            false
        }
    }
}
