//! The routing decision for one unit of client work (a simple Query, or an extended-protocol
//! batch up to Sync): a pure function of the statements' classes and the session's state.

use crate::config::ListenerRole;

use super::classify::StatementClass;

/// Which backend connection of the session runs a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Primary,
    Replica,
}

impl Target {
    /// The session's other connection.
    pub fn other(self) -> Target {
        match self {
            Target::Primary => Target::Replica,
            Target::Replica => Target::Primary,
        }
    }
}

/// What the session knows when a unit arrives.
#[derive(Debug, Clone, Copy)]
pub struct SessionRouting {
    pub role: ListenerRole,
    /// The connection an open transaction runs on: the whole transaction stays there.
    pub in_transaction_on: Option<Target>,
    /// Session state that lives on the primary only (PREPARE, temp tables, LISTEN, ...).
    pub pinned_to_primary: bool,
    /// Read-your-writes: this session wrote recently enough that its reads must see it.
    pub recent_write: bool,
    /// Transaction pooling: every listener role may change connections between
    /// transactions, so pins and SET replay matter everywhere, not only on `auto`.
    pub transaction_pool: bool,
}

/// The decision and what it implies for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    pub target: Target,
    /// From now on the session stays on the primary.
    pub pin_primary: bool,
    /// The unit writes (or may write): read-your-writes starts counting.
    pub writes: bool,
    /// Every statement is a session-level SET/RESET (or neutral): after it succeeds, replay it
    /// on the session's other connections.
    pub session_set: bool,
    /// The unit creates session state (SET, PREPARE, LISTEN, ...) inside a transaction that
    /// runs on a replica: that state could not follow the session to the primary later, so
    /// the unit is refused (SQLSTATE 0A000) rather than silently losing it.
    pub unsupported_in_replica_transaction: bool,
}

/// Decides where a unit runs.
pub fn decide(state: SessionRouting, classes: &[StatementClass]) -> RouteDecision {
    use StatementClass as C;
    let mut d = RouteDecision {
        target: Target::Primary,
        pin_primary: false,
        writes: false,
        session_set: false,
        unsupported_in_replica_transaction: false,
    };
    let mut any_set = false;
    let mut only_set_or_neutral = true;
    let mut read_only_tx = false;
    let mut needs_primary = false;
    for c in classes {
        match c {
            C::Read | C::Neutral | C::EndTransaction => {}
            // The primary's answer about its own state, but no write: read-your-writes does
            // not start and the session stays free to use replicas afterwards.
            C::PrimaryRead => needs_primary = true,
            C::Begin { read_only: true } | C::SetTransaction { read_only: true } => {
                read_only_tx = true
            }
            C::Begin { read_only: false } | C::SetTransaction { read_only: false } | C::Write => {
                needs_primary = true;
                d.writes = true;
            }
            // RESET ALL / DISCARD are replayed like SETs: replaying the log in order
            // reproduces the session's state exactly (RESET ALL keeps the role, for one).
            C::SessionSet | C::SessionReset => any_set = true,
            C::PinToPrimary => {
                needs_primary = true;
                d.pin_primary = true;
                d.writes = true;
            }
        }
        if !matches!(c, C::SessionSet | C::SessionReset | C::Neutral) {
            only_set_or_neutral = false;
        }
    }
    if any_set {
        if only_set_or_neutral && state.in_transaction_on.is_none() {
            d.session_set = true;
        } else {
            // A SET mixed with other statements, or inside a transaction (where a rollback
            // would undo it), cannot be replayed faithfully: keep the session on the primary.
            d.pin_primary = true;
        }
    }

    d.target = match state.role {
        ListenerRole::Primary => Target::Primary,
        ListenerRole::Replica => Target::Replica,
        ListenerRole::Auto => {
            if let Some(t) = state.in_transaction_on {
                t
            } else if state.pinned_to_primary
                || needs_primary
                || d.pin_primary
                || d.session_set
                || classes.is_empty()
            {
                Target::Primary
            } else if read_only_tx {
                // BEGIN READ ONLY: the whole transaction may run on a replica even right
                // after a write, unless the session must read its own writes.
                if state.recent_write {
                    Target::Primary
                } else {
                    Target::Replica
                }
            } else if state.recent_write {
                Target::Primary
            } else {
                Target::Replica
            }
        }
    };
    if state.role != ListenerRole::Auto && !state.transaction_pool {
        // Pinning and SET replay only mean something when there is a choice of connection.
        d.pin_primary = false;
        d.session_set = false;
    } else if state.in_transaction_on == Some(Target::Replica) && d.pin_primary {
        d.unsupported_in_replica_transaction = true;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass as C;

    fn auto() -> SessionRouting {
        SessionRouting {
            role: ListenerRole::Auto,
            in_transaction_on: None,
            pinned_to_primary: false,
            recent_write: false,
            transaction_pool: false,
        }
    }

    #[test]
    fn reads_go_to_replicas_writes_to_primary() {
        assert_eq!(decide(auto(), &[C::Read]).target, Target::Replica);
        assert_eq!(decide(auto(), &[C::Read, C::Read]).target, Target::Replica);
        let w = decide(auto(), &[C::Read, C::Write]);
        assert_eq!(w.target, Target::Primary);
        assert!(w.writes);
    }

    #[test]
    fn transactions_are_routed_as_a_unit() {
        assert_eq!(
            decide(auto(), &[C::Begin { read_only: false }]).target,
            Target::Primary
        );
        assert_eq!(
            decide(auto(), &[C::Begin { read_only: true }]).target,
            Target::Replica
        );
        let mut s = auto();
        s.in_transaction_on = Some(Target::Replica);
        assert_eq!(
            decide(s, &[C::Write]).target,
            Target::Replica,
            "stays in its transaction"
        );
        s.in_transaction_on = Some(Target::Primary);
        assert_eq!(decide(s, &[C::Read]).target, Target::Primary);
    }

    #[test]
    fn read_your_writes_and_pinning() {
        let mut s = auto();
        s.recent_write = true;
        assert_eq!(decide(s, &[C::Read]).target, Target::Primary);
        let mut s = auto();
        s.pinned_to_primary = true;
        assert_eq!(decide(s, &[C::Read]).target, Target::Primary);
        let d = decide(auto(), &[C::PinToPrimary]);
        assert!(d.pin_primary);
        assert_eq!(d.target, Target::Primary);
    }

    #[test]
    fn session_sets_are_replayed_unless_mixed() {
        let d = decide(auto(), &[C::SessionSet, C::SessionSet]);
        assert!(d.session_set && !d.pin_primary);
        assert_eq!(d.target, Target::Primary);
        let d = decide(auto(), &[C::SessionSet, C::Read]);
        assert!(!d.session_set && d.pin_primary);
        let mut s = auto();
        s.in_transaction_on = Some(Target::Primary);
        let d = decide(s, &[C::SessionSet]);
        assert!(!d.session_set && d.pin_primary);
    }

    #[test]
    fn session_state_inside_a_replica_transaction_is_refused() {
        let mut s = auto();
        s.in_transaction_on = Some(Target::Replica);
        assert!(decide(s, &[C::SessionSet]).unsupported_in_replica_transaction);
        assert!(decide(s, &[C::PinToPrimary]).unsupported_in_replica_transaction);
        assert!(!decide(s, &[C::Read]).unsupported_in_replica_transaction);
        s.in_transaction_on = Some(Target::Primary);
        assert!(!decide(s, &[C::SessionSet]).unsupported_in_replica_transaction);
    }

    #[test]
    fn resets_are_replayed_like_sets() {
        let d = decide(auto(), &[C::SessionReset]);
        assert!(d.session_set && !d.pin_primary);
        assert_eq!(d.target, Target::Primary);
    }

    #[test]
    fn fixed_roles_ignore_classes() {
        let mut s = auto();
        s.role = ListenerRole::Primary;
        assert_eq!(decide(s, &[C::Read]).target, Target::Primary);
        s.role = ListenerRole::Replica;
        let d = decide(s, &[C::Write, C::PinToPrimary]);
        assert_eq!(d.target, Target::Replica);
        assert!(!d.pin_primary);
    }

    #[test]
    fn server_state_questions_ask_the_primary_without_writing_or_pinning() {
        for classes in [&[C::PrimaryRead][..], &[C::Read, C::PrimaryRead]] {
            let d = decide(auto(), classes);
            assert_eq!(d.target, Target::Primary, "{classes:?}");
            assert!(!d.writes && !d.pin_primary && !d.session_set, "{classes:?}");
        }
        assert!(decide(auto(), &[C::PrimaryRead, C::Write]).writes);
        // Inside a transaction the unit stays where the transaction runs.
        let mut s = auto();
        s.in_transaction_on = Some(Target::Replica);
        let d = decide(s, &[C::PrimaryRead]);
        assert_eq!(d.target, Target::Replica);
        assert!(!d.unsupported_in_replica_transaction);
        // A fixed role ignores it.
        s = auto();
        s.role = ListenerRole::Replica;
        assert_eq!(decide(s, &[C::PrimaryRead]).target, Target::Replica);
    }

    #[test]
    fn empty_query_goes_home() {
        assert_eq!(decide(auto(), &[]).target, Target::Primary);
    }
}
