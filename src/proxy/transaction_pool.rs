//! Transaction pooling (`[pool] mode = "transaction"`): between transactions a session gives
//! its backend connections back to the pool, and takes one again for its next unit.
//!
//! What makes that invisible to the client is done elsewhere and reused here: the session's
//! SETs are replayed on every connection it takes (`replay_sets`) and undone with `RESET ALL`
//! when it gives one back; its protocol-level prepared statements are prepared again on a
//! connection that lacks them (`Slot::write_unit`), and a connection keeps the ones it has, so
//! clients running the same statements rarely pay for a Parse. State that cannot move — temp
//! tables, LISTEN, SQL PREPARE, cursors WITH HOLD, session advisory locks, a SET inside a
//! transaction — pins the session to its connections for the rest of its life
//! (`Session::pinned_primary`, counted in `pinned_sessions`).

use std::sync::atomic::Ordering;

use super::pool::Reset;
use super::router::Target;
use super::session::Session;
use crate::config::PoolMode;

impl Session {
    /// Gives back every connection that is between transactions, unless the session is
    /// pinned to its connections.
    pub(super) fn release_between_transactions(&mut self) {
        if self.config.pool.mode != PoolMode::Transaction || self.pinned_primary {
            return;
        }
        for target in [Target::Primary, Target::Replica] {
            if !self
                .slots
                .get(target)
                .is_some_and(|s| s.between_transactions())
            {
                continue;
            }
            let Some(slot) = self.slots.take(target) else {
                continue;
            };
            let how = if self.session_sets.is_empty() {
                Reset::Nothing
            } else {
                Reset::Settings
            };
            let (key, conn) = slot.into_server_conn();
            self.ctx.pool.checkin(key, conn, &self.config.pool, how);
            self.ctx
                .stats
                .transaction_checkins
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a transaction-pool session that just became pinned.
    pub(super) fn note_pinned(&self) {
        if self.config.pool.mode == PoolMode::Transaction {
            self.ctx
                .stats
                .pinned_sessions
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
