//! Table tests for `plan.rs`: the routing cases found subtle in the lab, without PostgreSQL.

use super::*;
use StatementClass as C;

const P: Target = Target::Primary;
const R: Target = Target::Replica;

/// An auto session at rest: its home connection (the primary) open and idle.
fn auto() -> SessionFacts {
    SessionFacts {
        role: ListenerRole::Auto,
        primary: open(),
        replica: SlotFacts::default(),
        pinned: false,
        recent_write: false,
        has_session_sets: false,
        session_sets_full: false,
        deferred_begin: false,
        deferred_begin_read_only: false,
        unit_has_statement: true,
        unit_serializable: false,
        unit_sets_serializable: false,
        unsynced: false,
        transaction_pool: false,
    }
}

fn open() -> SlotFacts {
    SlotFacts {
        open: true,
        ..SlotFacts::default()
    }
}

fn busy() -> SlotFacts {
    SlotFacts {
        busy: true,
        ..open()
    }
}

fn in_tx() -> SlotFacts {
    SlotFacts {
        in_transaction: true,
        ..open()
    }
}

fn open_unit() -> SlotFacts {
    SlotFacts {
        open_unit: true,
        ..busy()
    }
}

/// A listener with a fixed role whose home connection is open.
fn fixed(role: ListenerRole) -> SessionFacts {
    let mut f = auto();
    f.role = role;
    if role == ListenerRole::Replica {
        f.primary = SlotFacts::default();
        f.replica = open();
    }
    f
}

/// The expected plan, built from the action and target with the flags that are set.
fn send(target: Target) -> Plan {
    Plan::new(Action::Send, target)
}

fn wait(target: Target) -> Plan {
    Plan::new(Action::Wait, target)
}

fn refuse(code: &'static str, message: &str, target: Target) -> Plan {
    Plan::new(Action::Refuse(refusal(code, message)), target)
}

/// Builder methods for the expected plans, so each row lists only what is set.
trait Expect {
    fn fallback(self) -> Self;
    fn wait_replay(self) -> Self;
    fn pin(self) -> Self;
    fn writes(self) -> Self;
    fn session_set(self) -> Self;
    fn begin(self) -> Self;
    fn open_unit(self) -> Self;
}

impl Expect for Plan {
    fn fallback(mut self) -> Self {
        self.fallback_to_primary_if_no_replica = true;
        self
    }
    fn wait_replay(mut self) -> Self {
        self.wait_if_new_replica_replays = true;
        self
    }
    fn pin(mut self) -> Self {
        self.pin = true;
        self
    }
    fn writes(mut self) -> Self {
        self.writes = true;
        self
    }
    fn session_set(mut self) -> Self {
        self.session_set = true;
        self
    }
    fn begin(mut self) -> Self {
        self.send_deferred_begin = true;
        self
    }
    fn open_unit(mut self) -> Self {
        self.continues_open_unit = true;
        self
    }
}

/// A facts modifier, so rows read as "auto session + these differences".
fn with(mut f: SessionFacts, change: impl FnOnce(&mut SessionFacts)) -> SessionFacts {
    change(&mut f);
    f
}

const SET_TX_RO: C = C::SetTransaction { read_only: true };
const SET_TX_RW: C = C::SetTransaction { read_only: false };
const BEGIN_RO: C = C::Begin { read_only: true };

#[test]
fn plans() {
    let begun = with(auto(), |f| f.deferred_begin = true);
    let begun_ro = with(begun, |f| f.deferred_begin_read_only = true);
    let prepares = with(begun_ro, |f| f.unit_has_statement = false);
    let table: Vec<(&str, SessionFacts, Vec<StatementClass>, Plan)> = vec![
        (
            "a Close/Sync unit after a deferred BEGIN does not start the transaction",
            prepares,
            vec![],
            send(P),
        ),
        // Plain routing.
        (
            "read to a replica",
            auto(),
            vec![C::Read],
            send(R).fallback(),
        ),
        (
            "write to the primary",
            auto(),
            vec![C::Write],
            send(P).writes(),
        ),
        ("empty query stays home", auto(), vec![], send(P)),
        (
            "read after a recent write",
            with(auto(), |f| f.recent_write = true),
            vec![C::Read],
            send(P),
        ),
        (
            "pinned read",
            with(auto(), |f| f.pinned = true),
            vec![C::Read],
            send(P),
        ),
        (
            "SET is replayed",
            auto(),
            vec![C::SessionSet],
            send(P).session_set(),
        ),
        (
            "a full SET log pins",
            with(auto(), |f| f.session_sets_full = true),
            vec![C::Read],
            send(R).fallback().pin(),
        ),
        (
            "new replica replaying SETs: wait if busy",
            with(auto(), |f| f.has_session_sets = true),
            vec![C::Read],
            send(R).fallback().wait_replay(),
        ),
        (
            "open replica: no replay to wait for",
            with(auto(), |f| {
                f.has_session_sets = true;
                f.replica = open();
            }),
            vec![C::Read],
            send(R).fallback(),
        ),
        // Deferred BEGIN: the transaction's first statement decides.
        (
            "BEGIN; SET TRANSACTION READ ONLY → replica",
            begun,
            vec![SET_TX_RO, C::Read],
            send(R).fallback().begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY after a write → primary",
            with(begun, |f| f.recent_write = true),
            vec![SET_TX_RO],
            send(P).begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY SERIALIZABLE → primary",
            with(begun, |f| f.unit_serializable = true),
            vec![SET_TX_RO],
            send(P).begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ WRITE → primary",
            begun,
            vec![SET_TX_RW],
            send(P).begin().writes(),
        ),
        (
            "BEGIN; SELECT → primary",
            begun,
            vec![C::Read],
            send(P).begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY not first → primary",
            begun,
            vec![C::Read, SET_TX_RO],
            send(P).begin(),
        ),
        (
            "BEGIN; SET pins instead of replaying",
            begun,
            vec![C::SessionSet],
            send(P).begin().pin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY; COMMIT; INSERT → primary",
            begun,
            vec![SET_TX_RO, C::EndTransaction, C::Write],
            send(P).begin().writes(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY; COMMIT; SELECT → primary",
            begun,
            vec![SET_TX_RO, C::EndTransaction, C::Read],
            send(P).begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY; SELECT; COMMIT → replica",
            begun,
            vec![SET_TX_RO, C::Read, C::EndTransaction],
            send(R).fallback().begin(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY; INSERT → primary (25006 there as in PostgreSQL)",
            begun,
            vec![SET_TX_RO, C::Write],
            send(P).begin().writes(),
        ),
        (
            "BEGIN; SET TRANSACTION READ ONLY; SET TRANSACTION READ WRITE → primary",
            begun,
            vec![SET_TX_RO, SET_TX_RW],
            send(P).begin().writes(),
        ),
        (
            "BEGIN READ ONLY; SELECT → replica",
            begun_ro,
            vec![C::Read],
            send(R).fallback().begin(),
        ),
        (
            "BEGIN READ ONLY; SET TRANSACTION READ WRITE → primary",
            begun_ro,
            vec![SET_TX_RW],
            send(P).begin().writes(),
        ),
        (
            "BEGIN READ ONLY; COMMIT → replica",
            begun_ro,
            vec![C::EndTransaction],
            send(R).fallback().begin(),
        ),
        (
            "BEGIN READ ONLY; SELECT after a write → primary",
            with(begun_ro, |f| f.recent_write = true),
            vec![C::Read],
            send(P).begin(),
        ),
        (
            "BEGIN READ ONLY; unsynced batch → primary",
            with(begun_ro, |f| f.unsynced = true),
            vec![C::Read],
            send(P).begin(),
        ),
        // SERIALIZABLE as the session default: never replayed on a hot standby.
        (
            "SET default_transaction_isolation = serializable pins",
            with(auto(), |f| f.unit_sets_serializable = true),
            vec![C::SessionSet],
            send(P).pin(),
        ),
        (
            "serializable SET in a replica transaction is refused",
            with(auto(), |f| {
                f.unit_sets_serializable = true;
                f.replica = in_tx();
            }),
            vec![C::SessionSet],
            refuse("0A000", STATE_IN_REPLICA_TRANSACTION, R),
        ),
        // An extended batch sent before its Sync: the rest may write.
        (
            "unsynced read batch → primary",
            with(auto(), |f| f.unsynced = true),
            vec![C::Read],
            send(P),
        ),
        (
            "unsynced batch inside a replica transaction stays there",
            with(auto(), |f| {
                f.unsynced = true;
                f.replica = in_tx();
            }),
            vec![C::Read],
            send(R).fallback(),
        ),
        // SERIALIZABLE read-only transactions: a hot standby refuses them.
        (
            "BEGIN READ ONLY → replica",
            auto(),
            vec![BEGIN_RO],
            send(R).fallback(),
        ),
        (
            "BEGIN READ ONLY SERIALIZABLE → primary",
            with(auto(), |f| f.unit_serializable = true),
            vec![BEGIN_RO],
            send(P),
        ),
        // Ordering: a busy connection decides.
        (
            "busy replica → wait",
            with(auto(), |f| f.replica = busy()),
            vec![C::Write],
            wait(R),
        ),
        (
            "busy primary (pipelining) → primary",
            with(auto(), |f| f.primary = busy()),
            vec![C::Read],
            send(P),
        ),
        (
            "busy primary wins over a deferred BEGIN's replica",
            with(begun, |f| f.primary = busy()),
            vec![SET_TX_RO],
            send(P).begin(),
        ),
        // Transactions stay where they run.
        (
            "write inside a replica transaction stays there",
            with(auto(), |f| f.replica = in_tx()),
            vec![C::Write],
            send(R).fallback().writes(),
        ),
        (
            "read inside a primary transaction stays there",
            with(auto(), |f| f.primary = in_tx()),
            vec![C::Read],
            send(P),
        ),
        (
            "SET inside a replica transaction is refused",
            with(auto(), |f| f.replica = in_tx()),
            vec![C::SessionSet],
            refuse("0A000", STATE_IN_REPLICA_TRANSACTION, R),
        ),
        (
            "PREPARE inside a replica transaction is refused",
            with(auto(), |f| f.replica = in_tx()),
            vec![C::PinToPrimary],
            refuse("0A000", STATE_IN_REPLICA_TRANSACTION, R),
        ),
        // An extended batch sent early continues where it went.
        (
            "open unit on the replica continues there",
            with(auto(), |f| f.replica = open_unit()),
            vec![C::Write],
            send(R).open_unit().writes(),
        ),
        (
            "open unit on the primary continues there, even with a busy replica",
            with(auto(), |f| {
                f.primary = open_unit();
                f.replica = busy();
            }),
            vec![C::PinToPrimary],
            send(P).open_unit().writes().pin(),
        ),
        (
            "open unit: session state in a replica transaction is not refused",
            with(auto(), |f| f.replica = open_unit()),
            vec![C::SessionSet],
            send(R).open_unit().pin(),
        ),
        (
            "open unit ignores a deferred BEGIN",
            with(begun, |f| f.primary = open_unit()),
            vec![SET_TX_RO],
            send(P).open_unit(),
        ),
        // Fixed-role listeners: no choice, no pinning, no fallback to the auto primary.
        (
            "primary listener read",
            fixed(ListenerRole::Primary),
            vec![C::Read],
            send(P),
        ),
        (
            "replica listener write",
            fixed(ListenerRole::Replica),
            vec![C::Write, C::PinToPrimary],
            send(R).writes(),
        ),
        (
            "replica listener with a busy replica does not wait",
            with(fixed(ListenerRole::Replica), |f| f.replica = busy()),
            vec![C::Read],
            send(R),
        ),
        (
            "replica listener SERIALIZABLE stays on the replica",
            with(fixed(ListenerRole::Replica), |f| f.unit_serializable = true),
            vec![BEGIN_RO],
            send(R),
        ),
        (
            "primary listener SET is not replayed",
            fixed(ListenerRole::Primary),
            vec![C::SessionSet],
            send(P),
        ),
    ];
    for (name, facts, classes, expected) in table {
        assert_eq!(plan(&facts, &classes), expected, "{name}");
    }
}

#[test]
fn connect_failures() {
    let read = send(R).fallback();
    let table: Vec<(&str, Plan, bool, Fallback)> = vec![
        (
            "vanished replica, primary known → primary",
            read.clone(),
            true,
            Fallback::Use(P),
        ),
        (
            "no replica and no primary: read refused",
            read,
            false,
            Fallback::Refuse(refusal("57P03", "pgcast: cannot run this statement: gone")),
        ),
        (
            "replica listener: no fallback to the primary here",
            send(R),
            true,
            Fallback::Refuse(refusal("57P03", "pgcast: cannot run this statement: gone")),
        ),
        (
            "no primary: write refused",
            send(P).writes(),
            false,
            Fallback::Refuse(refusal("25006", "pgcast: cannot run this statement: gone")),
        ),
        (
            "no primary: read refused",
            send(P),
            true,
            Fallback::Refuse(refusal("57P03", "pgcast: cannot run this statement: gone")),
        ),
        (
            "a write in a replica transaction is refused as a write",
            send(R).fallback().writes(),
            false,
            Fallback::Refuse(refusal("25006", "pgcast: cannot run this statement: gone")),
        ),
    ];
    let gone = ConnectFailure {
        kind: ConnectFailureKind::Unavailable,
        why: "gone".into(),
    };
    for (name, plan, primary_known, expected) in table {
        assert_eq!(
            on_connect_failure(&plan, primary_known, &gone),
            expected,
            "{name}"
        );
    }
}

#[test]
fn a_full_backend_is_53300_for_reads_and_writes() {
    let full = ConnectFailure {
        kind: ConnectFailureKind::ServerConnectionsFull,
        why: "backend pg1 is full".into(),
    };
    let refused = Fallback::Refuse(refusal(
        "53300",
        "pgcast: cannot run this statement: backend pg1 is full",
    ));
    assert_eq!(on_connect_failure(&send(P).writes(), true, &full), refused);
    assert_eq!(on_connect_failure(&send(R), true, &full), refused);
    // A full replica still falls back to the primary where reads may.
    assert_eq!(
        on_connect_failure(&send(R).fallback(), true, &full),
        Fallback::Use(P)
    );
}

#[test]
fn after_connecting() {
    let connected = |replica_busy, read_only_fallback| Connected {
        replica_busy,
        read_only_fallback,
    };
    let read_only = Action::Refuse(refusal("25006", "pgcast: this listener is read-only"));
    let table: Vec<(&str, Plan, Connected, Action)> = vec![
        ("ready", send(R), connected(false, false), Action::Send),
        (
            "new replica replaying SETs → wait",
            send(R).wait_replay(),
            connected(true, false),
            Action::Wait,
        ),
        (
            "new replica done replaying → send",
            send(R).wait_replay(),
            connected(false, false),
            Action::Send,
        ),
        (
            "busy replica without a replay → send",
            send(R),
            connected(true, false),
            Action::Send,
        ),
        (
            "write on a replica listener's primary stand-in → 25006",
            send(R).writes(),
            connected(false, true),
            read_only.clone(),
        ),
        (
            "read on a replica listener's primary stand-in → send",
            send(R),
            connected(false, true),
            Action::Send,
        ),
        (
            "waiting for the replay comes first",
            send(R).wait_replay().writes(),
            connected(true, true),
            Action::Wait,
        ),
    ];
    for (name, plan, c, expected) in table {
        assert_eq!(after_connect(&plan, c), expected, "{name}");
    }
}

#[test]
fn read_only_to_the_end() {
    let table: Vec<(bool, Vec<StatementClass>, bool)> = vec![
        (false, vec![], false),
        (true, vec![], true),
        (false, vec![SET_TX_RO], true),
        (false, vec![SET_TX_RO, C::Read, C::Neutral, C::Read], true),
        (false, vec![SET_TX_RO, C::Read, C::EndTransaction], true),
        (false, vec![SET_TX_RO, C::EndTransaction, C::Read], false),
        (false, vec![C::Read, SET_TX_RO], false),
        (true, vec![C::Read, C::EndTransaction], true),
        (true, vec![SET_TX_RW], false),
        (true, vec![C::Read, C::Write], false),
        (true, vec![C::SessionSet], false),
        (
            true,
            vec![C::EndTransaction, C::Begin { read_only: true }],
            false,
        ),
    ];
    for (begin_ro, classes, expected) in table {
        assert_eq!(
            stays_read_only(begin_ro, &classes),
            expected,
            "{begin_ro} {classes:?}"
        );
    }
}
