//! The actor of one BGP neighbour: owns its TCP connections, feeds the pure [`Session`] with
//! what arrives and carries out what it returns. A second connection (the peer connected while
//! we did) runs in a second `Session` until RFC 4271 section 6.8 collision resolution picks one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::sockopt::{set_gtsm, set_tcp_md5};
use super::status::{BgpNeighborStatus, IPV4_UNICAST, IPV6_UNICAST};
use super::{
    frame_len, resolve_collision, Action, ConnectionOrigin, ExportedRoute, Input, Message,
    MessageError, Prefix, Session, SessionInfo, SessionState, SpeakerIdentity,
};
use crate::config::BgpNeighborConfig;

/// A peer that stops reading cannot block the session forever: a write that takes longer
/// counts as a broken connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routing side asks of a neighbour.
#[derive(Debug)]
pub enum Command {
    /// The prefixes to announce now (all others are withdrawn).
    Announce(Vec<(IpAddr, u8)>),
    /// RFC 8326: announce everything again with GRACEFUL_SHUTDOWN (true), or end that
    /// (false: `pgcast undrain`).
    GracefulShutdown(bool),
    /// Cease / Administrative Shutdown with this RFC 8203 message, then stop.
    Stop {
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// Everything the neighbour task reacts to.
#[derive(Debug)]
pub(super) enum Event {
    Command(Command),
    /// The listener accepted a connection from this neighbour's address.
    Accepted(TcpStream),
    ConnectDone {
        attempt: u64,
        result: std::io::Result<TcpStream>,
    },
    Frame {
        conn: u64,
        frame: Bytes,
    },
    FrameError {
        conn: u64,
        error: MessageError,
    },
    Closed {
        conn: u64,
    },
}

struct Conn {
    id: u64,
    origin: ConnectionOrigin,
    local: Option<Ipv4Addr>,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One session and the connection it runs on.
struct Link {
    session: Session,
    conn: Option<Conn>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Main,
    Second,
}

pub(super) struct NeighborTask {
    cfg: BgpNeighborConfig,
    us: SpeakerIdentity,
    main: Link,
    second: Option<Link>,
    connecting: Option<(u64, JoinHandle<()>)>,
    next_id: u64,
    wanted: Vec<ExportedRoute>,
    draining: bool,
    events: mpsc::Sender<Event>,
    status: watch::Sender<BgpNeighborStatus>,
    messages_in: u64,
    messages_out: u64,
    last_error: Option<String>,
}

impl NeighborTask {
    pub(super) fn new(
        cfg: BgpNeighborConfig,
        us: SpeakerIdentity,
        session: Session,
        events: mpsc::Sender<Event>,
        status: watch::Sender<BgpNeighborStatus>,
    ) -> Self {
        NeighborTask {
            cfg,
            us,
            main: Link {
                session,
                conn: None,
            },
            second: None,
            connecting: None,
            next_id: 1,
            wanted: Vec::new(),
            draining: false,
            events,
            status,
            messages_in: 0,
            messages_out: 0,
            last_error: None,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let start = self.main.session.step(Instant::now(), Input::ManualStart);
        self.apply(Which::Main, start).await;
        self.publish();
        loop {
            let deadline = [
                self.main.session.next_deadline(),
                self.second.as_ref().and_then(|s| s.session.next_deadline()),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                e = rx.recv() => match e { Some(e) => e, None => break },
                _ = sleep => {
                    self.step(Which::Main, Input::Tick).await;
                    if self.second.is_some() {
                        self.step(Which::Second, Input::Tick).await;
                    }
                    self.after_step().await;
                    continue;
                }
            };
            if let Some(done) = self.handle(event).await {
                self.publish();
                let _ = done.send(());
                break;
            }
            self.after_step().await;
        }
        if let Some((_, task)) = self.connecting.take() {
            task.abort();
        }
    }

    /// Handles one event; returns the completion signal when the neighbour must stop.
    async fn handle(&mut self, event: Event) -> Option<oneshot::Sender<()>> {
        match event {
            Event::Command(Command::Announce(prefixes)) => {
                self.wanted = prefixes
                    .into_iter()
                    .filter_map(|(addr, len)| Prefix::new(addr, len))
                    .map(|prefix| ExportedRoute {
                        prefix,
                        med: self.cfg.med,
                        communities: self.cfg.communities.clone(),
                        large_communities: self.cfg.large_communities.clone(),
                        graceful_shutdown: false,
                    })
                    .collect();
                self.step_both(Input::SetAnnouncements(self.wanted.clone()))
                    .await;
            }
            Event::Command(Command::GracefulShutdown(on)) => {
                self.draining = on;
                let input = if on { Input::Drain } else { Input::Undrain };
                self.step_both(input).await;
            }
            Event::Command(Command::Stop { reason, done }) => {
                self.step_both(Input::ManualStop { reason }).await;
                return Some(done);
            }
            Event::Accepted(stream) => self.on_accepted(stream).await,
            Event::ConnectDone { attempt, result } => {
                if self.connecting.as_ref().map(|(id, _)| *id) != Some(attempt) {
                    return None; // an attempt given up on; its stream (if any) is dropped
                }
                self.connecting = None;
                match result {
                    Ok(stream) => {
                        let conn = self.adopt(stream, ConnectionOrigin::Local);
                        self.attach(Which::Main, conn).await;
                    }
                    Err(e) => {
                        self.last_error = Some(format!("connect: {e}"));
                        self.step(Which::Main, Input::TcpConnectFailed).await;
                    }
                }
            }
            Event::Frame { conn, frame } => {
                if let Some(which) = self.which(conn) {
                    self.messages_in += 1;
                    let ctx = self.link(which).session.decode_context();
                    let input = match Message::decode(frame, ctx) {
                        Ok(m) => Input::Message(m),
                        Err(e) => {
                            self.last_error = Some(format!("received a bad message: {e}"));
                            Input::DecodeError(e)
                        }
                    };
                    self.step(which, input).await;
                }
            }
            Event::FrameError { conn, error } => {
                if let Some(which) = self.which(conn) {
                    self.last_error = Some(format!("received a bad message: {error}"));
                    self.step(which, Input::DecodeError(error)).await;
                }
            }
            Event::Closed { conn } => {
                if let Some(which) = self.which(conn) {
                    self.link_mut(which).conn = None;
                    self.step(which, Input::TcpClosed).await;
                }
            }
        }
        None
    }

    async fn on_accepted(&mut self, stream: TcpStream) {
        if self.cfg.ttl_security {
            if let Err(e) = set_gtsm(stream.as_fd()) {
                tracing::warn!(peer = %self.cfg.address, "GTSM on an accepted connection: {e}");
                return;
            }
        }
        match self.main.session.state() {
            // Nothing open yet: the peer's connection becomes the session's. In Idle the
            // session decides: it takes the connection while backing off after an outage
            // and closes it otherwise (fsm.rs, `accepts_while_backing_off`).
            SessionState::Idle | SessionState::Connect | SessionState::Active => {
                if let Some((_, task)) = self.connecting.take() {
                    task.abort();
                }
                let conn = self.adopt(stream, ConnectionOrigin::Remote);
                self.attach(Which::Main, conn).await;
            }
            // Both sides connected: run the second connection until one OPEN tells us the
            // peer's BGP Identifier (RFC 4271 section 6.8).
            SessionState::OpenSent | SessionState::OpenConfirm if self.second.is_none() => {
                let Ok(mut session) = Session::new(self.main.session.config().clone()) else {
                    return;
                };
                let now = Instant::now();
                // ManualStart would connect out; only the accepted connection is wanted.
                let _ = session.step(now, Input::ManualStart);
                let _ = session.step(now, Input::SetAnnouncements(self.wanted.clone()));
                if self.draining {
                    let _ = session.step(now, Input::Drain);
                }
                self.second = Some(Link {
                    session,
                    conn: None,
                });
                let conn = self.adopt(stream, ConnectionOrigin::Remote);
                self.attach(Which::Second, conn).await;
            }
            // Established, or a second connection already running: RFC 4271 section 6.8
            // closes the newcomer.
            state => {
                // Once per connection the peer's address opens: limited.
                crate::log_limited!(debug, peer = %self.cfg.address, ?state, "connection from the peer refused");
            }
        }
    }

    /// Wraps a connected stream: a reader task feeding frames back into this actor.
    fn adopt(&mut self, stream: TcpStream, origin: ConnectionOrigin) -> Conn {
        let id = self.next_id;
        self.next_id += 1;
        let local = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => Some(*a.ip()),
            _ => None,
        };
        let _ = stream.set_nodelay(true);
        let (rd, writer) = stream.into_split();
        let reader = tokio::spawn(read_frames(id, rd, self.events.clone()));
        Conn {
            id,
            origin,
            local,
            writer,
            reader,
        }
    }

    async fn attach(&mut self, which: Which, conn: Conn) {
        let origin = conn.origin;
        if self.cfg.next_hop.is_none() {
            if let Some(local) = conn.local {
                self.link_mut(which).session.set_next_hop(local);
            }
        }
        self.link_mut(which).conn = Some(conn);
        self.step(which, Input::TcpConnected { origin }).await;
    }

    fn which(&self, conn: u64) -> Option<Which> {
        if self.main.conn.as_ref().is_some_and(|c| c.id == conn) {
            Some(Which::Main)
        } else if self
            .second
            .as_ref()
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| c.id == conn)
        {
            Some(Which::Second)
        } else {
            None
        }
    }

    fn link(&self, which: Which) -> &Link {
        match (which, &self.second) {
            (Which::Second, Some(s)) => s,
            _ => &self.main,
        }
    }

    fn link_mut(&mut self, which: Which) -> &mut Link {
        match (which, &mut self.second) {
            (Which::Second, Some(s)) => s,
            _ => &mut self.main,
        }
    }

    async fn step_both(&mut self, input: Input) {
        if self.second.is_some() {
            self.step(Which::Second, input.clone()).await;
        }
        self.step(Which::Main, input).await;
    }

    async fn step(&mut self, which: Which, input: Input) {
        if which == Which::Second && self.second.is_none() {
            return;
        }
        let actions = self.link_mut(which).session.step(Instant::now(), input);
        self.apply(which, actions).await;
    }

    /// Carries out a session's actions in order. Failures to write become `TcpClosed`.
    async fn apply(&mut self, which: Which, actions: Vec<Action>) {
        let mut pending = std::collections::VecDeque::from(actions);
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Connect => {
                    if which == Which::Main {
                        self.connect();
                    }
                }
                Action::CloseTcp => {
                    if which == Which::Main {
                        if let Some((_, task)) = self.connecting.take() {
                            task.abort();
                        }
                    }
                    if let Some(mut conn) = self.link_mut(which).conn.take() {
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.writer.shutdown()).await;
                    }
                }
                Action::Send(message) => {
                    let mut buf = BytesMut::with_capacity(64);
                    message.encode(&mut buf);
                    let Some(conn) = self.link_mut(which).conn.as_mut() else {
                        continue;
                    };
                    let written =
                        tokio::time::timeout(WRITE_TIMEOUT, conn.writer.write_all(&buf)).await;
                    if matches!(written, Ok(Ok(()))) {
                        self.messages_out += 1;
                    } else {
                        self.last_error = Some("connection broke while sending".into());
                        self.link_mut(which).conn = None;
                        let more = self
                            .link_mut(which)
                            .session
                            .step(Instant::now(), Input::TcpClosed);
                        pending.extend(more);
                    }
                }
                Action::SessionUp(info) => {
                    tracing::info!(peer = %self.cfg.address, peer_as = info.peer_as, hold_time = info.hold_time, families = ?negotiated_families(&info), "BGP neighbor up");
                    if self.cfg.next_hop_ipv6.is_some() && !info.ipv6_unicast {
                        tracing::warn!(peer = %self.cfg.address, "the router did not offer IPv6 unicast: no IPv6 prefix is sent to it");
                    }
                }
                Action::SessionDown { reason } => {
                    tracing::warn!(peer = %self.cfg.address, ?reason, "BGP neighbor down");
                    self.last_error = Some(format!("{reason:?}"));
                }
            }
        }
    }

    /// After any step: settle a connection collision, drop a finished second link.
    async fn after_step(&mut self) {
        let Some(second) = &self.second else {
            self.publish();
            return;
        };
        let open =
            |s: SessionState| matches!(s, SessionState::OpenSent | SessionState::OpenConfirm);
        let (m, s) = (self.main.session.state(), second.session.state());
        if second.conn.is_none() || s == SessionState::Idle {
            // Its connection is gone; nothing to tell the peer.
            self.second = None;
            self.publish();
            return;
        }
        let loser = if m == SessionState::Established {
            Some(Which::Second)
        } else if s == SessionState::Established || self.main.conn.is_none() {
            Some(Which::Main)
        } else if let (true, true, Some(peer_id)) = (
            open(m),
            open(s),
            self.main
                .session
                .peer_router_id()
                .or(second.session.peer_router_id()),
        ) {
            let keep = resolve_collision(
                self.us,
                SpeakerIdentity {
                    router_id: peer_id,
                    asn: self.cfg.remote_as,
                },
            );
            let main_origin = self.main.conn.as_ref().map(|c| c.origin);
            if main_origin == Some(ConnectionOrigin::Remote) {
                // Both came from the peer: §6.8 compares ours with theirs, which is not the
                // case here. The newer one wins; the older is most likely left over from
                // before the peer restarted.
                Some(Which::Main)
            } else if main_origin == Some(keep) {
                Some(Which::Second)
            } else {
                Some(Which::Main)
            }
        } else {
            None
        };
        match loser {
            Some(Which::Second) => {
                self.step(Which::Second, Input::CollisionDump).await;
                self.second = None;
            }
            Some(Which::Main) => {
                self.step(Which::Main, Input::CollisionDump).await;
                if let Some((_, task)) = self.connecting.take() {
                    task.abort();
                }
                if let Some(second) = self.second.take() {
                    self.main = second;
                }
            }
            None => {}
        }
        self.publish();
    }

    fn connect(&mut self) {
        if let Some((_, task)) = self.connecting.take() {
            task.abort();
        }
        let attempt = self.next_id;
        self.next_id += 1;
        let cfg = self.cfg.clone();
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let result = connect_to(&cfg).await;
            let _ = events.send(Event::ConnectDone { attempt, result }).await;
        });
        self.connecting = Some((attempt, task));
    }

    fn publish(&self) {
        let s = &self.main.session;
        let conn = self.main.conn.as_ref();
        let status = BgpNeighborStatus {
            state: format!("{:?}", s.state()),
            established_at: s.established_at(),
            hold_time: s.peer().map_or(self.cfg.hold_time, |p| p.hold_time),
            connection: conn.map(|c| match c.origin {
                ConnectionOrigin::Local => "local".to_string(),
                ConnectionOrigin::Remote => "remote".to_string(),
            }),
            local_address: conn.and_then(|c| c.local),
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            updates_in: s.received_updates().messages,
            sent: s
                .sent_prefixes()
                .iter()
                .map(|p| format!("{}/{}", p.address(), p.length()))
                .collect(),
            graceful_shutdown: s.is_draining(),
            last_error: self.last_error.clone(),
            families: s.peer().map(negotiated_families).unwrap_or_default(),
            ..BgpNeighborStatus::idle(&self.cfg)
        };
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }
}

/// The families a session carries, as `pgcast status` names them.
fn negotiated_families(info: &SessionInfo) -> Vec<String> {
    [
        (info.ipv4_unicast, IPV4_UNICAST),
        (info.ipv6_unicast, IPV6_UNICAST),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// Opens the TCP connection to the neighbour with its source address, TCP-MD5 key and GTSM.
async fn connect_to(cfg: &BgpNeighborConfig) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(password) = &cfg.password {
        set_tcp_md5(socket.as_fd(), cfg.address, password.as_bytes())
            .map_err(std::io::Error::other)?;
    }
    if cfg.ttl_security {
        set_gtsm(socket.as_fd()).map_err(std::io::Error::other)?;
    }
    if let Some(local) = cfg.local_address {
        socket.bind(SocketAddr::V4(SocketAddrV4::new(local, 0)))?;
    }
    socket
        .connect(SocketAddr::V4(SocketAddrV4::new(cfg.address, cfg.port)))
        .await
}

/// Splits the byte stream into messages (RFC 4271 section 4.1). A frame is at most 4096 bytes
/// and the channel is bounded, so a peer flooding UPDATEs costs bounded memory.
async fn read_frames(conn: u64, mut rd: OwnedReadHalf, events: mpsc::Sender<Event>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match frame_len(&buf) {
            Ok(Some(n)) => {
                let frame = buf.split_to(n).freeze();
                if events.send(Event::Frame { conn, frame }).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                let _ = events.send(Event::FrameError { conn, error }).await;
                return;
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                let _ = events.send(Event::Closed { conn }).await;
                return;
            }
        }
    }
}
