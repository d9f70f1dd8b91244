//! One backend connection used by a client session ("slot"), and the bookkeeping that keeps
//! its replies in step with what the client expects: a queue of pending units (one per
//! expected ReadyForQuery), replies to injected messages that must be swallowed, and the
//! protocol-level prepared statements that exist on this connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::backend::{self, LoginParams};
use super::cancel::{BackendCancelKey, CancelTargets};
use super::classify::StatementClass;
use super::frames::Frames;
use super::message::{self, Message};
use super::pool::{Acquired, Pool, PoolKey, ServerConn};
use super::route::Route;
use super::router::Target;
use super::stats::GaugeGuard;
use super::ProxyError;
use crate::config::PoolConfig;

/// A unit's client messages, as `write_unit` needs them.
pub struct UnitMessages<'a> {
    pub messages: &'a [Message],
    /// Statement names the unit's Parse messages define that the client did not have.
    pub new_statements: &'a [String],
    pub extended: bool,
    /// Ends with Sync (or is a simple Query).
    pub ends: bool,
    pub size_hint: usize,
}

/// A client's protocol-level prepared statement, as the client defined it.
pub struct StatementInfo {
    pub parse: Message,
    pub hash: u64,
    pub classes: Arc<[StatementClass]>,
}

/// The replies a backend owes for one unit of work (ending in one ReadyForQuery).
#[derive(Debug, Default)]
pub struct PendingUnit {
    /// Relay the replies to the client (false for replays pgcast sent on its own).
    pub forward: bool,
    /// Extended-protocol batch (false: simple Query or FunctionCall).
    pub extended: bool,
    /// The batch's Sync has been sent (an extended unit stays open after a Flush).
    pub sync_sent: bool,
    /// Replies to messages pgcast injected (ParseComplete '1', CloseComplete '3') with the
    /// statement name, to drop in order; if an error cuts the batch short, the statements
    /// whose injection was skipped are known.
    pub swallow: VecDeque<(u8, String)>,
    pub saw_error: bool,
    /// Session SET statements to replay on the other connection once this unit succeeded.
    pub on_success_sets: Vec<String>,
}

/// A backend connection of a session.
pub struct Slot {
    pub target: Target,
    /// The connection itself (its socket, login, prepared statements, caps' shares), boxed
    /// from connect to close: a transaction pool moves it in and out of sessions every
    /// transaction, a pointer instead of a few hundred bytes each time.
    pub conn: Box<ServerConn>,
    pub pending: VecDeque<PendingUnit>,
    /// Named statements the client closed on another connection: close them here before use.
    pub to_close: HashSet<String>,
    /// Transaction status from the last ReadyForQuery ('I', 'T' or 'E').
    pub tx_status: u8,
    /// The backend is in COPY FROM STDIN mode: the client's CopyData goes here.
    pub copy_in: bool,
    /// A replica listener's connection to the primary because no replica was available:
    /// it must never run anything that writes.
    pub read_only_fallback: bool,
    /// The backend sent an ErrorResponse during this session (a cancel ends that way too).
    /// Such a connection is not handed to the next client: a client library that drops a
    /// connection after an error expects a fresh backend, as it gets directly.
    pub saw_error: bool,
    /// Where the connection goes back to when the session ends.
    pub pool_key: Arc<PoolKey>,
    /// Where the replies stand when part of a message was relayed before the rest arrived
    /// (`Session::relay_plain_replies`).
    pub frames: Frames,
    cancel: CancelEntry,
    _gauge: GaugeGuard,
}

/// This connection's entry among the session's cancel targets, removed with the slot.
struct CancelEntry {
    key: Arc<BackendCancelKey>,
    targets: Arc<CancelTargets>,
}

impl Drop for CancelEntry {
    fn drop(&mut self) {
        self.targets.remove(&self.key);
    }
}

/// Hash of a Parse message, to tell whether a connection holds the same statement.
///
/// foldhash, not std's SipHash (`DefaultHasher::new()`, whose key is fixed and public): two
/// hashes per extended-protocol transaction cost ~550 instructions with SipHash (callgrind),
/// a few dozen with this. Seeded at random once per process, like std's `RandomState`, so
/// nobody outside can search for a text with the hash of another client's statement.
pub fn parse_hash(m: &Message) -> u64 {
    static PARSE_HASHER: std::sync::LazyLock<foldhash::quality::RandomState> =
        std::sync::LazyLock::new(Default::default);
    PARSE_HASHER.hash_one(&m.raw[..])
}

impl Slot {
    /// A slot on `route`'s backend: a pooled connection if one is idle, else a new one.
    pub async fn open(
        target: Target,
        route: &Route,
        login: &LoginParams<'_>,
        cancel_targets: Arc<CancelTargets>,
        pool: (&Pool, &PoolConfig),
    ) -> Result<Slot, ProxyError> {
        let (key, counters) = (&route.key, &route.counters);
        let conn = match pool
            .0
            .acquire_under(key, &route.budgets, pool.1, counters)
            .await?
        {
            Acquired::Pooled(c) => c,
            Acquired::Open(permit) => {
                let (reader, wr, startup) = backend::connect(login).await?;
                pool.0.greetings.remember(key, &startup.parameter_status);
                let cancel_key = Arc::new(BackendCancelKey {
                    host: login.host.to_string(),
                    port: login.port,
                    pid: startup.pid,
                    secret: startup.secret,
                    busy: AtomicBool::new(false),
                });
                Box::new(ServerConn {
                    reader,
                    wr,
                    startup,
                    created: Instant::now(),
                    permit,
                    prepared: HashMap::new(),
                    pending_room: VecDeque::new(),
                    cancel_key,
                    counters: Arc::clone(counters),
                })
            }
        };
        Ok(Slot::with_conn(target, route, conn, cancel_targets))
    }

    /// A slot on a connection taken for `route`.
    pub fn with_conn(
        target: Target,
        route: &Route,
        mut conn: Box<ServerConn>,
        cancel_targets: Arc<CancelTargets>,
    ) -> Slot {
        let cancel_key = Arc::clone(&conn.cancel_key);
        cancel_targets.add(Arc::clone(&cancel_key));
        let pending = std::mem::take(&mut conn.pending_room);
        Slot {
            target,
            _gauge: GaugeGuard::new(Arc::clone(&conn.counters)),
            conn,
            pending,
            to_close: HashSet::new(),
            tx_status: b'I',
            copy_in: false,
            read_only_fallback: false,
            saw_error: false,
            pool_key: Arc::clone(&route.key),
            frames: Frames::default(),
            cancel: CancelEntry {
                key: cancel_key,
                targets: cancel_targets,
            },
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.pool_key.backend
    }

    /// The connection can serve another session after a reset: nothing outstanding, no
    /// transaction or COPY in progress, no error seen.
    pub fn reusable(&self) -> bool {
        self.idle() && self.tx_status == b'I' && !self.copy_in && !self.saw_error
    }

    /// Gives up the connection (for the pool); the slot's bookkeeping ends here.
    pub fn into_server_conn(self) -> (Arc<PoolKey>, Box<ServerConn>) {
        let Slot {
            mut conn,
            pool_key,
            to_close,
            mut pending,
            ..
        } = self;
        pending.clear();
        conn.pending_room = pending;
        // Closed by the client elsewhere, still defined here.
        if !to_close.is_empty() {
            conn.prepared
                .extend(to_close.into_iter().map(|name| (name, 0)));
        }
        (pool_key, conn)
    }

    /// Between transactions: nothing outstanding, idle, no COPY, no batch waiting for its
    /// Sync. A transaction pool may hand it to another session now.
    pub fn between_transactions(&self) -> bool {
        self.idle() && self.tx_status == b'I' && !self.copy_in
    }

    /// No replies outstanding.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Inside an explicit transaction (or a failed one).
    pub fn in_transaction(&self) -> bool {
        self.tx_status != b'I'
    }

    /// The last unit is an extended batch whose Sync has not been sent yet.
    pub fn has_open_unit(&self) -> bool {
        self.pending
            .back()
            .is_some_and(|u| u.extended && !u.sync_sent)
    }

    pub fn push_unit(&mut self, unit: PendingUnit) {
        self.pending.push_back(unit);
        self.cancel.key.busy.store(true, Ordering::Release);
    }

    /// Whether the connection runs something the client may cancel.
    pub fn mark_busy(&self, busy: bool) {
        self.cancel.key.busy.store(busy, Ordering::Release);
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ProxyError> {
        super::stream::send(&mut self.conn.wr, bytes).await?;
        Ok(())
    }

    /// Sends a simple Query whose replies are dropped (replaying session state).
    pub async fn send_silent_query(&mut self, sql: &str) -> Result<(), ProxyError> {
        let mut out = BytesMut::new();
        super::message::write_query(&mut out, sql);
        self.push_unit(PendingUnit {
            forward: false,
            sync_sent: true,
            ..PendingUnit::default()
        });
        self.conn.prepared.remove("");
        self.send(&out).await
    }
}

/// What one backend message means for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Relay to the client.
    Forward,
    /// Drop it.
    Drop,
    /// A unit finished (its ReadyForQuery is relayed when `forward`).
    UnitDone {
        forward: bool,
        failed: bool,
        sets: Vec<String>,
    },
    /// An error or notice outside any unit: the backend is closing (FATAL) or just talking.
    Unsolicited { fatal: bool },
}

impl Slot {
    /// Classifies one message from this backend and updates the slot's bookkeeping.
    pub fn on_backend_message(&mut self, m: &Message) -> Reply {
        let Some(unit) = self.pending.front_mut() else {
            let fatal = m.tag == b'E' && super::message::decode_error_fields(m.body()).is_fatal();
            return Reply::Unsolicited { fatal };
        };
        if unit.swallow.front().map(|s| s.0) == Some(m.tag) {
            unit.swallow.pop_front();
            return Reply::Drop;
        }
        match m.tag {
            b'E' => {
                unit.saw_error = true;
                self.saw_error = true;
                // The backend skips to Sync: injections not yet answered did not happen.
                for (tag, name) in std::mem::take(&mut unit.swallow) {
                    if tag == b'1' {
                        self.conn.prepared.remove(&name);
                    } else {
                        self.to_close.insert(name);
                    }
                }
            }
            b'G' => {
                self.copy_in = true;
                // RFC-less but documented: a backend in copy-in mode ignores Sync, so an
                // extended unit's Sync sent before the copy data will not be answered; the
                // client sends another one after CopyDone.
                if unit.extended && unit.sync_sent {
                    unit.sync_sent = false;
                }
            }
            b'Z' => {
                self.tx_status = m.body().first().copied().unwrap_or(b'I');
                self.copy_in = false;
                let done = self.pending.pop_front().unwrap_or_default();
                if self.pending.is_empty() {
                    self.cancel.key.busy.store(false, Ordering::Release);
                }
                return Reply::UnitDone {
                    forward: done.forward,
                    failed: done.saw_error,
                    sets: done.on_success_sets,
                };
            }
            _ => {}
        }
        if unit.forward {
            Reply::Forward
        } else {
            Reply::Drop
        }
    }
}

impl Slot {
    /// Writes a unit's messages, first preparing here (with Parse, after a Close if an older
    /// version exists) every statement the unit binds or describes that this connection does
    /// not hold in the client's version. The replies to those injected messages are swallowed.
    /// Returns the names of statements the unit closes, for the session's other connection.
    pub async fn write_unit(
        &mut self,
        unit: UnitMessages<'_>,
        statements: &HashMap<String, StatementInfo>,
        on_success_sets: Vec<String>,
    ) -> Result<Vec<String>, ProxyError> {
        let UnitMessages {
            messages,
            new_statements,
            extended,
            ends,
            size_hint,
        } = unit;
        // Injected messages go before the unit's own, so their replies come first and cannot
        // be confused with the replies the client expects.
        let mut injected = BytesMut::new();
        let mut swallow = VecDeque::new();
        let mut closed: Vec<String> = Vec::new();
        // A unit defines few statements: a list, not a hashed set (this runs for every unit).
        let mut defined_in_unit: Vec<String> = Vec::new();
        for m in messages {
            let body = m.body();
            match m.tag {
                b'P' => {
                    if let Ok((name, _)) = message::parse_message_fields(body) {
                        // Closed by the client elsewhere, or left here by another session of
                        // a transaction pool: a Parse of the same name would fail with 42P05.
                        let foreign = new_statements.iter().any(|n| n == name.as_ref())
                            && self.conn.prepared.contains_key(name.as_ref());
                        self.conn.prepared.insert(name.to_string(), parse_hash(m));
                        if (self.to_close.remove(name.as_ref()) || foreign) && !name.is_empty() {
                            message::write_message(&mut injected, b'C', |b| {
                                b.extend_from_slice(b"S");
                                message::put_cstr(b, &name);
                            });
                            swallow.push_back((b'3', name.to_string()));
                        }
                        closed.retain(|n| n != name.as_ref());
                        if !defined_in_unit.iter().any(|n| n == name.as_ref()) {
                            defined_in_unit.push(name.into_owned());
                        }
                    }
                }
                b'B' | b'D' => {
                    let name = if m.tag == b'B' {
                        message::bind_message_fields(body).ok().map(|(_, s)| s)
                    } else {
                        message::target_fields(body)
                            .ok()
                            .filter(|(k, _)| *k == b'S')
                            .map(|(_, s)| s)
                    };
                    if let Some(name) =
                        name.filter(|n| !defined_in_unit.iter().any(|d| d == n.as_ref()))
                    {
                        match statements.get(name.as_ref()) {
                            Some(info) => {
                                self.inject_statement(&name, info, &mut injected, &mut swallow)
                            }
                            // Another session's statement (transaction pool): this client never
                            // prepared it, so it must get PostgreSQL's 26000, not run it.
                            None if !name.is_empty()
                                && self.conn.prepared.contains_key(name.as_ref()) =>
                            {
                                self.conn.prepared.remove(name.as_ref());
                                message::write_message(&mut injected, b'C', |b| {
                                    b.extend_from_slice(b"S");
                                    message::put_cstr(b, &name);
                                });
                                swallow.push_back((b'3', name.to_string()));
                            }
                            None => {}
                        }
                    }
                }
                b'C' => {
                    if let Ok((b'S', name)) = message::target_fields(body) {
                        self.conn.prepared.remove(name.as_ref());
                        defined_in_unit.retain(|n| n != name.as_ref());
                        closed.push(name.into_owned());
                    }
                }
                // A simple Query destroys the unnamed statement.
                b'Q' => {
                    if !self.conn.prepared.is_empty() {
                        self.conn.prepared.remove("");
                    }
                    defined_in_unit.retain(|n| !n.is_empty());
                }
                _ => {}
            }
        }
        self.conn.counters.queries.fetch_add(1, Ordering::Relaxed);
        if self.has_open_unit() {
            if let Some(u) = self.pending.back_mut() {
                u.swallow.extend(swallow);
                u.sync_sent = ends;
            }
        } else {
            self.push_unit(PendingUnit {
                forward: true,
                extended,
                sync_sent: ends,
                swallow,
                saw_error: false,
                on_success_sets,
            });
        }
        match messages {
            // A simple Query, most often: sent as it came, not copied into one buffer first.
            [only] if injected.is_empty() => self.send(&only.raw).await?,
            _ => {
                let mut out = BytesMut::with_capacity(injected.len() + size_hint + 16);
                out.extend_from_slice(&injected);
                for m in messages {
                    out.extend_from_slice(&m.raw);
                }
                self.send(&out).await?;
            }
        }
        Ok(closed)
    }

    pub(super) fn inject_statement(
        &mut self,
        name: &str,
        info: &StatementInfo,
        out: &mut BytesMut,
        swallow: &mut VecDeque<(u8, String)>,
    ) {
        let here = self.conn.prepared.get(name).copied();
        if here == Some(info.hash) {
            return;
        }
        // Named statements cannot be redefined without closing them first.
        if (here.is_some() || self.to_close.contains(name)) && !name.is_empty() {
            message::write_message(out, b'C', |b| {
                b.extend_from_slice(b"S");
                message::put_cstr(b, name);
            });
            swallow.push_back((b'3', name.to_string()));
        }
        out.extend_from_slice(&info.parse.raw);
        swallow.push_back((b'1', name.to_string()));
        self.conn.prepared.insert(name.to_string(), info.hash);
        self.to_close.remove(name);
    }
}
