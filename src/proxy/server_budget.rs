//! A cap on server connections per backend, shared by every session of this balancer.
//!
//! Each open server connection — in a session or idle in the pool — holds one permit of its
//! backend's budget. A session that needs a new connection while the cap is reached first
//! closes an idle pooled connection of that backend (another user's, say) and otherwise waits
//! in FIFO order (tokio's semaphore is fair) up to `pool.checkout_timeout_ms`; then it gets
//! 53300, naming the backend and how long it waited, and its session goes on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::stats::BackendCounters;

/// One server connection's share of its backend's budget; released when dropped.
#[derive(Debug)]
pub struct ServerPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ServerPermit {
    /// For a connection outside any cap.
    pub fn unlimited() -> ServerPermit {
        ServerPermit { _permit: None }
    }
}

/// Why no permit was granted.
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
    per_backend: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ServerBudget {
    pub fn new(cap: Option<usize>) -> ServerBudget {
        ServerBudget {
            cap,
            per_backend: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, backend: &str, cap: usize) -> Arc<Semaphore> {
        let mut map = self.per_backend.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            map.entry(backend.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(cap))),
        )
    }

    /// A permit for one more connection to `backend`. `evict_idle` closes one idle pooled
    /// connection of that backend and says whether it did: tried once before waiting, so idle
    /// connections kept for other users never starve a client that needs one now.
    pub async fn acquire(
        &self,
        backend: &str,
        timeout: Duration,
        counters: &BackendCounters,
        evict_idle: impl FnOnce() -> bool,
    ) -> Result<ServerPermit, BudgetExhausted> {
        let Some(cap) = self.cap else {
            return Ok(ServerPermit::unlimited());
        };
        let sem = self.semaphore(backend, cap);
        if let Ok(p) = Arc::clone(&sem).try_acquire_owned() {
            return Ok(ServerPermit { _permit: Some(p) });
        }
        // The evicted connection's permit goes back to the semaphore when it is dropped, so
        // the wait below ends at once if it did.
        evict_idle();
        let started = tokio::time::Instant::now();
        counters.clients_waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout(timeout, sem.acquire_owned()).await;
        counters.clients_waiting.fetch_sub(1, Ordering::Relaxed);
        let waited_ms = started.elapsed().as_millis() as u64;
        counters
            .longest_wait_ms
            .fetch_max(waited_ms, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => Ok(ServerPermit { _permit: Some(p) }),
            // Timed out (or the semaphore closed, which this module never does).
            _ => {
                counters.checkout_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(BudgetExhausted {
                    backend: backend.to_string(),
                    cap,
                    waited_ms,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_in_order_then_refuses_naming_the_backend() {
        let budget = Arc::new(ServerBudget::new(Some(1)));
        let counters = Arc::new(BackendCounters::default());
        let t = Duration::from_millis(500);
        let first = budget.acquire("pg1", t, &counters, || false).await.unwrap();
        // A second backend has a budget of its own.
        let _other = budget.acquire("pg2", t, &counters, || false).await.unwrap();

        let (b, c) = (Arc::clone(&budget), Arc::clone(&counters));
        let waiter = tokio::spawn(async move { b.acquire("pg1", t, &c, || false).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(
            waiter.await.unwrap().is_ok(),
            "the waiter gets the freed permit"
        );
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);

        let held = budget.acquire("pg1", t, &counters, || false).await.unwrap();
        let refused = budget
            .acquire("pg1", t, &counters, || false)
            .await
            .unwrap_err();
        assert_eq!(refused.backend, "pg1");
        assert_eq!(refused.cap, 1);
        assert_eq!(refused.waited_ms, 500);
        assert_eq!(counters.checkout_timeouts.load(Ordering::Relaxed), 1);
        assert!(refused.to_string().contains("pg1"), "{refused}");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pooled_connection_makes_room() {
        let budget = ServerBudget::new(Some(1));
        let counters = BackendCounters::default();
        let t = Duration::from_millis(500);
        let idle = Mutex::new(Some(
            budget.acquire("pg1", t, &counters, || false).await.unwrap(),
        ));
        let got = budget
            .acquire("pg1", t, &counters, || {
                idle.lock().unwrap().take().is_some()
            })
            .await;
        assert!(got.is_ok());
        assert_eq!(counters.longest_wait_ms.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn no_cap_means_no_wait() {
        let budget = ServerBudget::new(None);
        let counters = BackendCounters::default();
        let t = Duration::from_millis(1);
        let permits: Vec<_> = (0..1000)
            .map(|_| budget.acquire("pg1", t, &counters, || false))
            .collect();
        for p in permits {
            assert!(p.await.is_ok());
        }
    }
}
