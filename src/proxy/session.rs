//! One client session after its start (`session_start.rs`): a loop that reads client
//! messages, groups them into units (a simple Query, or an extended-protocol batch up to Sync),
//! routes each unit to the primary or a replica connection, and relays the replies in order.
//!
//! Ordering rule: replies must reach the client in the order it sent its messages, so a unit
//! only goes to a connection other than a busy one after that connection is idle again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;

use super::cancel::CancelTargets;
use super::classify::StatementClass;
use super::client_messages::is_discard_all;
use super::frames::Next;
use super::message::{self, ErrorFields, Message};
use super::plan::{self, Action, Fallback, Plan, SessionFacts};
use super::pool::Reset;
use super::retry::Held;
use super::router::Target;
use super::slot::{Reply, Slot, StatementInfo, UnitMessages};
use super::slots::Slots;
use super::spare_buffers::{self, Kind};
use super::startup::ClientStartup;
use super::stream::{Reader, Writer};
use super::tls;
use super::{ProxyContext, ProxyError};
use crate::config::{Config, ListenerConfig, ListenerRole, PoolMode, ReadYourWrites};

/// Extended-protocol messages are buffered until Sync; past this size the batch is sent early.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;
/// An extended batch with an Execute but no Sync or Flush is sent once the client has been
/// quiet this long (it may be waiting for an error PostgreSQL would flush at once).
const QUIET_BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);
/// Past this many replayed SET statements a session stays on the primary instead.
const MAX_SESSION_SETS: usize = 1000;

/// A unit's messages: usually one (a simple Query), kept inline.
pub(super) type UnitMessageList = SmallVec<[Message; 1]>;

/// Client messages that are routed together.
#[derive(Default)]
pub(super) struct Unit {
    pub(super) messages: UnitMessageList,
    /// Usually one class (one statement), kept inline.
    pub(super) classes: SmallVec<[StatementClass; 2]>,
    pub(super) extended: bool,
    /// Ends with Sync (extended) — simple queries always end.
    pub(super) ends: bool,
    /// SQL of session-level SETs in the unit, replayed elsewhere after success.
    pub(super) set_sql: Vec<String>,
    /// Mentions SERIALIZABLE: a hot standby refuses serializable transactions.
    pub(super) serializable: bool,
    /// A session SET mentioning SERIALIZABLE (as the session's default isolation).
    pub(super) set_serializable: bool,
    /// A SQL DEALLOCATE of protocol-level statements, handled like a Close.
    pub(super) deallocate: Option<super::deallocate::Deallocate>,
    /// Sent before its Sync (client quiet, or size limit): the rest of the batch is unknown.
    pub(super) unsynced: bool,
    /// Named statements the unit's Parse messages define that the client did not have: a
    /// connection that has one of these names from another session closes it first.
    pub(super) new_statements: Vec<String>,
    pub(super) bytes: usize,
}

pub struct Session {
    pub(super) ctx: Arc<ProxyContext>,
    pub(super) config: Arc<Config>,
    pub(super) listener: Arc<ListenerConfig>,
    pub(super) client: ClientStartup,
    pub(super) classify: Arc<super::classify::ClassifyCache>,
    pub(super) slots: Slots,
    pub(super) cancel_targets: Arc<CancelTargets>,
    pub(super) statements: HashMap<String, StatementInfo>,
    pub(super) batch: Unit,
    /// Boxed, like the other rarely-held parts: an idle session stays small.
    pub(super) waiting: Option<Box<Unit>>,
    pub(super) pinned_primary: bool,
    pub(super) last_write: Option<Instant>,
    pub(super) session_sets: Vec<String>,
    /// Dropping messages until Sync after a unit could not be routed.
    pub(super) discard_until_sync: bool,
    /// A plain BEGIN the client sent, not yet sent anywhere: the transaction's first statement
    /// decides where it runs, so `BEGIN; SET TRANSACTION READ ONLY; ...` can use a replica.
    pub(super) deferred_begin: Option<String>,
    /// That BEGIN was `BEGIN READ ONLY`.
    pub(super) deferred_begin_read_only: bool,
    /// A replica unit kept for a re-run on the primary (see `retry.rs`).
    pub(super) retry: Option<Box<super::retry::Retry>>,
    /// A backend's FATAL error was relayed to the client: the session ends with it.
    pub(super) relayed_fatal: bool,
    /// The client said goodbye with Terminate. Only then are its backend connections pooled:
    /// a client that vanished (killed, network cut) leaves a backend that, directly, would
    /// have ended with it.
    pub(super) client_terminated: bool,
    /// The PID the client was told when it is not a server process's (`session_pid.rs`).
    pub(super) issued_pid: Option<i32>,
    /// What the client was told at login when no connection was opened for it, and from which
    /// kind of connection: the first such connection reports what differs.
    pub(super) greeting: Option<(Target, Arc<[Message]>)>,
    pub(super) client_buf: BytesMut,
    pub(super) client_out: BytesMut,
    pub(super) routes: super::route::Routes,
}

impl Session {
    pub(super) async fn run(&mut self, rd: Reader, mut wr: Writer) -> Result<(), ProxyError> {
        let result = self.relay(rd, &mut wr).await;
        // Boxed like the handlers in `relay`: the end comes once, an idle session keeps no room
        // for it.
        Box::pin(self.finish(wr)).await;
        result
    }

    /// Whatever ended the session, the client gets the errors queued for it, and the backend
    /// sessions are released at once: back to the pool (reset there) when they are in a clean
    /// state and the client left cleanly, else closed.
    async fn finish(&mut self, mut wr: Writer) {
        if !self.client_out.is_empty() {
            let _ = tls::send(&mut wr, &self.client_out).await;
        }
        let mut terminate = BytesMut::new();
        message::write_terminate(&mut terminate);
        for slot in [Target::Primary, Target::Replica]
            .into_iter()
            .filter_map(|t| self.slots.take(t))
        {
            if slot.reusable() && self.client_terminated {
                let (key, conn) = slot.into_server_conn();
                self.ctx
                    .pool
                    .checkin(key, conn, &self.config.pool, Reset::DiscardAll);
            } else {
                let mut slot = slot;
                let _ = slot.send(&terminate).await;
            }
        }
    }

    /// The handlers of client and server messages are awaited inline (boxing them cost an
    /// allocation and a copy of a ~3.5 KB future per message, 17 % of pgcast's instructions per
    /// pgbench transaction, measured with callgrind); what they may await to open a connection
    /// is boxed inside them (`ensure_slot`), so this loop's state, which an idle client keeps
    /// for as long as it stays, holds no room for a backend login.
    async fn relay(&mut self, mut rd: Reader, wr: &mut Writer) -> Result<(), ProxyError> {
        tls::send(wr, &self.client_out).await?;
        self.client_out.clear();
        // Terminate came: like PostgreSQL, answer what was sent before it, then close.
        let mut terminating = false;
        loop {
            let replica_idle = self.slots.get(Target::Replica).is_none_or(|r| r.idle());
            if self.waiting.is_some() && replica_idle {
                if let Some(unit) = self.waiting.take() {
                    Box::pin(self.dispatch(*unit)).await?;
                }
            }
            if self.waiting.is_none() && !terminating && !self.process_client_messages().await? {
                terminating = true;
            }
            if !self.client_out.is_empty() {
                tls::send(wr, &self.client_out).await?;
                self.client_out.clear();
            }
            self.release_between_transactions();
            self.shrink_when_idle();
            if terminating && self.waiting.is_none() && !self.client_waits() {
                self.client_terminated = true;
                return Ok(());
            }
            if let Some(target) = self.pass_through_target().filter(|_| !terminating) {
                // Boxed: entered once per session; its state is not part of every session's.
                return Box::pin(self.pass_through(target, &mut rd, wr)).await;
            }
            let reading_client = self.waiting.is_none() && !terminating;
            let quiet_batch = !terminating && self.quiet_batch_pending();
            let (primary, replica) = self.slots.both_mut();
            // Biased, in this order: no random number per round (~200 instructions per
            // transaction, callgrind). Servers' replies before the client's next bytes, as in
            // the pass-through relay: replies answer what the client sent, so its next bytes
            // wait at most for the end of a burst of them.
            tokio::select! {
                biased;
                _ = quiet_wait(), if quiet_batch => {
                    Box::pin(self.send_quiet_batch()).await?;
                }
                n = read_slot(primary) => self.on_slot_readable(Target::Primary, n).await?,
                n = read_slot(replica) => self.on_slot_readable(Target::Replica, n).await?,
                n = rd.read_into(&mut self.client_buf, CLIENT_READ_MIN, CLIENT_READ_CHUNK),
                    if reading_client =>
                {
                    if n? == 0 {
                        return Ok(());
                    }
                    self.ready_to_reply();
                }
            }
        }
    }

    /// Replies the client is owed are outstanding on some connection (not counting a batch
    /// whose Sync never came, or a COPY FROM STDIN whose data never will: those never end).
    fn client_waits(&self) -> bool {
        self.slots
            .iter()
            .any(|(_, s)| !s.copy_in && s.pending.iter().any(|u| u.forward && u.sync_sent))
    }

    async fn on_slot_readable(
        &mut self,
        target: Target,
        n: std::io::Result<usize>,
    ) -> Result<(), ProxyError> {
        let lost = match n {
            Ok(0) => true,
            Ok(_) => {
                self.process_backend_messages(target).await?;
                false
            }
            Err(_) => true,
        };
        if lost {
            self.on_slot_lost(target)?;
        }
        Ok(())
    }

    /// A backend connection closed. An idle replica connection is simply dropped; losing the
    /// primary, or any connection the client waits on, ends the session with an error.
    pub(super) fn on_slot_lost(&mut self, target: Target) -> Result<(), ProxyError> {
        let Some(slot) = self.slots.take(target) else {
            return Ok(());
        };
        // Also when a transaction is open there: continuing elsewhere would silently drop it.
        let client_waits = slot.pending.iter().any(|u| u.forward) || slot.in_transaction();
        if target == Target::Replica && !client_waits && self.listener.role == ListenerRole::Auto {
            tracing::info!(backend = %slot.backend(), "replica connection closed; will use another");
            return Ok(());
        }
        // The client already has the server's own FATAL (e.g. 57P01): one error, as from
        // PostgreSQL itself.
        if !self.relayed_fatal {
            self.ctx.stats.count_error("08006");
            message::write_error(
                &mut self.client_out,
                "FATAL",
                "08006",
                &format!("pgcast: connection to backend {} was lost", slot.backend()),
            );
        }
        Err(ProxyError::BackendUnavailable(format!(
            "{} closed",
            slot.backend()
        )))
    }

    async fn process_backend_messages(&mut self, target: Target) -> Result<(), ProxyError> {
        loop {
            self.relay_plain_replies(target)?;
            let Some(slot) = self.slots.get_mut(target) else {
                return Ok(());
            };
            let Some(m) = slot.conn.reader.buffered()? else {
                return Ok(());
            };
            let reply = slot.on_backend_message(&m);
            let status = slot.tx_status;
            let m = if m.tag == b'A' {
                self.as_told(target, m)
            } else {
                m
            };
            let armed = target == Target::Replica && self.retry.is_some();
            match &reply {
                Reply::Forward if armed => {
                    if let Held::Kept = self.hold_reply(&m) {
                        continue;
                    }
                }
                Reply::UnitDone { forward: true, .. } if armed => {
                    // Boxed: a rare path whose ~850-byte future would otherwise be part of
                    // every session's.
                    if let Held::Kept = Box::pin(self.on_retry_done(status)).await? {
                        continue;
                    }
                }
                _ => {}
            }
            match reply {
                Reply::Forward => {
                    if m.tag == b'E' {
                        self.note_relayed_error(&message::decode_error_fields(m.body()));
                    }
                    self.client_out.extend_from_slice(&m.raw);
                }
                Reply::Drop => {}
                Reply::UnitDone {
                    forward,
                    failed,
                    sets,
                } => {
                    if forward && self.deferred_begin.is_some() {
                        // A unit that ran nothing (Parse, Describe, Close) while a BEGIN is
                        // deferred: the client is in a transaction, whatever the server says.
                        message::write_ready_for_query(&mut self.client_out, b'T');
                    } else if forward {
                        self.client_out.extend_from_slice(&m.raw);
                    } else if failed {
                        // Replaying session state failed on this connection: it no longer
                        // matches the session, so stop using it and stay on the primary.
                        tracing::warn!(
                            ?target,
                            "session state replay failed; pinning the session to the primary"
                        );
                        self.pinned_primary = true;
                        let replica_idle = self.slots.get(target).is_some_and(|s| s.idle());
                        if target == Target::Replica && replica_idle {
                            self.slots.take(target);
                        }
                    }
                    if !failed && !sets.is_empty() {
                        self.session_sets.extend(sets.iter().cloned());
                        if let Some(last) = sets.iter().rposition(|s| is_discard_all(s)) {
                            // DISCARD ALL resets everything, prepared statements included,
                            // here and (through the replay below) on the other connection.
                            let keep = sets.len() - last - 1;
                            let drop_n = self.session_sets.len() - keep;
                            self.session_sets.drain(..drop_n);
                            self.statements.clear();
                            for (_, slot) in self.slots.iter_mut() {
                                slot.conn.prepared.clear();
                                slot.to_close.clear();
                            }
                        }
                        if let Some(o) = self.slots.get_mut(target.other()) {
                            for sql in &sets {
                                o.send_silent_query(sql).await?;
                            }
                        }
                    }
                }
                Reply::Unsolicited { fatal } => {
                    // Notifications, notices and parameter changes between queries.
                    let home = self.home_target();
                    if target == home || m.tag == b'A' || m.tag == b'N' {
                        self.client_out.extend_from_slice(&m.raw);
                        self.relayed_fatal |= fatal;
                    }
                    if fatal {
                        return self.on_slot_lost(target);
                    }
                }
            }
        }
    }

    /// Replies that need no look of their own — rows, row descriptions, completions — of a
    /// unit whose replies go to the client as they are, relayed in one piece up to the next
    /// message that does need one (or the end of what was read), without splitting them into
    /// messages (`frames.rs`). ErrorResponse, CopyInResponse, ReadyForQuery and
    /// NotificationResponse, and every message of a unit with injected messages to swallow or
    /// held for a retry, go through `on_backend_message` one by one.
    fn relay_plain_replies(&mut self, target: Target) -> Result<(), ProxyError> {
        let held = target == Target::Replica && self.retry.is_some();
        let Some(slot) = self.slots.get_mut(target) else {
            return Ok(());
        };
        let plain = !held
            && slot
                .pending
                .front()
                .is_some_and(|u| u.forward && u.swallow.is_empty());
        let reader = &mut slot.conn.reader;
        let max = reader.max_message();
        let next = slot
            .frames
            .next(
                &reader.buf,
                max,
                |tag| !plain || matches!(tag, b'E' | b'G' | b'Z' | b'A'),
                |_| {},
            )
            .map_err(|bad| ProxyError::BackendProtocol(bad.error))?;
        let upto = match next {
            Next::More { relay } | Next::Whole { at: relay, .. } => relay,
        };
        if upto > 0 {
            self.client_out.extend_from_slice(&reader.buf[..upto]);
            reader.buf.advance(upto);
        }
        Ok(())
    }

    fn home_target(&self) -> Target {
        match self.listener.role {
            ListenerRole::Replica => Target::Replica,
            _ if self.slots.is_open(Target::Primary) => Target::Primary,
            _ => Target::Replica,
        }
    }

    /// An ErrorResponse on its way to the client: counted by SQLSTATE; a FATAL one means the
    /// server ends the session, which the client then hears of only this once.
    pub(super) fn note_relayed_error(&mut self, error: &ErrorFields) {
        self.ctx.stats.count_error(&error.code);
        self.relayed_fatal |= error.is_fatal();
    }

    fn recent_write(&self) -> bool {
        match (self.config.routing.read_your_writes, self.last_write) {
            (_, None) | (ReadYourWrites::Transaction, _) => false,
            (ReadYourWrites::Session, Some(_)) => true,
            (ReadYourWrites::Window(w), Some(t)) => t.elapsed() < w,
        }
    }

    /// Routes a unit and sends it, or parks it until the replica connection is idle. Every
    /// decision is [`plan`]'s, from facts gathered here; this only opens the connection the
    /// plan names (or its fallback) and sends the unit there.
    pub(super) async fn dispatch(&mut self, mut unit: Unit) -> Result<(), ProxyError> {
        let plan = plan::plan(&self.facts(&unit), &unit.classes);
        match &plan.action {
            Action::Send => {}
            Action::Wait => return self.park(unit),
            Action::Refuse(r) => return self.refuse(&unit, r.code, &r.message),
        }
        self.apply_effects(&plan);
        if plan.continues_open_unit {
            self.retry_unit_continues();
            return self.send_unit(plan.target, &mut unit, false).await;
        }
        let Some(target) = self.connect(&plan, &unit).await? else {
            return Ok(());
        };
        match plan::after_connect(&plan, self.connected(target)) {
            Action::Send => {}
            Action::Wait => return self.park(unit),
            Action::Refuse(r) => {
                // The deferred BEGIN went with the unit that was to follow it.
                self.deferred_begin = None;
                return self.refuse(&unit, r.code, &r.message);
            }
        }
        if plan.send_deferred_begin {
            self.send_deferred_begin(target).await?;
        }
        self.count_routed(target, 1);
        self.arm_retry(target, &unit);
        self.send_unit(target, &mut unit, plan.session_set).await
    }

    /// The BEGIN the client was told had run goes out just before its transaction's first
    /// unit, on the connection that unit runs on.
    async fn send_deferred_begin(&mut self, target: Target) -> Result<(), ProxyError> {
        if let Some(sql) = self.deferred_begin.take() {
            if let Some(slot) = self.slots.get_mut(target) {
                slot.send_silent_query(&sql).await?;
            }
        }
        Ok(())
    }

    /// Counts `units` units sent to `target`.
    pub(super) fn count_routed(&self, target: Target, units: u64) {
        let counter = match target {
            Target::Primary => &self.ctx.stats.routed_primary,
            Target::Replica => &self.ctx.stats.routed_replica,
        };
        counter.fetch_add(units, Ordering::Relaxed);
    }

    /// What the plan is computed from.
    fn facts(&self, unit: &Unit) -> SessionFacts {
        SessionFacts {
            role: self.listener.role,
            primary: self.slots.facts(Target::Primary),
            replica: self.slots.facts(Target::Replica),
            pinned: self.pinned_primary,
            recent_write: self.recent_write(),
            has_session_sets: !self.session_sets.is_empty(),
            session_sets_full: self.session_sets.len() >= MAX_SESSION_SETS,
            transaction_pool: self.config.pool.mode == PoolMode::Transaction,
            deferred_begin: self.deferred_begin.is_some(),
            deferred_begin_read_only: self.deferred_begin_read_only,
            unit_serializable: unit.serializable,
            unit_sets_serializable: unit.set_serializable,
            unit_has_statement: unit
                .messages
                .iter()
                .any(|m| matches!(m.tag, b'Q' | b'P' | b'E' | b'F')),
            unsynced: unit.unsynced,
        }
    }

    /// Opens the plan's connection, or the fallback [`plan::on_connect_failure`] chooses.
    /// `None`: the unit was refused.
    async fn connect(&mut self, plan: &Plan, unit: &Unit) -> Result<Option<Target>, ProxyError> {
        let Err(e) = self.ensure_slot(plan.target).await else {
            return Ok(Some(plan.target));
        };
        let e = self.refused_login(e)?;
        let primary_known = self.view().primary.is_some();
        let failure = plan::ConnectFailure {
            kind: match e {
                ProxyError::ServerConnectionsFull(_) => {
                    plan::ConnectFailureKind::ServerConnectionsFull
                }
                _ => plan::ConnectFailureKind::Unavailable,
            },
            why: e.to_string(),
        };
        match plan::on_connect_failure(plan, primary_known, &failure) {
            Fallback::Use(target) => match self.ensure_slot(target).await {
                Ok(()) => Ok(Some(target)),
                Err(e) => Err(self.refused_login(e).unwrap_or_else(|e| e)),
            },
            Fallback::Refuse(r) => {
                self.refuse(unit, r.code, &r.message)?;
                Ok(None)
            }
        }
    }

    /// The server refused this session's login (its role or database went away since the
    /// greeting was learned): as directly, the session ends with the server's own FATAL error
    /// (`Err`), and the next login meets the server again. Any other error comes back as `Ok`.
    fn refused_login(&mut self, e: ProxyError) -> Result<ProxyError, ProxyError> {
        match &e {
            ProxyError::BackendError(fields, _) if fields.is_fatal() => {
                self.ctx.pool.greetings.forget(&self.client.params);
                self.report_connect_error(&e);
                self.relayed_fatal = true;
                Err(e)
            }
            _ => Ok(e),
        }
    }

    /// The state of the connections once the unit's connection is open.
    fn connected(&self, target: Target) -> plan::Connected {
        plan::Connected {
            replica_busy: self.slots.get(Target::Replica).is_some_and(|r| !r.idle()),
            read_only_fallback: self.slots.get(target).is_some_and(|s| s.read_only_fallback),
        }
    }

    /// Keeps the unit (and any deferred BEGIN) until the replica connection is idle.
    fn park(&mut self, unit: Unit) -> Result<(), ProxyError> {
        self.waiting = Some(Box::new(unit));
        Ok(())
    }

    fn apply_effects(&mut self, plan: &Plan) {
        if plan.pin && !self.pinned_primary {
            tracing::debug!("session pinned to the primary");
            self.pinned_primary = true;
            self.note_pinned();
        }
        if plan.writes {
            self.last_write = Some(Instant::now());
        }
    }

    /// Answers a unit with an error instead of running it.
    fn refuse(&mut self, unit: &Unit, code: &str, msg: &str) -> Result<(), ProxyError> {
        self.ctx.stats.count_error(code);
        message::write_error(&mut self.client_out, "ERROR", code, msg);
        if unit.ends {
            let status = self.tx_status();
            message::write_ready_for_query(&mut self.client_out, status);
        } else {
            self.discard_until_sync = true;
        }
        Ok(())
    }

    /// Writes a unit to a connection; statements the client closed there are closed on the
    /// session's other connection before their next use.
    pub(super) async fn send_unit(
        &mut self,
        target: Target,
        // Borrowed, not moved: a moved argument takes room twice in the future's state.
        unit: &mut Unit,
        with_sets: bool,
    ) -> Result<(), ProxyError> {
        self.before_deallocate(target, unit).await?;
        let slot = self.slots.open_mut(target)?;
        let deallocate = unit.deallocate.take();
        let sets = if with_sets {
            std::mem::take(&mut unit.set_sql)
        } else {
            Vec::new()
        };
        let closed = slot
            .write_unit(
                UnitMessages {
                    messages: &unit.messages,
                    new_statements: &unit.new_statements,
                    extended: unit.extended,
                    ends: unit.ends,
                    size_hint: unit.bytes,
                },
                &self.statements,
                sets,
            )
            .await?;
        self.after_deallocate(target, deallocate).await?;
        for name in closed {
            self.statements.remove(&name);
            if let Some(o) = self.slots.get_mut(target.other()) {
                if o.conn.prepared.remove(&name).is_some() {
                    o.to_close.insert(name);
                }
            }
        }
        Ok(())
    }
}

impl Session {
    /// Between transactions, with no backend connection held: gives the buffers back too
    /// (to this thread's spares, for the next transaction of any session).
    pub(super) fn shrink_when_idle(&mut self) {
        if self.slots.iter().next().is_none() {
            if self.client_buf.is_empty() && self.client_buf.capacity() > 0 {
                spare_buffers::give_back(Kind::Read, std::mem::take(&mut self.client_buf));
            }
            if self.client_out.is_empty() && self.client_out.capacity() > 0 {
                spare_buffers::give_back(Kind::Write, std::mem::take(&mut self.client_out));
            }
        }
    }

    /// The client sent something: its reply will need a write buffer.
    fn ready_to_reply(&mut self) {
        if self.client_out.capacity() == 0 {
            self.client_out = spare_buffers::take(Kind::Write, 0, 0);
        }
    }
}

/// Room a read from the client needs before it is worth a system call.
pub(super) const CLIENT_READ_MIN: usize = 1024;
/// What a read from the client reserves when there is less.
pub(super) const CLIENT_READ_CHUNK: usize = 8 * 1024;

/// The timer of a batch waiting for its Sync; created only when that branch is polled.
async fn quiet_wait() {
    tokio::time::sleep(QUIET_BATCH_DELAY).await
}

async fn read_slot(slot: &mut Option<Box<Slot>>) -> std::io::Result<usize> {
    match slot {
        Some(s) => s.conn.reader.rd.read_buf(&mut s.conn.reader.buf).await,
        None => std::future::pending().await,
    }
}
