//! Client messages into units: a simple Query is one unit; extended-protocol messages are
//! gathered up to Sync (or Flush, or a size limit, or the client going quiet); a bare BEGIN is
//! answered here and deferred until the transaction's first statement decides where it runs.

use std::sync::Arc;

use super::classify::StatementClass;
use super::message::{self, Message};
use super::router::Target;
use super::session::{Session, Unit, MAX_BATCH_BYTES};
use super::slot::{parse_hash, StatementInfo};
use super::ProxyError;
use crate::config::ListenerRole;

/// Room reserved for an extended-protocol batch's messages (Parse, Bind, Describe, Execute,
/// Sync: pgbench's and most drivers' batches fit).
const EXTENDED_BATCH_MESSAGES: usize = 5;

impl Session {
    /// Handles every complete client message in the buffer. Returns false on Terminate.
    ///
    /// Units are dispatched boxed (one allocation per unit, not per message, of a future small
    /// enough for the allocator's per-thread cache): inline, `dispatch`'s ~800 bytes would be
    /// part of the session's future, which every idle client keeps (bench/pgbench idle).
    pub(super) async fn process_client_messages(&mut self) -> Result<bool, ProxyError> {
        while self.waiting.is_none() {
            let m = match message::decode_message(
                &mut self.client_buf,
                self.config.limits.max_message_bytes,
            ) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(true),
                Err(e) => {
                    self.protocol_violation(&e.to_string());
                    return Err(ProxyError::ClientProtocol(e));
                }
            };
            if self.discard_until_sync {
                if m.tag == b'S' {
                    self.discard_until_sync = false;
                    let status = self.tx_status();
                    message::write_ready_for_query(&mut self.client_out, status);
                }
                continue;
            }
            match m.tag {
                b'Q' => {
                    // Borrowed from the message: only a text kept for later is copied.
                    let sql = match message::query_text(m.body()) {
                        Ok(s) => s,
                        Err(e) => {
                            self.protocol_violation(&e.to_string());
                            return Err(ProxyError::ClientProtocol(e));
                        }
                    };
                    let deallocate = self.protocol_deallocate(&sql);
                    let classes = if deallocate.is_some() {
                        // Like a Close: no session state of its own, nothing to pin.
                        Arc::from([])
                    } else {
                        self.classes_of(&sql)
                    };
                    if self.can_defer_begin(&sql, &classes) {
                        // Answer as PostgreSQL would; BEGIN goes out with the next statement.
                        self.deferred_begin = Some(sql.into_owned());
                        self.deferred_begin_read_only =
                            matches!(*classes, [StatementClass::Begin { read_only: true }]);
                        message::write_message(&mut self.client_out, b'C', |b| {
                            message::put_cstr(b, "BEGIN")
                        });
                        message::write_ready_for_query(&mut self.client_out, b'T');
                        continue;
                    }
                    let mut unit = std::mem::take(&mut self.batch);
                    unit.deallocate = deallocate;
                    unit.serializable |=
                        starts_read_only_tx(&classes) && mentions_serializable(&sql);
                    unit.classes.extend(classes.iter().copied());
                    if classes.iter().all(|c| {
                        matches!(
                            c,
                            StatementClass::SessionSet
                                | StatementClass::SessionReset
                                | StatementClass::Neutral
                        )
                    }) {
                        unit.set_serializable |= sets_serializable(&classes, &sql);
                        unit.set_sql.push(sql.into_owned());
                    }
                    unit.bytes += m.raw.len();
                    unit.messages.push(m);
                    unit.ends = true;
                    Box::pin(self.dispatch(unit)).await?;
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                    if let Err(e) = self.add_extended(m).await {
                        if let ProxyError::ClientProtocol(d) = &e {
                            self.protocol_violation(&d.to_string());
                        }
                        return Err(e);
                    }
                }
                b'd' | b'c' | b'f' => {
                    // COPY FROM STDIN data goes to the connection in copy-in mode.
                    let copy_in = self
                        .slots
                        .get(Target::Primary)
                        .is_some_and(|s| s.copy_in || s.has_open_unit());
                    let target = if copy_in {
                        Target::Primary
                    } else {
                        Target::Replica
                    };
                    if let Some(slot) = self.slots.get_mut(target) {
                        if m.tag != b'd' {
                            slot.copy_in = false;
                        }
                        slot.send(&m.raw).await?;
                    }
                }
                b'F' => {
                    // FunctionCall: may do anything; the primary runs it.
                    let unit = Unit {
                        messages: smallvec::smallvec![m],
                        classes: smallvec::smallvec![StatementClass::Write],
                        ends: true,
                        ..Unit::default()
                    };
                    Box::pin(self.dispatch(unit)).await?;
                }
                b'X' => return Ok(false),
                other => {
                    let msg = format!("invalid frontend message type {}", other);
                    self.protocol_violation(&msg);
                    return Err(ProxyError::ClientProtocol(message::DecodeError::Malformed(
                        "frontend message type",
                    )));
                }
            }
        }
        Ok(true)
    }

    pub(super) fn protocol_violation(&mut self, msg: &str) {
        self.ctx.stats.count_error("08P01");
        message::write_error(&mut self.client_out, "FATAL", "08P01", msg);
    }

    fn can_defer_begin(&self, sql: &str, classes: &[StatementClass]) -> bool {
        self.batch.messages.is_empty() && self.can_defer_begin_now(sql, classes)
    }

    /// A BEGIN that may be answered here and sent with the transaction's first statement.
    pub(super) fn can_defer_begin_now(&self, sql: &str, classes: &[StatementClass]) -> bool {
        self.listener.role == ListenerRole::Auto
            && matches!(classes, [StatementClass::Begin { .. }])
            && is_deferrable_begin(sql)
            && self.deferred_begin.is_none()
            && !self.pinned_primary
            && self.tx_status() == b'I'
            && self.slots.iter().all(|(_, s)| s.idle())
    }

    pub(super) fn tx_status(&self) -> u8 {
        if self.deferred_begin.is_some() {
            return b'T';
        }
        self.slots
            .iter()
            .map(|(_, s)| s.tx_status)
            .find(|s| *s != b'I')
            .unwrap_or(b'I')
    }

    /// Adds an extended-protocol message to the current batch; sends the batch on Sync, Flush
    /// or when it grows large.
    async fn add_extended(&mut self, m: Message) -> Result<(), ProxyError> {
        let body = m.body();
        match m.tag {
            b'P' => {
                let (name, query) =
                    message::parse_message_fields(body).map_err(ProxyError::ClientProtocol)?;
                let classes = self.classes_of(&query);
                self.batch.serializable |=
                    starts_read_only_tx(&classes) && mentions_serializable(&query);
                self.batch.classes.extend(classes.iter().copied());
                if classes.iter().all(|c| {
                    matches!(
                        c,
                        StatementClass::SessionSet
                            | StatementClass::SessionReset
                            | StatementClass::Neutral
                    )
                }) && !classes.is_empty()
                {
                    self.batch.set_serializable |= sets_serializable(&classes, &query);
                    self.batch.set_sql.push(query.to_string());
                }
                let info = StatementInfo {
                    hash: parse_hash(&m),
                    parse: m.clone(),
                    classes,
                };
                if !name.is_empty() && !self.statements.contains_key(name.as_ref()) {
                    self.batch.new_statements.push(name.to_string());
                }
                self.statements.insert(name.to_string(), info);
            }
            b'B' => {
                let (_, stmt) =
                    message::bind_message_fields(body).map_err(ProxyError::ClientProtocol)?;
                if let Some(info) = self.statements.get(stmt.as_ref()) {
                    self.batch.classes.extend(info.classes.iter().copied());
                }
            }
            b'D' => {
                let (kind, name) =
                    message::target_fields(body).map_err(ProxyError::ClientProtocol)?;
                if kind == b'S' {
                    if let Some(info) = self.statements.get(name.as_ref()) {
                        self.batch.classes.extend(info.classes.iter().copied());
                    }
                }
            }
            b'C' => {
                message::target_fields(body).map_err(ProxyError::ClientProtocol)?;
            }
            _ => {}
        }
        let tag = m.tag;
        self.batch.extended = true;
        self.batch.bytes += m.raw.len();
        if self.batch.messages.is_empty() {
            // A batch is rarely one message (Bind, Execute, Sync at least): one allocation for
            // the usual sizes instead of growing out of the inline room step by step.
            self.batch.messages.reserve(EXTENDED_BATCH_MESSAGES);
        }
        self.batch.messages.push(m);
        if tag == b'S' {
            self.batch.ends = true;
        }
        if tag == b'S' || tag == b'H' || self.batch.bytes > MAX_BATCH_BYTES {
            let mut unit = std::mem::take(&mut self.batch);
            if tag == b'S' && self.defer_extended_begin(&unit) {
                return Ok(());
            }
            unit.unsynced = tag != b'S' && tag != b'H';
            Box::pin(self.dispatch(unit)).await?;
        }
        Ok(())
    }

    /// The client sent Execute but neither Sync nor Flush and went quiet: it may be waiting
    /// for what PostgreSQL sends without either (an error is flushed at once, and so are the
    /// results before it — libpq pipelines rely on that). Send what there is, as an open unit
    /// whose Sync follows later, on a connection that can run whatever follows.
    pub(super) fn quiet_batch_pending(&self) -> bool {
        self.waiting.is_none()
            && !self.discard_until_sync
            && self.batch.messages.iter().any(|m| m.tag == b'E')
    }

    pub(super) async fn send_quiet_batch(&mut self) -> Result<(), ProxyError> {
        let mut unit = std::mem::take(&mut self.batch);
        unit.unsynced = true;
        self.dispatch(unit).await
    }
}

/// Whether SQL text asks for SERIALIZABLE isolation (ASCII case-insensitive, no allocation).
fn mentions_serializable(sql: &str) -> bool {
    sql.as_bytes()
        .windows(b"serializable".len())
        .any(|w| w.eq_ignore_ascii_case(b"serializable"))
}

/// Only a read-only transaction could go to a replica, so only then is the text searched
/// for SERIALIZABLE: the check stays off the path of ordinary statements.
fn starts_read_only_tx(classes: &[StatementClass]) -> bool {
    classes.iter().any(|c| {
        matches!(
            c,
            StatementClass::Begin { read_only: true }
                | StatementClass::SetTransaction { read_only: true }
        )
    })
}

/// The lower-cased words of a single statement without its trailing semicolon.
pub(super) fn statement_words(sql: &str) -> Vec<String> {
    sql.trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// A session SET whose text asks for SERIALIZABLE (the session's default isolation).
fn sets_serializable(classes: &[StatementClass], sql: &str) -> bool {
    classes.contains(&StatementClass::SessionSet) && mentions_serializable(sql)
}

/// `BEGIN` / `START TRANSACTION` with no options but READ ONLY: the BEGINs worth deferring
/// (the transaction's first statement decides where it runs; READ ONLY may still be switched
/// to READ WRITE before it, which a replica cannot do).
fn is_deferrable_begin(sql: &str) -> bool {
    let words = statement_words(sql);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let modes = match words.as_slice() {
        ["begin", "work" | "transaction", rest @ ..] => rest,
        ["start", "transaction", rest @ ..] => rest,
        ["begin", rest @ ..] => rest,
        _ => return false,
    };
    matches!(modes, [] | ["read", "only"])
}

/// `DISCARD ALL`, which also deallocates every prepared statement.
pub(super) fn is_discard_all(sql: &str) -> bool {
    statement_words(sql) == ["discard", "all"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_shapes() {
        assert!(is_deferrable_begin("begin;"));
        assert!(is_deferrable_begin("  START  TRANSACTION "));
        assert!(is_deferrable_begin("begin transaction read only"));
        assert!(is_deferrable_begin("BEGIN READ ONLY;"));
        assert!(!is_deferrable_begin("BEGIN READ WRITE"));
        assert!(!is_deferrable_begin("BEGIN ISOLATION LEVEL SERIALIZABLE"));
        assert!(!is_deferrable_begin(
            "BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE"
        ));
        assert!(!is_deferrable_begin("BEGIN; SELECT 1"));
        assert!(sets_serializable(
            &[StatementClass::SessionSet],
            "SET default_transaction_isolation = 'SERIALIZABLE'"
        ));
        assert!(!sets_serializable(
            &[StatementClass::SessionSet],
            "SET default_transaction_isolation = 'repeatable read'"
        ));
        assert!(is_discard_all("DISCARD ALL;"));
        assert!(!is_discard_all("DISCARD PLANS"));
        assert!(mentions_serializable(
            "set transaction isolation level Serializable"
        ));
    }
}
