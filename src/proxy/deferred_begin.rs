//! Deferring a BEGIN READ ONLY sent with the extended protocol (Parse/Bind/Execute/Sync), as
//! the simple protocol's BEGINs are deferred (client_messages.rs): pgcast answers it as PostgreSQL would and
//! sends it with the transaction's first statement, which decides where the transaction runs.
//! Without this, `BEGIN READ ONLY` went to a replica at once, and a `SET TRANSACTION READ
//! WRITE` before the first query — legal in PostgreSQL — failed there with 0A000.

use super::classify::StatementClass;
use super::message::{self, Message};
use super::session::{Session, Unit};
use crate::config::ListenerRole;

impl Session {
    /// When `unit` (ending with Sync) does nothing but run a deferrable BEGIN, answers it and
    /// defers the BEGIN; returns whether it did.
    pub(super) fn defer_extended_begin(&mut self, unit: &Unit) -> bool {
        // Only BEGIN READ ONLY: a plain BEGIN through the extended protocol runs at once.
        // Deferring it too broke psycopg's pipeline mode (its transaction tests with
        // pipeline=on saw INTRANS after COMMIT, not understood yet); a plain BEGIN goes to
        // the primary anyway unless its first statement is SET TRANSACTION READ ONLY.
        // Every extended batch comes here: the classes already known (of its Parse, or of the
        // statement its Bind names) and the listener role rule out all others before any text
        // is looked at.
        const READ_ONLY_BEGIN: StatementClass = StatementClass::Begin { read_only: true };
        let only_read_only_begins =
            !unit.classes.is_empty() && unit.classes.iter().all(|c| *c == READ_ONLY_BEGIN);
        if self.listener.role != ListenerRole::Auto || !only_read_only_begins {
            return false;
        }
        let Some(sql) = self.extended_begin_text(&unit.messages) else {
            return false;
        };
        if !self.can_defer_begin_now(&sql, &[READ_ONLY_BEGIN]) {
            return false;
        }
        for m in &unit.messages {
            match m.tag {
                b'P' => message::write_message(&mut self.client_out, b'1', |_| {}),
                b'B' => message::write_message(&mut self.client_out, b'2', |_| {}),
                // Describe of the portal: a BEGIN returns no rows.
                b'D' => message::write_message(&mut self.client_out, b'n', |_| {}),
                b'E' => message::write_message(&mut self.client_out, b'C', |b| {
                    message::put_cstr(b, "BEGIN")
                }),
                _ => message::write_ready_for_query(&mut self.client_out, b'T'),
            }
        }
        self.deferred_begin_read_only = true;
        self.deferred_begin = Some(sql);
        true
    }

    /// The text of the one statement a batch of (Parse,) Bind, (Describe portal,) Execute,
    /// Sync runs; `None` for any other shape.
    fn extended_begin_text(&self, messages: &[Message]) -> Option<String> {
        let tags: Vec<u8> = messages.iter().map(|m| m.tag).collect();
        if !matches!(
            tags.as_slice(),
            [b'P', b'B', b'E', b'S']
                | [b'P', b'B', b'D', b'E', b'S']
                | [b'B', b'E', b'S']
                | [b'B', b'D', b'E', b'S']
        ) {
            return None;
        }
        let mut text = None;
        for m in messages {
            match m.tag {
                b'P' => {
                    let (_, query) = message::parse_message_fields(m.body()).ok()?;
                    text = Some(query.into_owned());
                }
                b'B' if text.is_none() => {
                    let (_, stmt) = message::bind_message_fields(m.body()).ok()?;
                    let info = self.statements.get(stmt.as_ref())?;
                    let (_, query) = message::parse_message_fields(info.parse.body()).ok()?;
                    text = Some(query.into_owned());
                }
                b'D' => {
                    let (kind, _) = message::target_fields(m.body()).ok()?;
                    if kind != b'P' {
                        return None;
                    }
                }
                _ => {}
            }
        }
        text
    }
}
