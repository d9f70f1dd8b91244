//! The safety net under read/write splitting: an autocommit unit that a replica refused as a
//! write (25006, or a hot-standby "during recovery" error) before anything of it reached the
//! client runs again on the primary, transparently; its statement shapes are remembered as
//! writes for the rest of the process ([`LearnedWrites`]), counted and logged once per shape.
//!
//! The decision is [`should_retry`], a pure function of [`RetryFacts`]; the session holds a
//! replica unit's replies back until its first row or CommandComplete (then nothing can be
//! retried) or its ReadyForQuery (then the decision is taken).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use bytes::BytesMut;

use super::classify::{literal_free_key, StatementClass};
use super::message::{self, Message};
use super::router::Target;
use super::session::{Session, Unit};
use super::ProxyError;
use crate::config::ListenerRole;

/// Units larger than this are not kept for a re-run.
const MAX_RETRY_BYTES: usize = 64 * 1024;

/// What decides whether a failed unit runs again on the primary.
#[derive(Debug, Clone, Copy)]
pub struct RetryFacts<'a> {
    pub auto: bool,
    pub ran_on: Target,
    /// No transaction was open (nor a BEGIN deferred) when the unit was sent.
    pub idle_before: bool,
    /// The unit was sent whole (a simple Query, or an extended batch with its Sync).
    pub whole_unit: bool,
    /// A row, CommandComplete or COPY reply of the unit already reached the client.
    pub results_sent: bool,
    /// Transaction status of the unit's ReadyForQuery.
    pub status_after: u8,
    pub code: &'a str,
    pub message: &'a str,
}

/// Errors by which a hot standby refuses to write.
pub fn read_only_error(code: &str, message: &str) -> bool {
    let recovery = [
        "during recovery",
        "in a hot standby",
        "recovery is in progress",
    ]
    .iter()
    .any(|m| message.contains(m));
    match code {
        "25006" => true,
        "0A000" | "55000" | "XX000" => recovery,
        _ => false,
    }
}

/// Whether the unit runs again on the primary: only in autocommit, only when nothing of it
/// reached the client (no earlier statement of the unit completed), only when the replica is
/// left outside any transaction, and only for read-only-class errors.
pub fn should_retry(f: &RetryFacts) -> bool {
    f.auto
        && f.ran_on == Target::Replica
        && f.idle_before
        && f.whole_unit
        && !f.results_sent
        && f.status_after == b'I'
        && read_only_error(f.code, f.message)
}

/// Statement shapes found to write though classified as reads, for the rest of the process.
#[derive(Debug, Default)]
pub struct LearnedWrites {
    any: AtomicBool,
    shapes: RwLock<HashSet<String>>,
}

impl LearnedWrites {
    fn key(database: &str, sql: &str) -> String {
        let shape = literal_free_key(sql).unwrap_or_else(|| sql.to_string());
        format!("{database}\0{shape}")
    }

    /// Remembers a shape; true the first time.
    pub fn learn(&self, database: &str, sql: &str) -> bool {
        let key = Self::key(database, sql);
        let mut shapes = self.shapes.write().unwrap_or_else(|e| e.into_inner());
        self.any.store(true, Ordering::Release);
        shapes.insert(key)
    }

    pub fn contains(&self, database: &str, sql: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let key = Self::key(database, sql);
        let shapes = self.shapes.read().unwrap_or_else(|e| e.into_inner());
        shapes.contains(&key)
    }
}

/// A replica unit kept for a re-run, and its replies held back so far.
pub(super) struct Retry {
    /// When the unit was sent: no transaction open or deferred.
    idle_before: bool,
    /// Sent whole (it ended, and not as the rest of a batch sent early).
    whole_unit: bool,
    messages: super::session::UnitMessageList,
    extended: bool,
    bytes: usize,
    held: BytesMut,
    error: Option<(String, String)>,
}

/// What the session does with one reply of the unit.
pub(super) enum Held {
    /// Held back (or dropped): nothing for the client now.
    Kept,
    /// Relay normally from now on (the held replies were released before it).
    Release,
}

impl Session {
    /// Statement classes, with shapes learned as writes turned into writes.
    pub(super) fn classes_of(&self, sql: &str) -> std::sync::Arc<[StatementClass]> {
        let classes = self.classify.classify(sql);
        if classes.contains(&StatementClass::Read)
            && self.ctx.learned_writes.contains(&self.client.database, sql)
        {
            return classes
                .iter()
                .map(|c| match c {
                    StatementClass::Read => StatementClass::Write,
                    other => *other,
                })
                .collect();
        }
        classes
    }

    /// Keeps a copy of a unit sent whole to a replica in autocommit, for a re-run.
    pub(super) fn arm_retry(&mut self, target: Target, unit: &Unit) {
        self.retry = None;
        let armed = self.listener.role == ListenerRole::Auto
            && target == Target::Replica
            && unit.bytes <= MAX_RETRY_BYTES
            && self
                .slots
                .get(target)
                .is_some_and(|s| !s.read_only_fallback && !s.pending.iter().any(|u| u.forward));
        if armed {
            self.retry = Some(Box::new(Retry {
                idle_before: self.tx_status() == b'I',
                whole_unit: unit.ends && !unit.unsynced,
                messages: unit.messages.clone(),
                extended: unit.extended,
                bytes: unit.bytes,
                held: BytesMut::new(),
                error: None,
            }));
        }
    }

    /// More of an armed batch follows (it was sent early): it is no longer one whole unit.
    pub(super) fn retry_unit_continues(&mut self) {
        if let Some(r) = self.retry.as_mut() {
            r.whole_unit = false;
        }
    }

    /// A reply of the armed unit other than its ReadyForQuery.
    pub(super) fn hold_reply(&mut self, m: &Message) -> Held {
        let Some(r) = self.retry.as_mut() else {
            return Held::Release;
        };
        if r.error.is_some() {
            r.held.extend_from_slice(&m.raw);
            return Held::Kept;
        }
        match m.tag {
            b'E' => {
                let f = message::decode_error_fields(m.body());
                if read_only_error(&f.code, &f.message) {
                    r.error = Some((f.code, f.message));
                    r.held.extend_from_slice(&m.raw);
                    return Held::Kept;
                }
            }
            // Rows, completion or COPY reached the client: no re-run from here on.
            b'D' | b'C' | b'I' | b's' | b'G' | b'H' | b'W' => {}
            _ => {
                r.held.extend_from_slice(&m.raw);
                return Held::Kept;
            }
        }
        self.release_held();
        Held::Release
    }

    fn release_held(&mut self) {
        if let Some(r) = self.retry.take() {
            self.client_out.extend_from_slice(&r.held);
        }
    }

    /// The armed unit's ReadyForQuery: re-run it on the primary, or release what was held.
    pub(super) async fn on_retry_done(&mut self, status_after: u8) -> Result<Held, ProxyError> {
        let Some(r) = self.retry.as_ref() else {
            return Ok(Held::Release);
        };
        let (code, msg) = r.error.clone().unwrap_or_default();
        let failed = r.error.is_some();
        let facts = RetryFacts {
            auto: self.listener.role == ListenerRole::Auto,
            ran_on: Target::Replica,
            idle_before: r.idle_before,
            whole_unit: r.whole_unit,
            // Held replies are released (and the unit disarmed) at its first row or completion.
            results_sent: false,
            status_after,
            code: &code,
            message: &msg,
        };
        if !should_retry(&facts) || self.ensure_slot(Target::Primary).await.is_err() {
            if failed {
                self.ctx.stats.count_error(&code);
            }
            self.release_held();
            return Ok(Held::Release);
        }
        let Some(r) = self.retry.take() else {
            return Ok(Held::Release);
        };
        self.ctx.stats.count_retry();
        for sql in self.statement_texts(&r.messages) {
            if self.ctx.learned_writes.learn(&self.client.database, &sql) {
                tracing::warn!(
                    sqlstate = %code, error = %msg, statement = %sql,
                    "a replica refused a statement classified as a read; ran it on the primary \
                     and will send it there from now on"
                );
            }
        }
        self.last_write = Some(std::time::Instant::now());
        let mut unit = Unit {
            messages: r.messages,
            classes: smallvec::smallvec![StatementClass::Write],
            extended: r.extended,
            ends: true,
            bytes: r.bytes,
            ..Unit::default()
        };
        self.count_routed(Target::Primary, 1);
        self.send_unit(Target::Primary, &mut unit, false).await?;
        Ok(Held::Kept)
    }

    /// The SQL of the statements a unit runs.
    fn statement_texts(&self, messages: &[Message]) -> Vec<String> {
        let mut out = Vec::new();
        for m in messages {
            let text = match m.tag {
                b'Q' => message::query_text(m.body()).ok().map(|s| s.into_owned()),
                b'P' => message::parse_message_fields(m.body())
                    .ok()
                    .map(|(_, q)| q.into_owned()),
                b'B' => message::bind_message_fields(m.body())
                    .ok()
                    .and_then(|(_, s)| self.statements.get(s.as_ref()))
                    .and_then(|i| message::parse_message_fields(i.parse.body()).ok())
                    .map(|(_, q)| q.into_owned()),
                _ => None,
            };
            if let Some(t) = text.filter(|t| !out.contains(t)) {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RetryFacts<'static> {
        RetryFacts {
            auto: true,
            ran_on: Target::Replica,
            idle_before: true,
            whole_unit: true,
            results_sent: false,
            status_after: b'I',
            code: "25006",
            message: "cannot execute INSERT in a read-only transaction",
        }
    }

    #[test]
    fn retry_decisions() {
        let with = |change: fn(&mut RetryFacts<'static>)| {
            let mut f = base();
            change(&mut f);
            f
        };
        let table: Vec<(&str, RetryFacts, bool)> = vec![
            ("read-only transaction error in autocommit", base(), true),
            (
                "nextval on a standby",
                with(|f| f.message = "cannot execute nextval() during recovery"),
                true,
            ),
            (
                "xid on a standby (elog, XX000)",
                with(|f| {
                    f.code = "XX000";
                    f.message = "cannot assign TransactionIds during recovery";
                }),
                true,
            ),
            (
                "serializable on a standby",
                with(|f| {
                    f.code = "0A000";
                    f.message = "cannot use serializable mode in a hot standby";
                }),
                true,
            ),
            (
                "WAL control function",
                with(|f| {
                    f.code = "55000";
                    f.message = "recovery is in progress";
                }),
                true,
            ),
            (
                "other 0A000",
                with(|f| {
                    f.code = "0A000";
                    f.message = "cannot do that";
                }),
                false,
            ),
            (
                "other error",
                with(|f| {
                    f.code = "23505";
                    f.message = "duplicate key value violates unique constraint";
                }),
                false,
            ),
            (
                "ran on the primary",
                with(|f| f.ran_on = Target::Primary),
                false,
            ),
            ("fixed-role listener", with(|f| f.auto = false), false),
            (
                "inside a transaction",
                with(|f| f.idle_before = false),
                false,
            ),
            (
                "left a transaction open",
                with(|f| f.status_after = b'E'),
                false,
            ),
            ("rows already sent", with(|f| f.results_sent = true), false),
            (
                "batch sent before its Sync",
                with(|f| f.whole_unit = false),
                false,
            ),
        ];
        for (name, facts, expected) in table {
            assert_eq!(should_retry(&facts), expected, "{name}");
        }
    }

    #[test]
    fn learned_shapes() {
        let l = LearnedWrites::default();
        assert!(!l.contains("app", "SELECT f(1)"));
        assert!(l.learn("app", "SELECT f(1)"));
        assert!(!l.learn("app", "SELECT f(2)"), "same shape");
        assert!(l.contains("app", "SELECT f(3)"));
        assert!(!l.contains("other", "SELECT f(3)"));
    }
}
