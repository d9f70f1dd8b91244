//! The BGP session state machine of RFC 4271 §8, without I/O or clocks.
//!
//! One [`Session`] drives one TCP connection at a time. Time comes in with
//! every [`Session::step`]; the session keeps deadlines, reports the next
//! one through [`Session::next_deadline`], and fires whatever is due when
//! stepped with [`Input::Tick`].
//!
//! Departures from RFC 4271 §8, all on purpose:
//! - The optional session attributes DelayOpen, SendNOTIFICATIONwithoutOPEN
//!   and the automatic start/stop events are not offered. Instead, after a
//!   failure the session restarts by itself after an exponential back-off
//!   (the IdleHoldTimer of §8.1.1's DampPeerOscillations), until
//!   `ManualStop`.
//! - The ConnectRetryTimer also backs off exponentially, capped at
//!   `connect_retry_max`. No jitter (§10) is applied: that needs a random
//!   source and the session stays deterministic.
//! - While the back-off after an outage runs in Idle, a connection from the
//!   peer is accepted rather than refused; after an error it is refused, as
//!   §8.2.2 says for Idle (see [`super::damping`]).
//! - Passive mode never connects out, even when the ConnectRetryTimer
//!   would (§8.1.1 PassiveTcpEstablishment still connects eventually).
//! - A second connection for the same peer is not tracked here: the actor
//!   runs it in a second `Session` and settles the collision with
//!   [`super::collision::resolve_collision`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::adj_rib_out::{AdjRibOut, ExportPolicy, ExportedRoute};
use super::collision::ConnectionOrigin;
use super::damping;
use super::message::{Capabilities, DecodeContext, Message, MessageError, Open};
use super::notification::{fsm_subcode, Notification};
use super::session_config::{ConfigError, SessionConfig};
use super::session_info::negotiated_families;
pub use super::session_info::{DownReason, ReceivedUpdates, SessionInfo};
use super::update::{Prefix, Update, UpdateEncoding};

/// HoldTimer value while waiting for the peer's OPEN (RFC 4271 §8.2.2
/// suggests 4 minutes).
const OPEN_WAIT_HOLD_TIME: Duration = Duration::from_secs(240);

// The families we announce: IPv4 unicast, and IPv6 unicast with an IPv6 next hop.
use super::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Everything the session reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start connecting (RFC 4271 Event 1). Also ends a previous drain.
    ManualStart,
    /// Stop; on an open BGP connection send Cease / Administrative
    /// Shutdown with `reason` as the RFC 8203 shutdown communication.
    ManualStop {
        reason: String,
    },
    /// The connection asked for with [`Action::Connect`] is up, or the
    /// actor accepted one from the peer (RFC 4271 Events 16/17). A session
    /// owns one connection: handing it an accepted one while in Connect
    /// means the actor drops its own attempt in flight, and any later
    /// outcome of that attempt must not be stepped in.
    TcpConnected {
        origin: ConnectionOrigin,
    },
    /// The connection attempt failed (RFC 4271 Event 18).
    TcpConnectFailed,
    /// The peer closed the connection or it broke (RFC 4271 Event 18).
    TcpClosed,
    Message(Message),
    /// A message from the peer failed [`frame_len`] or [`Message::decode`]
    /// (RFC 4271 Events 21/22, and §6 for UPDATEs).
    ///
    /// [`frame_len`]: super::message::frame_len
    DecodeError(MessageError),
    /// Fire every timer that is due.
    Tick,
    /// Begin a graceful shutdown (RFC 8326): every route is announced
    /// again with GRACEFUL_SHUTDOWN so the network moves traffic away
    /// before a later `ManualStop` tears the session down (or the
    /// routes are withdrawn and the session stays up: `pgcast drain`).
    Drain,
    /// End a drain without a restart (`pgcast undrain`): every route is
    /// announced again without GRACEFUL_SHUTDOWN.
    Undrain,
    /// The full set of prefixes to announce, replacing the previous one.
    SetAnnouncements(Vec<ExportedRoute>),
    /// This connection lost an RFC 4271 §6.8 collision (Event 23).
    CollisionDump,
}

/// What the actor has to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer, dropping any attempt in flight.
    Connect,
    /// Close the connection (or abort the attempt) after writing what was
    /// queued before this action.
    CloseTcp,
    Send(Message),
    /// The session reached Established; routes follow as `Send`s.
    SessionUp(SessionInfo),
    /// An Established session ended. Paired with the `SessionUp` before it.
    SessionDown {
        reason: DownReason,
    },
}

#[derive(Debug, Clone, Default)]
struct Timers {
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    /// Delay before restarting after a failure (RFC 4271 §8.1.1).
    idle_hold: Option<Instant>,
}

/// One BGP session with one peer.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    state: SessionState,
    /// ManualStart seen and no ManualStop since: restart after failures.
    started: bool,
    timers: Timers,
    /// Attempts that failed since the last stable session; drives back-off.
    consecutive_failures: u32,
    /// Set from the peer's OPEN, in OpenConfirm and Established.
    peer: Option<SessionInfo>,
    origin: Option<ConnectionOrigin>,
    established_at: Option<Instant>,
    draining: bool,
    rib: AdjRibOut,
    received: ReceivedUpdates,
    last_down_reason: Option<DownReason>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Result<Session, ConfigError> {
        config.validate()?;
        Ok(Session {
            config,
            state: SessionState::Idle,
            started: false,
            timers: Timers::default(),
            consecutive_failures: 0,
            peer: None,
            origin: None,
            established_at: None,
            draining: false,
            rib: AdjRibOut::default(),
            received: ReceivedUpdates::default(),
            last_down_reason: None,
        })
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// What was negotiated, from OpenConfirm on.
    pub fn peer(&self) -> Option<&SessionInfo> {
        self.peer.as_ref()
    }

    /// The peer's BGP Identifier once its OPEN was accepted; what collision
    /// resolution needs.
    pub fn peer_router_id(&self) -> Option<Ipv4Addr> {
        self.peer.as_ref().map(|peer| peer.peer_router_id)
    }

    /// How to decode messages on the current connection.
    pub fn decode_context(&self) -> DecodeContext {
        DecodeContext {
            four_octet_as: self.peer.as_ref().is_some_and(|peer| peer.four_octet_as),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn received_updates(&self) -> ReceivedUpdates {
        self.received
    }

    /// Why the last attempt or session ended, for status pages.
    pub fn last_down_reason(&self) -> Option<&DownReason> {
        self.last_down_reason.as_ref()
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Sets NEXT_HOP for the routes sent from now on. The actor calls it with the local address
    /// of each new connection when no next hop is configured ("next hop self" for eBGP).
    pub fn set_next_hop(&mut self, next_hop: Ipv4Addr) {
        self.config.next_hop = next_hop;
    }

    /// The prefixes the peer currently has from us.
    pub fn sent_prefixes(&self) -> Vec<Prefix> {
        self.rib.sent_prefixes().copied().collect()
    }

    /// When the current session reached Established.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// When to step [`Input::Tick`] next; `None` when no timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = &self.timers;
        [
            timers.connect_retry,
            timers.hold,
            timers.keepalive,
            timers.idle_hold,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feed one input; returns what to do, in order.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::ManualStart => self.on_manual_start(now, &mut actions),
            Input::ManualStop { reason } => self.on_manual_stop(&reason, &mut actions),
            Input::TcpConnected { origin } => self.on_tcp_connected(now, origin, &mut actions),
            Input::TcpConnectFailed => {
                self.on_tcp_lost(now, DownReason::TcpConnectFailed, &mut actions)
            }
            Input::TcpClosed => self.on_tcp_lost(now, DownReason::TcpClosed, &mut actions),
            Input::Message(message) => self.on_message(now, message, &mut actions),
            Input::DecodeError(error) => self.on_decode_error(now, &error, &mut actions),
            Input::Tick => self.on_tick(now, &mut actions),
            Input::Drain => {
                self.draining = true;
                self.sync_routes(now, &mut actions);
            }
            Input::Undrain => {
                self.draining = false;
                self.sync_routes(now, &mut actions);
            }
            Input::SetAnnouncements(announcements) => {
                self.rib.set_wanted(announcements);
                self.sync_routes(now, &mut actions);
            }
            Input::CollisionDump => self.on_collision_dump(&mut actions),
        }
        actions
    }

    fn on_manual_start(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.state {
            SessionState::Idle => {
                self.started = true;
                self.draining = false;
                self.consecutive_failures = 0;
                self.timers.idle_hold = None;
                self.begin_connecting(now, actions);
            }
            // RFC 4271 §8.2.2: ManualStart is ignored once started.
            SessionState::Connect
            | SessionState::Active
            | SessionState::OpenSent
            | SessionState::OpenConfirm
            | SessionState::Established => {}
        }
    }

    fn on_manual_stop(&mut self, reason: &str, actions: &mut Vec<Action>) {
        self.started = false;
        // RFC 4271 §8.2.2: ManualStop zeroes the ConnectRetryCounter.
        self.consecutive_failures = 0;
        match self.state {
            // Also cancels a pending automatic restart.
            SessionState::Idle => self.timers.idle_hold = None,
            // Abort the connection attempt in flight.
            SessionState::Connect => {
                actions.push(Action::CloseTcp);
                self.go_idle(None, DownReason::ManualStop, actions);
            }
            // Nothing open: just stop listening.
            SessionState::Active => self.go_idle(None, DownReason::ManualStop, actions),
            // RFC 4486 §4 / RFC 8203: say why we leave.
            SessionState::OpenSent | SessionState::OpenConfirm | SessionState::Established => {
                let notification = Notification::administrative_shutdown(reason);
                self.close_with(notification, DownReason::ManualStop, None, actions);
            }
        }
    }

    fn on_tcp_connected(
        &mut self,
        now: Instant,
        origin: ConnectionOrigin,
        actions: &mut Vec<Action>,
    ) {
        match self.state {
            // Not started, or damping a peer whose session failed on an error: refuse it.
            SessionState::Idle if !self.accepts_while_backing_off() => {
                actions.push(Action::CloseTcp)
            }
            // RFC 4271 §8.2.2 Connect/Active, Events 16/17 without DelayOpen: send OPEN and
            // wait for the peer's. Idle too while backing off after an outage: the peer that
            // connects is back (damping.rs).
            SessionState::Idle | SessionState::Connect | SessionState::Active => {
                self.origin = Some(origin);
                self.timers.connect_retry = None;
                self.timers.idle_hold = None;
                self.timers.hold = Some(now + OPEN_WAIT_HOLD_TIME);
                actions.push(Action::Send(Message::Open(self.our_open())));
                self.state = SessionState::OpenSent;
            }
            // This session already has its connection; a second one must
            // go to a second Session (see collision.rs). Nothing here owns
            // it, so nothing here may close it.
            SessionState::OpenSent | SessionState::OpenConfirm | SessionState::Established => {
                tracing::warn!(state = ?self.state, "second connection handed to a busy session, ignored");
            }
        }
    }

    /// Whether a connection from the peer is taken while Idle waits out the back-off: only
    /// after an outage (see [`damping::is_outage`]).
    fn accepts_while_backing_off(&self) -> bool {
        self.started
            && self.timers.idle_hold.is_some()
            && self
                .last_down_reason
                .as_ref()
                .is_some_and(damping::is_outage)
    }

    fn on_tcp_lost(&mut self, now: Instant, reason: DownReason, actions: &mut Vec<Action>) {
        match self.state {
            // Left over from a connection already given up on.
            SessionState::Idle => {}
            // RFC 4271 §8.2.2 Connect/Active, Event 18: to Idle.
            SessionState::Connect | SessionState::Active => {
                self.go_idle(Some(now), reason, actions)
            }
            // RFC 4271 §8.2.2 OpenSent, Events 17/18: back to Active with
            // the ConnectRetryTimer running, listening for the peer.
            SessionState::OpenSent => {
                self.clear_connection();
                self.last_down_reason = Some(reason);
                self.state = SessionState::Active;
                if !self.config.passive {
                    self.timers.connect_retry = Some(now + self.take_backoff());
                }
            }
            SessionState::OpenConfirm | SessionState::Established => {
                self.go_idle(Some(now), reason, actions)
            }
        }
    }

    fn on_message(&mut self, now: Instant, message: Message, actions: &mut Vec<Action>) {
        match (self.state, message) {
            // Left over from a connection already given up on.
            (SessionState::Idle, _) => {}
            // RFC 4271 §8.2.2 Connect/Active, "any other event": there is no
            // BGP connection to send a NOTIFICATION on.
            (SessionState::Connect, _) => {
                actions.push(Action::CloseTcp);
                self.go_idle(Some(now), DownReason::UnexpectedInput, actions);
            }
            (SessionState::Active, _) => {
                self.go_idle(Some(now), DownReason::UnexpectedInput, actions)
            }
            // RFC 4271 §8.2.2: a NOTIFICATION in any open state ends it.
            (
                SessionState::OpenSent | SessionState::OpenConfirm | SessionState::Established,
                Message::Notification(notification),
            ) => {
                tracing::info!(?notification, communication = ?notification.shutdown_communication(), "peer sent NOTIFICATION");
                actions.push(Action::CloseTcp);
                self.go_idle(
                    Some(now),
                    DownReason::NotificationReceived(notification),
                    actions,
                );
            }
            (SessionState::OpenSent, Message::Open(open)) => self.on_open(now, open, actions),
            (SessionState::OpenConfirm, Message::Keepalive) => self.on_established(now, actions),
            (SessionState::Established, Message::Keepalive) => self.restart_hold_timer(now),
            (SessionState::Established, Message::Update(update)) => {
                self.restart_hold_timer(now);
                self.count_received(&update);
            }
            (SessionState::Established, Message::RouteRefresh { afi, safi }) => {
                // Any message shows the peer is alive; RFC 4271 §4.4 only
                // names KEEPALIVE and UPDATE because it predates RFC 2918.
                self.restart_hold_timer(now);
                // RFC 2918 §4: resend everything for a family we
                // advertised, ignore requests for any other. (Both families are resent: a
                // repeated announcement replaces itself, RFC 4271 §3.1.)
                let ours = self.our_capabilities();
                if (afi, safi) == (AFI_IPV4, SAFI_UNICAST)
                    || (ours.mp_ipv6_unicast && (afi, safi) == (AFI_IPV6, SAFI_UNICAST))
                {
                    self.rib.forget_sent();
                    self.sync_routes(now, actions);
                }
            }
            // RFC 4271 §6.6 / RFC 6608: any other message is out of place.
            (SessionState::OpenSent, other) => self.fsm_error(
                now,
                fsm_subcode::UNEXPECTED_MESSAGE_IN_OPEN_SENT,
                &other,
                actions,
            ),
            (SessionState::OpenConfirm, other) => self.fsm_error(
                now,
                fsm_subcode::UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
                &other,
                actions,
            ),
            (SessionState::Established, other @ Message::Open(_)) => self.fsm_error(
                now,
                fsm_subcode::UNEXPECTED_MESSAGE_IN_ESTABLISHED,
                &other,
                actions,
            ),
        }
    }

    fn on_decode_error(&mut self, now: Instant, error: &MessageError, actions: &mut Vec<Action>) {
        match self.state {
            SessionState::Idle => {}
            SessionState::Connect => {
                actions.push(Action::CloseTcp);
                self.go_idle(Some(now), DownReason::UnexpectedInput, actions);
            }
            SessionState::Active => self.go_idle(Some(now), DownReason::UnexpectedInput, actions),
            // RFC 4271 §6: every message error is answered with its
            // NOTIFICATION and the connection is closed.
            SessionState::OpenSent | SessionState::OpenConfirm | SessionState::Established => {
                tracing::warn!(%error, "message from peer rejected");
                let notification = error.notification();
                let reason = DownReason::NotificationSent(notification.clone());
                self.close_with(notification, reason, Some(now), actions);
            }
        }
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|at| at <= now);
        // RFC 4271 §6.5: the hold timer first; when it fires nothing else
        // matters.
        if due(self.timers.hold) {
            let notification = Notification::hold_timer_expired();
            self.close_with(
                notification,
                DownReason::HoldTimerExpired,
                Some(now),
                actions,
            );
            return;
        }
        if due(self.timers.keepalive) {
            actions.push(Action::Send(Message::Keepalive));
            self.restart_keepalive_timer(now);
        }
        if due(self.timers.connect_retry) {
            // RFC 4271 §8.2.2 Event 9. In Connect the attempt timed out:
            // count the failure, abort it and try again. In Active the wait
            // is over: connect now.
            if self.state == SessionState::Connect {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                actions.push(Action::CloseTcp);
            }
            self.timers.connect_retry = Some(now + self.config.backoff(self.consecutive_failures));
            actions.push(Action::Connect);
            self.state = SessionState::Connect;
        }
        if due(self.timers.idle_hold) {
            self.timers.idle_hold = None;
            if self.started && self.state == SessionState::Idle {
                self.begin_connecting(now, actions);
            }
        }
    }

    fn on_collision_dump(&mut self, actions: &mut Vec<Action>) {
        // The other connection carries on, so this session must not restart.
        self.started = false;
        match self.state {
            SessionState::Idle => {}
            SessionState::Connect => {
                actions.push(Action::CloseTcp);
                self.go_idle(None, DownReason::CollisionDump, actions);
            }
            SessionState::Active => self.go_idle(None, DownReason::CollisionDump, actions),
            // RFC 4271 §6.8 / RFC 4486 §4: Cease, Connection Collision
            // Resolution. Honoured in Established too: keeping an
            // Established connection is the actor's call (§6.8 allows both).
            SessionState::OpenSent | SessionState::OpenConfirm | SessionState::Established => {
                self.close_with(
                    Notification::connection_collision(),
                    DownReason::CollisionDump,
                    None,
                    actions,
                );
            }
        }
    }

    /// Check the peer's OPEN against our configuration (RFC 4271 §6.2)
    /// and agree on the session parameters.
    fn on_open(&mut self, now: Instant, open: Open, actions: &mut Vec<Action>) {
        let rejection = if open.asn != self.config.remote_as {
            Some(MessageError::BadPeerAs { asn: open.asn })
        } else if self.config.is_ibgp() && open.router_id == self.config.router_id {
            // RFC 6286 §2.2: identifiers are unique within an AS; between
            // ASes equal ones are allowed.
            Some(MessageError::BadBgpIdentifier {
                identifier: open.router_id,
            })
        } else {
            None
        };
        if let Some(error) = rejection {
            tracing::warn!(%error, "peer OPEN rejected");
            let notification = error.notification();
            let reason = DownReason::NotificationSent(notification.clone());
            self.close_with(notification, reason, Some(now), actions);
            return;
        }

        // RFC 4271 §4.2: the smaller hold time wins; keepalives every third.
        let hold_time = self.config.hold_time.min(open.hold_time);
        let capabilities = open.capabilities;
        let (ipv4_unicast, ipv6_unicast) =
            negotiated_families(&self.our_capabilities(), &capabilities);
        let info = SessionInfo {
            peer_as: open.asn,
            peer_router_id: open.router_id,
            hold_time,
            keepalive_interval: Duration::from_secs(u64::from(hold_time)) / 3,
            four_octet_as: capabilities.four_octet_as.is_some(),
            route_refresh: capabilities.route_refresh,
            ipv4_unicast,
            ipv6_unicast,
            origin: self.origin.unwrap_or(ConnectionOrigin::Local),
        };
        self.peer = Some(info);
        self.timers.connect_retry = None;
        actions.push(Action::Send(Message::Keepalive));
        self.restart_hold_timer(now);
        self.restart_keepalive_timer(now);
        self.state = SessionState::OpenConfirm;
    }

    fn on_established(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(info) = self.peer.clone() else {
            // OpenConfirm is only entered with the peer's OPEN accepted.
            tracing::error!("OpenConfirm without peer parameters");
            return;
        };
        self.state = SessionState::Established;
        self.established_at = Some(now);
        self.restart_hold_timer(now);
        tracing::info!(peer_as = info.peer_as, peer_router_id = %info.peer_router_id, hold_time = info.hold_time, "BGP session established");
        actions.push(Action::SessionUp(info.clone()));
        self.rib.forget_sent();
        self.sync_routes(now, actions);
        // RFC 4724 §2 recommends End-of-RIB after the initial table, per family, even
        // without graceful restart.
        if info.ipv4_unicast {
            actions.push(Action::Send(Message::Update(Update::end_of_rib())));
            self.restart_keepalive_timer(now);
        }
        if info.ipv6_unicast {
            match Update::end_of_rib_ipv6() {
                Ok(marker) => actions.push(Action::Send(Message::Update(marker))),
                Err(error) => tracing::error!(%error, "cannot encode the IPv6 End-of-RIB"),
            }
            self.restart_keepalive_timer(now);
        }
    }

    /// Send the UPDATEs that bring the peer up to date, if Established.
    fn sync_routes(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.state != SessionState::Established {
            return;
        }
        let Some(peer) = &self.peer else {
            return;
        };
        let encoding = UpdateEncoding {
            local_as: self.config.local_as,
            ibgp: self.config.is_ibgp(),
            four_octet_as: peer.four_octet_as,
            next_hop: self.config.next_hop,
            next_hop_ipv6: self.config.next_hop_ipv6,
        };
        let policy = ExportPolicy {
            draining: self.draining,
            local_pref: self.config.local_pref,
            ipv4_unicast: peer.ipv4_unicast,
            ipv6_unicast: peer.ipv6_unicast,
        };
        let updates = self.rib.sync(&encoding, policy);
        if updates.is_empty() {
            return;
        }
        actions.extend(
            updates
                .into_iter()
                .map(|update| Action::Send(Message::Update(update))),
        );
        // RFC 4271 §8.2.2 Established: sending an UPDATE restarts the
        // KeepaliveTimer.
        self.restart_keepalive_timer(now);
    }

    fn count_received(&mut self, update: &Update) {
        let summary = update.summary();
        let received = &mut self.received;
        received.messages += 1;
        received.announced_prefixes +=
            u64::from(summary.announced_prefixes) + u64::from(summary.mp_reach_prefixes);
        received.withdrawn_prefixes +=
            u64::from(summary.withdrawn_prefixes) + u64::from(summary.mp_unreach_prefixes);
        if let Some(error) = &summary.treat_as_withdraw {
            received.treat_as_withdraw += 1;
            // RFC 7606 §2: log it; the session stays up.
            tracing::warn!(%error, "UPDATE with malformed attribute treated as withdraw");
        }
    }

    fn fsm_error(
        &mut self,
        now: Instant,
        subcode: u8,
        unexpected: &Message,
        actions: &mut Vec<Action>,
    ) {
        tracing::warn!(state = ?self.state, message_type = unexpected.message_type(), "unexpected message");
        let notification = Notification::fsm_error(subcode, unexpected.message_type());
        let reason = DownReason::NotificationSent(notification.clone());
        self.close_with(notification, reason, Some(now), actions);
    }

    fn our_open(&self) -> Open {
        Open {
            asn: self.config.local_as,
            hold_time: self.config.hold_time,
            router_id: self.config.router_id,
            capabilities: self.our_capabilities(),
        }
    }

    /// What we advertise: IPv6 unicast only with an IPv6 next hop to announce it with.
    fn our_capabilities(&self) -> Capabilities {
        Capabilities {
            four_octet_as: Some(self.config.local_as),
            mp_ipv4_unicast: true,
            mp_ipv6_unicast: self.config.next_hop_ipv6.is_some(),
            route_refresh: true,
            mp_other_families: false,
        }
    }

    fn begin_connecting(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.config.passive {
            self.state = SessionState::Active;
            return;
        }
        self.timers.connect_retry = Some(now + self.config.backoff(self.consecutive_failures));
        actions.push(Action::Connect);
        self.state = SessionState::Connect;
    }

    /// Send `notification`, close the connection and go Idle.
    fn close_with(
        &mut self,
        notification: Notification,
        reason: DownReason,
        restart_from: Option<Instant>,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::Send(Message::Notification(notification)));
        actions.push(Action::CloseTcp);
        self.go_idle(restart_from, reason, actions);
    }

    /// Enter Idle. With `restart_from`, and the session still started,
    /// schedule the automatic restart after the current back-off.
    fn go_idle(
        &mut self,
        restart_from: Option<Instant>,
        reason: DownReason,
        actions: &mut Vec<Action>,
    ) {
        if self.state == SessionState::Established {
            // A session that stayed up at least as long as the back-off
            // ceiling was healthy: the next failure starts the back-off
            // over. One that drops sooner keeps backing off, which is what
            // damps a flapping peer (RFC 4271 §8.1.1).
            let stable = self.established_at.is_some_and(|since| {
                restart_from
                    .is_some_and(|now| now.duration_since(since) >= self.config.connect_retry_max)
            });
            if stable {
                self.consecutive_failures = 0;
            }
            tracing::info!(?reason, "BGP session down");
            actions.push(Action::SessionDown {
                reason: reason.clone(),
            });
        }
        self.clear_connection();
        self.timers = Timers::default();
        self.last_down_reason = Some(reason);
        self.state = SessionState::Idle;
        if let Some(now) = restart_from.filter(|_| self.started) {
            self.timers.idle_hold = Some(now + self.take_backoff());
        }
    }

    fn clear_connection(&mut self) {
        self.peer = None;
        self.origin = None;
        self.established_at = None;
        self.timers.hold = None;
        self.timers.keepalive = None;
        self.rib.forget_sent();
    }

    fn restart_hold_timer(&mut self, now: Instant) {
        self.timers.hold = self
            .negotiated_hold_time()
            .map(|hold| now + Duration::from_secs(u64::from(hold)));
    }

    fn restart_keepalive_timer(&mut self, now: Instant) {
        self.timers.keepalive = self
            .peer
            .as_ref()
            .filter(|peer| peer.hold_time > 0)
            .map(|peer| now + peer.keepalive_interval);
    }

    /// The agreed hold time, `None` when it is zero (RFC 4271 §4.2: no
    /// hold timer at all).
    fn negotiated_hold_time(&self) -> Option<u16> {
        self.peer
            .as_ref()
            .map(|peer| peer.hold_time)
            .filter(|&hold| hold > 0)
    }

    /// The back-off for this failure, counting it.
    fn take_backoff(&mut self) -> Duration {
        let delay = self.config.backoff(self.consecutive_failures);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        delay
    }
}
