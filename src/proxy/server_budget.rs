//! A cap on server connections per backend, shared by every session of this balancer.
//!
//! Each open server connection — in a session or idle in the pool — holds one permit of its
//! backend's budget. The pool's `acquire` hands a session a pooled connection or a permit to
//! open one; when the cap is reached it closes an idle pooled connection of that backend
//! (another user's, say) or waits, in arrival order, until a connection comes back to the
//! pool or is closed — up to `pool.checkout_timeout_ms`. Then the session gets 53300, naming
//! the backend and how long it waited, and goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One backend's budget.
#[derive(Debug)]
pub struct BackendBudget {
    cap: usize,
    open: AtomicUsize,
    /// Signalled when a connection is closed or comes back to the pool.
    pub freed: Notify,
}

impl BackendBudget {
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A permit if the backend is under its cap.
    pub fn try_take(self: &Arc<Self>) -> Option<ServerPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| ServerPermit {
                budget: Some(Arc::clone(self)),
            })
    }
}

/// One server connection's share of its backend's budget; given back when dropped.
#[derive(Debug)]
pub struct ServerPermit {
    budget: Option<Arc<BackendBudget>>,
}

impl ServerPermit {
    /// For a connection outside any cap.
    pub fn unlimited() -> ServerPermit {
        ServerPermit { budget: None }
    }
}

impl Drop for ServerPermit {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.open.fetch_sub(1, Ordering::AcqRel);
            b.freed.notify_one();
        }
    }
}

/// Why no connection was granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "backend {backend} has all {cap} of its server connections in use \
     (pool.max_server_connections); waited {waited_ms} ms"
)]
pub struct BudgetExhausted {
    pub backend: String,
    pub cap: usize,
    pub waited_ms: u64,
}

/// The budgets of all backends, created on first use.
#[derive(Debug)]
pub struct ServerBudget {
    cap: Option<usize>,
    per_backend: Mutex<HashMap<String, Arc<BackendBudget>>>,
}

impl ServerBudget {
    pub fn new(cap: Option<usize>) -> ServerBudget {
        ServerBudget {
            cap,
            per_backend: Mutex::new(HashMap::new()),
        }
    }

    /// The backend's budget; None without a cap.
    pub fn backend(&self, backend: &str) -> Option<Arc<BackendBudget>> {
        let cap = self.cap?;
        let mut map = self.per_backend.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(map.entry(backend.to_string()).or_insert_with(
            || {
                Arc::new(BackendBudget {
                    cap,
                    open: AtomicUsize::new(0),
                    freed: Notify::new(),
                })
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let budget = ServerBudget::new(Some(2));
        let pg1 = budget.backend("pg1").unwrap();
        let a = pg1.try_take().expect("first");
        let _b = pg1.try_take().expect("second");
        assert!(pg1.try_take().is_none(), "the cap holds");
        // Another backend has a budget of its own.
        assert!(budget.backend("pg2").unwrap().try_take().is_some());
        drop(a);
        assert!(pg1.try_take().is_some(), "a dropped permit is given back");
    }

    #[test]
    fn no_cap_means_no_budget() {
        assert!(ServerBudget::new(None).backend("pg1").is_none());
    }
}
