//! The complete routing plan for one unit of client work: where it runs, whether it must wait
//! or be refused, what to do if its connection cannot be opened, and what it implies for the
//! session (pinning, read-your-writes, SET replay, a deferred BEGIN sent first).
//!
//! Everything here is a pure function of explicit facts ([`SessionFacts`]) so that every
//! routing branch the session takes can be tested without a backend; `Session::dispatch`
//! only gathers the facts, opens the connection the plan names and sends the unit.

use super::classify::StatementClass;
use super::router::{self, SessionRouting, Target};
use crate::config::ListenerRole;

/// What routing needs to know about one of the session's backend connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotFacts {
    /// The connection exists.
    pub open: bool,
    /// Replies are outstanding (not idle).
    pub busy: bool,
    /// Inside an explicit transaction (or a failed one).
    pub in_transaction: bool,
    /// An extended batch was sent early (Flush) and its Sync has not followed yet.
    pub open_unit: bool,
}

/// What the session knows when a unit arrives. No clock: `recent_write` is already decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    pub role: ListenerRole,
    pub primary: SlotFacts,
    pub replica: SlotFacts,
    /// Session state lives on the primary only: the session stays there.
    pub pinned: bool,
    /// Read-your-writes: the session wrote recently enough that its reads must see it.
    pub recent_write: bool,
    /// SET statements were logged for replay on newly opened connections.
    pub has_session_sets: bool,
    /// The replay log is so long the session should stay on the primary instead.
    pub session_sets_full: bool,
    /// A bare BEGIN was answered but not sent yet: this unit is the transaction's first.
    pub deferred_begin: bool,
    /// That deferred BEGIN was `BEGIN READ ONLY`.
    pub deferred_begin_read_only: bool,
    /// The unit runs or prepares a statement (Query, Parse, Execute, FunctionCall): it is the
    /// deferred transaction's first (a Parse error aborts a transaction too). One that only
    /// closes, describes or syncs does not start it.
    pub unit_has_statement: bool,
    /// The unit starts a read-only transaction and mentions SERIALIZABLE.
    pub unit_serializable: bool,
    /// The unit is a session SET that mentions SERIALIZABLE (`default_transaction_isolation`,
    /// `SESSION CHARACTERISTICS`): replayed on a hot standby it would fail every later read.
    pub unit_sets_serializable: bool,
    /// An extended batch sent before its Sync (the client went quiet, or it grew large): what
    /// follows is unknown, so it may not start on a replica.
    pub unsynced: bool,
    /// `[pool] mode = "transaction"`: connections change between transactions.
    pub transaction_pool: bool,
}

impl SessionFacts {
    pub fn slot(&self, target: Target) -> SlotFacts {
        match target {
            Target::Primary => self.primary,
            Target::Replica => self.replica,
        }
    }

    fn auto(&self) -> bool {
        self.role == ListenerRole::Auto
    }
}

/// An error answered to the client instead of running the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// What to do with the unit now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send it to the plan's target (opening that connection first if needed).
    Send,
    /// Park it until the replica connection is idle, then plan it again: that connection's
    /// transaction status (or the success of its SET replay) decides where the unit goes.
    Wait,
    Refuse(Refusal),
}

/// The routing plan for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    /// The connection that runs the unit (for `Wait`/`Refuse`: the one concerned).
    pub target: Target,
    /// The unit completes an extended batch already sent early: it goes to that connection
    /// as it is (no deferred BEGIN, no SET replay, not counted as a routed unit again).
    pub continues_open_unit: bool,
    /// If no replica connection can be opened, the session's primary serves the read.
    pub fallback_to_primary_if_no_replica: bool,
    /// A replica connection is being opened and the session's SETs are replayed on it: if it
    /// is still busy with them once open, wait, so a failed replay can reroute the unit.
    pub wait_if_new_replica_replays: bool,
    /// From now on the session stays on the primary.
    pub pin: bool,
    /// The unit writes (or may write): read-your-writes starts counting.
    pub writes: bool,
    /// Replay the unit's SETs on the other connection once they succeeded.
    pub session_set: bool,
    /// Send the deferred BEGIN to the target first.
    pub send_deferred_begin: bool,
}

/// Message of the 0A000 refusal: session state cannot follow a replica transaction.
pub const STATE_IN_REPLICA_TRANSACTION: &str =
    "pgcast: session state (SET, PREPARE, LISTEN, temporary objects) cannot be created \
     inside a read-only transaction that runs on a replica; use SET LOCAL, or do it \
     before BEGIN";

/// Decides what happens to a unit with these statement classes.
pub fn plan(f: &SessionFacts, classes: &[StatementClass]) -> Plan {
    // The rest of an extended batch sent early (Flush) follows it; its statements still
    // count for pinning and read-your-writes.
    if let Some(open) = [Target::Primary, Target::Replica]
        .into_iter()
        .find(|t| f.slot(*t).open_unit)
    {
        let d = router::decide(routing(f, Some(open)), classes);
        return Plan {
            continues_open_unit: true,
            pin: d.pin_primary || f.session_sets_full,
            writes: d.writes,
            ..Plan::new(Action::Send, open)
        };
    }
    if f.auto() && f.replica.busy {
        // Its transaction status is unknown until it answers: decide afterwards.
        return Plan::new(Action::Wait, Target::Replica);
    }
    let d = router::decide(routing(f, in_transaction_on(f)), classes);
    if d.unsupported_in_replica_transaction {
        let refusal = refusal("0A000", STATE_IN_REPLICA_TRANSACTION);
        return Plan::new(Action::Refuse(refusal), d.target);
    }
    let mut p = Plan {
        pin: d.pin_primary,
        writes: d.writes,
        session_set: d.session_set,
        ..Plan::new(Action::Send, d.target)
    };
    if p.session_set && f.unit_sets_serializable {
        // SERIALIZABLE as the session's default: a hot standby refuses every later
        // transaction, so the session stays on the primary and the SET is not replayed.
        p.session_set = false;
        p.pin = true;
    }
    if f.deferred_begin && f.unit_has_statement {
        first_of_deferred_transaction(&mut p, f, classes);
    }
    if f.auto() && f.unsynced && p.target == Target::Replica && in_transaction_on(f).is_none() {
        // The rest of the batch may write: only the primary can run whatever follows.
        p.target = Target::Primary;
    }
    if f.auto() && p.target == Target::Replica && f.unit_serializable {
        // A hot standby refuses SERIALIZABLE: such read-only transactions use the primary.
        p.target = Target::Primary;
    }
    if f.auto() && f.primary.busy {
        // Pipelining on the primary: the primary can run anything, keep the order.
        p.target = Target::Primary;
    }
    p.pin |= f.session_sets_full;
    let to_replica = f.auto() && p.target == Target::Replica;
    p.fallback_to_primary_if_no_replica = to_replica;
    p.wait_if_new_replica_replays = to_replica && !f.replica.open && f.has_session_sets;
    p
}

/// The unit after a deferred BEGIN is the transaction's first statement and decides where
/// the transaction runs: a replica (unless read-your-writes says otherwise) only when the
/// transaction is read-only and stays so through the whole unit, anything else the primary.
fn first_of_deferred_transaction(p: &mut Plan, f: &SessionFacts, classes: &[StatementClass]) {
    let read_only = stays_read_only(f.deferred_begin_read_only, classes);
    // Only a BEGIN without SERIALIZABLE is deferred, so SERIALIZABLE can only come from here.
    p.target = if read_only && !f.recent_write && !f.unit_serializable {
        Target::Replica
    } else {
        Target::Primary
    };
    if p.session_set {
        // A SET inside the transaction would be undone by a rollback: no replay.
        p.session_set = false;
        p.pin = true;
    }
    p.send_deferred_begin = true;
}

/// Whether a transaction's first unit keeps it read-only throughout: read-only before its
/// first query (`BEGIN READ ONLY`, or `SET TRANSACTION READ ONLY` first), only reads inside,
/// never switched to READ WRITE, and nothing after its COMMIT (which would run outside any
/// read-only transaction, e.g. `SET TRANSACTION READ ONLY; COMMIT; INSERT ...`).
pub fn stays_read_only(begin_read_only: bool, classes: &[StatementClass]) -> bool {
    use StatementClass as C;
    let mut read_only = begin_read_only;
    for (i, c) in classes.iter().enumerate() {
        match c {
            C::SetTransaction { read_only: true } => read_only = true,
            C::Read | C::Neutral if read_only => {}
            C::EndTransaction => return read_only && i + 1 == classes.len(),
            _ => return false,
        }
    }
    read_only
}

/// What to do when the connection the plan names could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Open this connection instead and send the unit there.
    Use(Target),
    Refuse(Refusal),
}

/// Decides the fallback after failing to open the plan's connection: an auto session's
/// primary serves a read no replica could take; otherwise the unit is refused, as a write
/// to a read-only server (25006) or a read while the servers start up or fail over (57P03).
pub fn on_connect_failure(plan: &Plan, primary_known: bool, failure: &ConnectFailure) -> Fallback {
    if plan.fallback_to_primary_if_no_replica && primary_known {
        return Fallback::Use(Target::Primary);
    }
    let code = match failure.kind {
        // PostgreSQL's own answer when it has no connection left for a client.
        ConnectFailureKind::ServerConnectionsFull => "53300",
        ConnectFailureKind::Unavailable if plan.writes => "25006",
        ConnectFailureKind::Unavailable => "57P03",
    };
    let why = &failure.why;
    Fallback::Refuse(refusal(
        code,
        &format!("pgcast: cannot run this statement: {why}"),
    ))
}

/// Why the unit's connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub kind: ConnectFailureKind,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailureKind {
    /// Down, unreachable, refusing logins.
    Unavailable,
    /// A cap of this balancer on server connections (`pool.max_server_connections` for the
    /// backend, or `pool.max_server_connections_per_user_database` for the session's user and
    /// database) stayed reached for `pool.checkout_timeout_ms`.
    ServerConnectionsFull,
}

/// The connection that will run the unit, once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    /// The replica connection has replies outstanding.
    pub replica_busy: bool,
    /// The connection is a replica listener's read-only stand-in on the primary.
    pub read_only_fallback: bool,
}

/// The last check before sending, once the connection is open.
pub fn after_connect(plan: &Plan, c: Connected) -> Action {
    if plan.wait_if_new_replica_replays && c.replica_busy {
        // Decide again once the replay answered, so a failed replay sends this unit to the
        // primary instead.
        return Action::Wait;
    }
    if plan.writes && c.read_only_fallback {
        return Action::Refuse(refusal("25006", "pgcast: this listener is read-only"));
    }
    Action::Send
}

impl Plan {
    fn new(action: Action, target: Target) -> Plan {
        Plan {
            action,
            target,
            continues_open_unit: false,
            fallback_to_primary_if_no_replica: false,
            wait_if_new_replica_replays: false,
            pin: false,
            writes: false,
            session_set: false,
            send_deferred_begin: false,
        }
    }
}

/// The connection an open transaction runs on (the primary's first, as it can run anything).
fn in_transaction_on(f: &SessionFacts) -> Option<Target> {
    [Target::Primary, Target::Replica]
        .into_iter()
        .find(|t| f.slot(*t).in_transaction)
}

fn routing(f: &SessionFacts, in_transaction_on: Option<Target>) -> SessionRouting {
    SessionRouting {
        role: f.role,
        in_transaction_on,
        pinned_to_primary: f.pinned,
        recent_write: f.recent_write,
        transaction_pool: f.transaction_pool,
    }
}

fn refusal(code: &'static str, message: &str) -> Refusal {
    Refusal {
        code,
        message: message.to_string(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
