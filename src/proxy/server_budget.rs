//! Caps on server connections, shared by every session of this balancer: one per backend
//! (`pool.max_server_connections`) and one per (backend, user, database)
//! (`pool.max_server_connections_per_user_database`).
//!
//! Each open server connection — in a session or idle in the pool — holds one share of each
//! cap that applies to it. The pool's `acquire` hands a session a pooled connection or a
//! permit to open one; when a cap is reached it closes an idle pooled connection that frees
//! a share of that very cap (any user's for the backend cap, another key of the same user and
//! database for theirs), or waits on that cap until a connection comes back to the pool or is
//! closed — up to `pool.checkout_timeout_ms`. Then the session gets 53300, naming the cap and
//! how long it waited, and goes on. Waiters of a cap are served first come, first served
//! ([`WaitQueue`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One cap's count of open connections.
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    open: AtomicUsize,
    /// The sessions waiting for a share; the first is woken when a share is given back or a
    /// connection holding one comes back to the pool.
    pub waiters: WaitQueue,
}

impl Budget {
    fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap,
            open: AtomicUsize::new(0),
            waiters: WaitQueue::default(),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn is_full(&self) -> bool {
        self.open.load(Ordering::Acquire) >= self.cap
    }

    fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a share back and wakes the first waiter: it may have looked while the share was
    /// taken.
    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.waiters.wake_first();
    }

    /// Queues a waiter at the back of this cap's queue, until the place is dropped.
    pub fn join_queue(self: &Arc<Self>) -> QueuePlace {
        let wake = Arc::new(Notify::new());
        self.waiters.lock().push_back(Arc::clone(&wake));
        QueuePlace {
            budget: Arc::clone(self),
            wake,
        }
    }
}

/// The sessions waiting on one cap, in the order they came. Only the first may take what the
/// cap frees (a newcomer joins behind, even if a share is free at that moment), so nobody
/// waits longer than those who came after; it is woken whenever something is freed, and when
/// it leaves (served, timed out, gone to the other cap, or its client gone) the next one is
/// woken, so a share freed while the first could not use it is not lost.
#[derive(Debug, Default)]
pub struct WaitQueue {
    queue: Mutex<VecDeque<Arc<Notify>>>,
}

impl WaitQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Notify>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Wakes the first waiter (or, if it is not waiting yet, makes its next wait return).
    pub fn wake_first(&self) {
        if let Some(first) = self.lock().front() {
            first.notify_one();
        }
    }
}

/// A session's place in a [`WaitQueue`]; leaving it wakes the next waiter if this one was first.
#[derive(Debug)]
pub struct QueuePlace {
    budget: Arc<Budget>,
    pub wake: Arc<Notify>,
}

impl QueuePlace {
    pub fn is_first(&self) -> bool {
        self.budget
            .waiters
            .lock()
            .front()
            .is_some_and(|w| Arc::ptr_eq(w, &self.wake))
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let mut queue = self.budget.waiters.lock();
        let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, &self.wake)) else {
            return;
        };
        queue.remove(at);
        if at == 0 {
            if let Some(next) = queue.front() {
                next.notify_one();
            }
        }
    }
}

/// Which cap stopped a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `pool.max_server_connections`: the backend's, for all users together.
    Backend,
    /// `pool.max_server_connections_per_user_database`: the session's user and database's.
    UserDatabase,
}

/// The caps that apply to one pool key's connections.
#[derive(Debug, Clone, Default)]
pub struct KeyBudgets {
    pub backend: Option<Arc<Budget>>,
    pub user_database: Option<Arc<Budget>>,
}

impl KeyBudgets {
    pub fn is_unlimited(&self) -> bool {
        self.backend.is_none() && self.user_database.is_none()
    }

    /// The cap a newcomer must queue on because others already wait there (the pair's first:
    /// its waiters are the ones it would compete with for any share).
    pub fn queued(&self) -> Option<Limit> {
        let waited_on = |b: &Option<Arc<Budget>>| b.as_ref().is_some_and(|b| !b.waiters.is_empty());
        if waited_on(&self.user_database) {
            Some(Limit::UserDatabase)
        } else if waited_on(&self.backend) {
            Some(Limit::Backend)
        } else {
            None
        }
    }

    /// The cap a session waits on for `limit`.
    pub fn of(&self, limit: Limit) -> Option<&Arc<Budget>> {
        match limit {
            Limit::Backend => self.backend.as_ref(),
            Limit::UserDatabase => self.user_database.as_ref(),
        }
    }

    /// A permit holding a share of every cap, or the cap that is full. The user and database's
    /// share is taken first, so a full pair never touches the backend's count (which other
    /// users' sessions look at).
    pub fn try_take(&self) -> Result<ServerPermit, Limit> {
        if let Some(ud) = &self.user_database {
            if !ud.try_take() {
                return Err(Limit::UserDatabase);
            }
        }
        if let Some(b) = &self.backend {
            if !b.try_take() {
                if let Some(ud) = &self.user_database {
                    ud.give_back();
                }
                return Err(Limit::Backend);
            }
        }
        Ok(ServerPermit {
            budgets: self.clone(),
        })
    }
}

/// One server connection's shares of its caps; given back when dropped.
#[derive(Debug)]
pub struct ServerPermit {
    budgets: KeyBudgets,
}

impl ServerPermit {
    /// For a connection outside any cap.
    pub fn unlimited() -> ServerPermit {
        ServerPermit {
            budgets: KeyBudgets::default(),
        }
    }

    /// The caps it counts in, to wake their waiters when the connection comes back to the pool.
    pub fn budgets(&self) -> &KeyBudgets {
        &self.budgets
    }
}

impl Drop for ServerPermit {
    fn drop(&mut self) {
        for b in [&self.budgets.user_database, &self.budgets.backend]
            .into_iter()
            .flatten()
        {
            b.give_back();
        }
    }
}

/// Why no connection was granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExhausted {
    #[error(
        "backend {backend} has all {cap} of its server connections in use \
         (pool.max_server_connections); waited {waited_ms} ms"
    )]
    Backend {
        backend: String,
        cap: usize,
        waited_ms: u64,
    },
    #[error(
        "user {user:?} and database {database:?} have all {cap} of their server connections \
         to backend {backend} in use (pool.max_server_connections_per_user_database); \
         waited {waited_ms} ms"
    )]
    UserDatabase {
        backend: String,
        user: String,
        database: String,
        cap: usize,
        waited_ms: u64,
    },
}

/// A user and database at their cap on some backend, for `pgcast status`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PairAtCap {
    pub user: String,
    pub database: String,
}

type PairKey = (String, String, String);

/// The budgets of all backends and (backend, user, database) triples, created on first use.
#[derive(Debug)]
pub struct ServerBudget {
    backend_cap: Option<usize>,
    user_database_cap: Option<usize>,
    per_backend: Mutex<HashMap<String, Arc<Budget>>>,
    per_user_database: Mutex<HashMap<PairKey, Arc<Budget>>>,
}

impl ServerBudget {
    pub fn new(backend_cap: Option<usize>, user_database_cap: Option<usize>) -> ServerBudget {
        ServerBudget {
            backend_cap,
            user_database_cap,
            per_backend: Mutex::new(HashMap::new()),
            per_user_database: Mutex::new(HashMap::new()),
        }
    }

    /// The backend's budget; None without a cap.
    pub fn backend(&self, backend: &str) -> Option<Arc<Budget>> {
        let cap = self.backend_cap?;
        let mut map = self.per_backend.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: in transaction mode this runs for every transaction,
        // and the name is allocated only the first time.
        if let Some(b) = map.get(backend) {
            return Some(Arc::clone(b));
        }
        Some(Arc::clone(
            map.entry(backend.to_string())
                .or_insert_with(|| Budget::new(cap)),
        ))
    }

    /// Every cap for connections of `user` to `database` on `backend`.
    pub fn for_key(&self, backend: &str, user: &str, database: &str) -> KeyBudgets {
        KeyBudgets {
            backend: self.backend(backend),
            user_database: self.user_database(backend, user, database),
        }
    }

    fn user_database(&self, backend: &str, user: &str, database: &str) -> Option<Arc<Budget>> {
        let cap = self.user_database_cap?;
        let mut map = self.pairs();
        let key = (backend.to_string(), user.to_string(), database.to_string());
        Some(Arc::clone(
            map.entry(key).or_insert_with(|| Budget::new(cap)),
        ))
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, HashMap<PairKey, Arc<Budget>>> {
        self.per_user_database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The users and databases whose connections to `backend` are at their cap, sorted.
    pub fn pairs_at_cap(&self, backend: &str) -> Vec<PairAtCap> {
        let mut at_cap: Vec<PairAtCap> = self
            .pairs()
            .iter()
            .filter(|((b, _, _), budget)| b == backend && budget.is_full())
            .map(|((_, user, database), _)| PairAtCap {
                user: user.clone(),
                database: database.clone(),
            })
            .collect();
        at_cap.sort();
        at_cap
    }

    /// Forgets the budgets of pairs nobody uses: database names come from clients, so the map
    /// must not keep every name ever tried. Only a budget no permit and no waiter holds (the
    /// map's is the only reference, and new ones are handed out under the same lock) is
    /// removed, so a pair never has two budgets at once.
    pub fn forget_unused(&self) {
        self.pairs()
            .retain(|_, budget| Arc::strong_count(budget) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let budget = ServerBudget::new(Some(2), None);
        let pg1 = budget.for_key("pg1", "a", "app");
        let a = pg1.try_take().expect("first");
        let _b = pg1.try_take().expect("second");
        assert_eq!(pg1.try_take().err(), Some(Limit::Backend), "the cap holds");
        // Another backend has a budget of its own.
        assert!(budget.for_key("pg2", "a", "app").try_take().is_ok());
        drop(a);
        assert!(pg1.try_take().is_ok(), "a dropped permit is given back");
    }

    #[test]
    fn no_cap_means_no_budget() {
        let keys = ServerBudget::new(None, None).for_key("pg1", "a", "app");
        assert!(keys.is_unlimited());
        assert!(keys.try_take().is_ok());
    }

    /// (backend cap, pair cap, permits held as (backend, user, database), the next key, what
    /// it gets).
    #[test]
    fn a_permit_needs_a_share_of_both_caps() {
        type Triple = (&'static str, &'static str, &'static str);
        type Row = (
            Option<usize>,
            Option<usize>,
            &'static [Triple],
            Triple,
            Result<(), Limit>,
        );
        let table: [Row; 7] = [
            (
                None,
                Some(2),
                &[("pg1", "a", "app")],
                ("pg1", "a", "app"),
                Ok(()),
            ),
            (
                None,
                Some(2),
                &[("pg1", "a", "app"), ("pg1", "a", "app")],
                ("pg1", "a", "app"),
                Err(Limit::UserDatabase),
            ),
            // Other pairs, and the same pair on another backend, count apart.
            (
                None,
                Some(1),
                &[("pg1", "a", "app")],
                ("pg1", "b", "app"),
                Ok(()),
            ),
            (
                None,
                Some(1),
                &[("pg1", "a", "app")],
                ("pg1", "a", "other"),
                Ok(()),
            ),
            (
                None,
                Some(1),
                &[("pg1", "a", "app")],
                ("pg2", "a", "app"),
                Ok(()),
            ),
            (
                Some(2),
                Some(1),
                &[("pg1", "a", "app"), ("pg1", "b", "app")],
                ("pg1", "c", "app"),
                Err(Limit::Backend),
            ),
            // Both full: the pair's cap is named, the one whose freeing must come first.
            (
                Some(1),
                Some(1),
                &[("pg1", "a", "app")],
                ("pg1", "a", "app"),
                Err(Limit::UserDatabase),
            ),
        ];
        for (backend_cap, pair_cap, held, (b, u, d), expected) in table {
            let budget = ServerBudget::new(backend_cap, pair_cap);
            let _held: Vec<ServerPermit> = held
                .iter()
                .map(|(b, u, d)| budget.for_key(b, u, d).try_take().expect("held"))
                .collect();
            let got = budget.for_key(b, u, d).try_take().map(|_| ());
            assert_eq!(
                got, expected,
                "{backend_cap:?} {pair_cap:?} {held:?} {b} {u} {d}"
            );
        }
    }

    #[test]
    fn a_full_backend_gives_the_pairs_share_back() {
        let budget = ServerBudget::new(Some(1), Some(5));
        let _other = budget.for_key("pg1", "b", "app").try_take().expect("b");
        let a = budget.for_key("pg1", "a", "app");
        assert_eq!(a.try_take().err(), Some(Limit::Backend));
        assert_eq!(a.try_take().err(), Some(Limit::Backend));
        let pair = a.user_database.as_ref().expect("a pair cap");
        assert_eq!(pair.open.load(Ordering::Relaxed), 0, "nothing kept");
    }

    #[test]
    fn pairs_at_cap_are_listed_and_unused_pairs_forgotten() {
        let budget = ServerBudget::new(None, Some(1));
        let held = budget.for_key("pg1", "a", "app").try_take().expect("a");
        let _b = budget.for_key("pg1", "b", "app");
        drop(
            budget
                .for_key("pg1", "c", "app")
                .try_take()
                .expect("c, given back"),
        );
        let at_cap = budget.pairs_at_cap("pg1");
        assert_eq!(
            at_cap,
            [PairAtCap {
                user: "a".into(),
                database: "app".into()
            }]
        );
        assert!(budget.pairs_at_cap("pg2").is_empty());
        budget.forget_unused();
        let mut left: Vec<String> = budget.pairs().keys().map(|k| k.1.clone()).collect();
        left.sort();
        assert_eq!(left, ["a", "b"], "held by a permit (a) or a waiter (b)");
        drop(held);
    }
}
