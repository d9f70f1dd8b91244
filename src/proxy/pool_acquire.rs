//! Handing a session a server connection under the caps: a pooled one, a permit to open one,
//! or a wait on the cap that is full.
//!
//! A waiting session waits in one cap's queue ([`WaitQueue`](super::server_budget::WaitQueue)),
//! first come, first served: its user and database's while that one is full (only a
//! connection of the same pair can make room, so closing other users' idle connections would
//! be done for nothing), else its backend's. Only the first of a queue looks for a connection;
//! a newcomer queues behind anyone already waiting on one of its caps. The first that is now
//! held back by its other cap moves to the back of that cap's queue, and the next one of the
//! first queue is woken, so a share freed for a cap is not lost on a session that cannot use it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Acquired, BackendCounters, Pool, PoolConfig, PoolKey, ServerConn, ServerPermit};
use crate::proxy::server_budget::{BudgetExhausted, KeyBudgets, Limit, QueuePlace};

impl Pool {
    /// The caps of `key`'s connections.
    pub fn budgets_of(&self, key: &PoolKey) -> KeyBudgets {
        let (user, database) = key.user_database();
        self.budget.for_key(&key.backend, user, database)
    }

    /// A pooled connection, when `acquire` would hand one over at once: none is idle, or
    /// others queue on one of the caps, and the caller must `acquire`. Lets a session take
    /// one without an await (and without boxing the future that could wait).
    pub fn take_pooled(
        &self,
        key: &PoolKey,
        budgets: &KeyBudgets,
        cfg: &PoolConfig,
    ) -> Option<Box<ServerConn>> {
        if budgets.queued().is_some() {
            return None;
        }
        self.checkout(key, cfg)
    }

    #[cfg(test)]
    pub async fn acquire(
        &self,
        key: &PoolKey,
        cfg: &PoolConfig,
        counters: &BackendCounters,
    ) -> Result<Acquired, BudgetExhausted> {
        self.acquire_under(key, &self.budgets_of(key), cfg, counters)
            .await
    }

    /// A connection for `key` under its caps, `budgets`: a pooled one, or a permit to open
    /// one. At a cap it closes an idle connection that frees a share of that cap, else waits
    /// for one to come back or close, up to `cfg.checkout_timeout`.
    pub async fn acquire_under(
        &self,
        key: &PoolKey,
        budgets: &KeyBudgets,
        cfg: &PoolConfig,
        counters: &BackendCounters,
    ) -> Result<Acquired, BudgetExhausted> {
        if budgets.is_unlimited() {
            return Ok(match self.checkout(key, cfg) {
                Some(c) => Acquired::Pooled(c),
                None => Acquired::Open(ServerPermit::unlimited()),
            });
        }
        let limit = match budgets.queued() {
            Some(queued) => queued,
            None => match self.take_now(key, cfg, budgets) {
                Ok(got) => return Ok(got),
                Err(limit) => limit,
            },
        };
        let started = tokio::time::Instant::now();
        let got = self
            .wait(
                key,
                cfg,
                budgets,
                limit,
                started + cfg.checkout_timeout,
                counters,
            )
            .await;
        let waited_ms = started.elapsed().as_millis() as u64;
        counters
            .longest_wait_ms
            .fetch_max(waited_ms, Ordering::Relaxed);
        got.map_err(|limit| {
            counters.checkout_timeouts.fetch_add(1, Ordering::Relaxed);
            if limit == Limit::UserDatabase {
                counters
                    .checkout_timeouts_user_database
                    .fetch_add(1, Ordering::Relaxed);
            }
            exhausted(key, budgets, limit, waited_ms)
        })
    }

    /// Waits in the queue of the cap that holds the session back until it gets a connection,
    /// or the deadline passes (`Err`: the cap that held it back last).
    async fn wait(
        &self,
        key: &PoolKey,
        cfg: &PoolConfig,
        budgets: &KeyBudgets,
        mut limit: Limit,
        deadline: tokio::time::Instant,
        counters: &BackendCounters,
    ) -> Result<Acquired, Limit> {
        let mut waiting = Waiting::new(counters);
        let Some(mut place) = join(budgets, limit) else {
            return Err(limit);
        };
        // One timer for the whole wait: a waiter is woken each time its predecessor leaves.
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        loop {
            waiting.on(limit);
            let wake = Arc::clone(&place.wake);
            let woken = wake.notified();
            tokio::pin!(woken);
            // Registered before looking, so a share freed meanwhile is not missed.
            woken.as_mut().enable();
            if place.is_first() {
                match self.take_now(key, cfg, budgets) {
                    // Leaving the queue (the place is dropped) wakes the next one.
                    Ok(got) => return Ok(got),
                    Err(now) if now != limit => {
                        let Some(other) = join(budgets, now) else {
                            return Err(now);
                        };
                        place = other;
                        limit = now;
                        continue;
                    }
                    Err(_) => {}
                }
            }
            // Biased: a fixed order instead of a random one costs no random number per wait
            // (~300 instructions, callgrind); either branch ends this round.
            tokio::select! {
                biased;
                () = woken => {}
                () = &mut expiry => return Err(limit),
            }
        }
    }

    /// A pooled connection, a permit under both caps, or a permit freed by closing idle
    /// connections that hold a share of the cap that is full: at the user and database's cap
    /// only theirs (of other startup parameters), at the backend's anyone's.
    fn take_now(
        &self,
        key: &PoolKey,
        cfg: &PoolConfig,
        budgets: &KeyBudgets,
    ) -> Result<Acquired, Limit> {
        if let Some(c) = self.checkout(key, cfg) {
            return Ok(Acquired::Pooled(c));
        }
        loop {
            let limit = match budgets.try_take() {
                Ok(p) => return Ok(Acquired::Open(p)),
                Err(limit) => limit,
            };
            let evicted = match limit {
                Limit::UserDatabase => self.evict_idle_where(|k| k.same_user_database(key)),
                Limit::Backend => self.evict_idle(&key.backend),
            };
            if !evicted {
                return Err(limit);
            }
        }
    }
}

/// A place at the back of `limit`'s queue; None if that cap does not apply.
fn join(budgets: &KeyBudgets, limit: Limit) -> Option<QueuePlace> {
    budgets.of(limit).map(|b| b.join_queue())
}

fn exhausted(key: &PoolKey, budgets: &KeyBudgets, limit: Limit, waited_ms: u64) -> BudgetExhausted {
    let cap = budgets.of(limit).map_or(0, |b| b.cap());
    let backend = key.backend.clone();
    match limit {
        Limit::Backend => BudgetExhausted::Backend {
            backend,
            cap,
            waited_ms,
        },
        Limit::UserDatabase => {
            let (user, database) = key.user_database();
            BudgetExhausted::UserDatabase {
                backend,
                user: user.to_string(),
                database: database.to_string(),
                cap,
                waited_ms,
            }
        }
    }
}

/// A session in the backend's waiting gauges, and in the one for user and database caps while
/// that cap holds it back; taken out when dropped, also when the client leaves mid-wait.
struct Waiting<'a> {
    counters: &'a BackendCounters,
    on_user_database: bool,
}

impl<'a> Waiting<'a> {
    fn new(counters: &'a BackendCounters) -> Self {
        counters.clients_waiting.fetch_add(1, Ordering::AcqRel);
        Waiting {
            counters,
            on_user_database: false,
        }
    }

    fn on(&mut self, limit: Limit) {
        let now = limit == Limit::UserDatabase;
        if now != self.on_user_database {
            let delta = if now { 1 } else { -1 };
            self.counters
                .clients_waiting_user_database
                .fetch_add(delta, Ordering::Relaxed);
            self.on_user_database = now;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.on(Limit::Backend);
        self.counters.clients_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{PoolMode, ServerConnect, SslMode};
    use crate::proxy::backend::{BackendReader, BackendStartup};
    use crate::proxy::cancel::BackendCancelKey;
    use crate::proxy::pool::ServerConn;
    use crate::proxy::server_budget::ServerBudget;
    use crate::proxy::stats::ProxyStats;

    /// (user, database, application_name): keys of one pair differ by the last.
    type Who = (&'static str, &'static str, &'static str);

    fn key(backend: &str, (user, database, app): Who) -> PoolKey {
        let params = vec![
            ("user".into(), user.into()),
            ("database".into(), database.into()),
            ("application_name".into(), app.into()),
        ];
        PoolKey::new(backend, "127.0.0.1", 5432, params.into(), SslMode::Disable)
    }

    fn capped(
        backend_cap: Option<usize>,
        pair_cap: Option<usize>,
        timeout_ms: u64,
    ) -> (Arc<Pool>, PoolConfig) {
        let cfg = PoolConfig {
            mode: PoolMode::Session,
            connect: ServerConnect::OnDemand,
            max_idle_per_key: 10,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            max_server_connections: backend_cap,
            max_server_connections_per_user_database: pair_cap,
            checkout_timeout: Duration::from_millis(timeout_ms),
        };
        let stats = Arc::new(ProxyStats::default());
        (
            Pool::new(stats, ServerBudget::new(backend_cap, pair_cap)),
            cfg,
        )
    }

    fn counters(pool: &Pool) -> Arc<BackendCounters> {
        pool.stats.backend("pg1")
    }

    fn held(pool: &Pool, (user, database, _): Who) -> ServerPermit {
        let budgets = pool.budget.for_key("pg1", user, database);
        budgets.try_take().expect("under the caps")
    }

    /// Pools an idle connection of `who` on a real socket (a live peer: `looks_alive` holds);
    /// the peer's end is returned to keep it open.
    fn pool_idle(pool: &Pool, cfg: &PoolConfig, who: Who) -> std::net::TcpStream {
        pool_idle_since(pool, cfg, who, Instant::now())
    }

    /// [`pool_idle`], checked in at `since`.
    fn pool_idle_since(
        pool: &Pool,
        cfg: &PoolConfig,
        who: Who,
        since: Instant,
    ) -> std::net::TcpStream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("non-blocking");
        let tcp = tokio::net::TcpStream::from_std(ours).expect("tokio socket");
        let (rd, wr) = crate::proxy::stream::split_plain(tcp);
        let conn = Box::new(ServerConn {
            reader: BackendReader::new(rd, 1 << 20),
            wr,
            startup: BackendStartup {
                parameter_status: Vec::new(),
                pid: 1,
                secret: 2,
            },
            created: Instant::now(),
            permit: held(pool, who),
            prepared: HashMap::new(),
            pending_room: Default::default(),
            cancel_key: Arc::new(BackendCancelKey {
                host: "127.0.0.1".into(),
                port: 5432,
                pid: 1,
                secret: 2,
                busy: Default::default(),
            }),
            counters: counters(pool),
        });
        pool.put(Arc::new(key("pg1", who)), conn, cfg, since);
        peer
    }

    /// A pooled connection the server closed, or sent something on, while it was idle is not
    /// handed out, however long it was idle; a quiet one is. (The probe is tokio's `try_read`,
    /// which reads only once the reactor has seen the socket readable: a quiet connection
    /// costs no system call.)
    #[tokio::test]
    async fn a_connection_the_server_closed_or_spoke_on_while_idle_is_not_handed_out() {
        use std::io::Write;
        let (pool, cfg) = capped(None, None, 100);
        for idle in [Duration::ZERO, Duration::from_secs(2)] {
            for peer_does in ["nothing", "closes", "writes"] {
                let since = Instant::now() - idle;
                let mut peer = Some(pool_idle_since(&pool, &cfg, A1, since));
                match peer_does {
                    "closes" => drop(peer.take()),
                    "writes" => {
                        let notice = b"N\0\0\0\x04";
                        peer.as_mut()
                            .expect("peer")
                            .write_all(notice)
                            .expect("write");
                    }
                    _ => {}
                }
                // The reactor sees the socket when the runtime next waits.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let handed_out = pool.checkout(&key("pg1", A1), &cfg).is_some();
                assert_eq!(
                    handed_out,
                    peer_does == "nothing",
                    "server {peer_does}, idle for {idle:?}"
                );
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum Got {
        Pooled,
        Open,
        Full(Limit),
    }

    fn got(r: &Result<Acquired, BudgetExhausted>) -> Got {
        match r {
            Ok(Acquired::Pooled(_)) => Got::Pooled,
            Ok(Acquired::Open(_)) => Got::Open,
            Err(BudgetExhausted::Backend { .. }) => Got::Full(Limit::Backend),
            Err(BudgetExhausted::UserDatabase { .. }) => Got::Full(Limit::UserDatabase),
        }
    }

    const A1: Who = ("a", "app", "one");
    const A2: Who = ("a", "app", "two");
    const B1: Who = ("b", "app", "one");
    const AO: Who = ("a", "other", "one");

    struct Case {
        what: &'static str,
        caps: (Option<usize>, Option<usize>),
        in_use: &'static [Who],
        idle: &'static [Who],
        asks: Who,
        gets: Got,
        idle_left: i64,
    }

    /// What a session gets at the caps, and which idle connections it closes for it: only
    /// those holding a share of the cap that is full.
    #[tokio::test(start_paused = true)]
    async fn what_a_session_gets_and_what_it_closes_at_each_cap() {
        let cases = [
            Case {
                what: "under both caps",
                caps: (Some(2), Some(1)),
                in_use: &[B1],
                idle: &[],
                asks: A1,
                gets: Got::Open,
                idle_left: 0,
            },
            Case {
                what: "its pair's cap: another user's idle connection is left alone",
                caps: (Some(3), Some(1)),
                in_use: &[A1],
                idle: &[B1],
                asks: A1,
                gets: Got::Full(Limit::UserDatabase),
                idle_left: 1,
            },
            Case {
                what: "its pair's cap: its own idle connection of other parameters is closed",
                caps: (Some(3), Some(1)),
                in_use: &[],
                idle: &[B1, A2],
                asks: A1,
                gets: Got::Open,
                idle_left: 1,
            },
            Case {
                what: "its pair's cap: an idle one of its own key is reused",
                caps: (None, Some(1)),
                in_use: &[],
                idle: &[A1],
                asks: A1,
                gets: Got::Pooled,
                idle_left: 0,
            },
            Case {
                what: "another database is another pair",
                caps: (None, Some(1)),
                in_use: &[A1],
                idle: &[],
                asks: AO,
                gets: Got::Open,
                idle_left: 0,
            },
            Case {
                what: "the backend's cap: another user's idle connection is closed",
                caps: (Some(2), Some(1)),
                in_use: &[A1],
                idle: &[B1],
                asks: AO,
                gets: Got::Open,
                idle_left: 0,
            },
            Case {
                what: "the backend's cap with nothing idle",
                caps: (Some(1), Some(1)),
                in_use: &[B1],
                idle: &[],
                asks: A1,
                gets: Got::Full(Limit::Backend),
                idle_left: 0,
            },
        ];
        for c in cases {
            let (pool, cfg) = capped(c.caps.0, c.caps.1, 100);
            let _in_use: Vec<ServerPermit> = c.in_use.iter().map(|w| held(&pool, *w)).collect();
            let _peers: Vec<_> = c.idle.iter().map(|w| pool_idle(&pool, &cfg, *w)).collect();
            let r = pool
                .acquire(&key("pg1", c.asks), &cfg, &counters(&pool))
                .await;
            assert_eq!(got(&r), c.gets, "{}", c.what);
            let idle = counters(&pool).idle_connections.load(Ordering::Relaxed);
            assert_eq!(idle, c.idle_left, "{}", c.what);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_at_its_cap_gets_53300_naming_user_and_database_and_others_go_on() {
        let (pool, cfg) = capped(Some(10), Some(1), 500);
        let counters = counters(&pool);
        let _a = held(&pool, A1);
        let Err(full) = pool.acquire(&key("pg1", A2), &cfg, &counters).await else {
            panic!("past the pair's cap");
        };
        let text = full.to_string();
        assert!(
            text.starts_with(
                "user \"a\" and database \"app\" have all 1 of their server connections to \
                 backend pg1 in use (pool.max_server_connections_per_user_database); waited 500 ms"
            ),
            "{text}"
        );
        assert_eq!(counters.checkout_timeouts.load(Ordering::Relaxed), 1);
        let by_pair = &counters.checkout_timeouts_user_database;
        assert_eq!(by_pair.load(Ordering::Relaxed), 1);
        let pairs = pool.budget.pairs_at_cap("pg1");
        assert_eq!((pairs.len(), pairs[0].user.as_str()), (1, "a"));
        let b = pool.acquire(&key("pg1", B1), &cfg, &counters).await;
        assert_eq!(got(&b), Got::Open, "another user is not held back");
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_backend_cap_sessions_wait_then_get_53300_naming_the_backend() {
        let (pool, cfg) = capped(Some(1), None, 500);
        let counters = counters(&pool);
        let first = held(&pool, A1);
        let (p, c, k) = (Arc::clone(&pool), cfg.clone(), Arc::clone(&counters));
        let waiter = tokio::spawn(async move { p.acquire(&key("pg1", A1), &c, &k).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiting session gets the freed share"
        );
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);

        let _held = held(&pool, A1);
        let Err(full) = pool.acquire(&key("pg1", A1), &cfg, &counters).await else {
            panic!("past the cap");
        };
        assert_eq!(
            full,
            BudgetExhausted::Backend {
                backend: "pg1".into(),
                cap: 1,
                waited_ms: 500
            }
        );
        assert!(full.to_string().contains("backend pg1 "), "{full}");
        assert_eq!(counters.checkout_timeouts.load(Ordering::Relaxed), 1);
        let by_pair = &counters.checkout_timeouts_user_database;
        assert_eq!(by_pair.load(Ordering::Relaxed), 0);
        assert_eq!(counters.longest_wait_ms.load(Ordering::Relaxed), 500);
    }

    /// A waits on its pair's cap, C on the backend's; whichever connection closes first, each
    /// freed share reaches a waiter that can use it, and both get in long before the timeout.
    #[tokio::test(start_paused = true)]
    async fn a_freed_share_wakes_a_waiter_that_can_use_it() {
        for a_leaves_first in [false, true] {
            let (pool, cfg) = capped(Some(2), Some(1), 10_000);
            let counters = counters(&pool);
            let (mut a, mut b) = (Some(held(&pool, A1)), Some(held(&pool, B1)));
            let wait = |who: Who| {
                let (p, c, k) = (Arc::clone(&pool), cfg.clone(), Arc::clone(&counters));
                tokio::spawn(async move { got(&p.acquire(&key("pg1", who), &c, &k).await) })
            };
            let (wa, wc) = (wait(A2), wait(("c", "app", "one")));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 2);
            let on_pair = &counters.clients_waiting_user_database;
            assert_eq!(on_pair.load(Ordering::Relaxed), 1, "A on its pair's cap");
            let started = tokio::time::Instant::now();
            let (first, second) = if a_leaves_first {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            first.take();
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !a_leaves_first {
                assert!(wc.is_finished(), "C got B's share");
                assert!(!wa.is_finished(), "A's pair is still full");
            }
            second.take();
            assert_eq!(
                (wa.await.unwrap(), wc.await.unwrap()),
                (Got::Open, Got::Open)
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "no wake-up lost"
            );
            assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);
            assert_eq!(on_pair.load(Ordering::Relaxed), 0);
        }
    }

    /// Four sessions queue at a backend cap of 1; the share is then handed on from one to the
    /// next. A newcomer that arrives the moment the share is free queues behind them.
    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_the_order_they_came() {
        let (pool, cfg) = capped(Some(1), None, 10_000);
        let counters = counters(&pool);
        let first = held(&pool, A1);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 1..=4 {
            let (p, c, k, o) = (
                Arc::clone(&pool),
                cfg.clone(),
                Arc::clone(&counters),
                Arc::clone(&order),
            );
            waiters.push(tokio::spawn(async move {
                let got = p.acquire(&key("pg1", A1), &c, &k).await;
                o.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(got);
            }));
            // Each is queued before the next comes.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 4);
        drop(first);
        let newcomer_key = key("pg1", A1);
        let newcomer = pool.acquire(&newcomer_key, &cfg, &counters);
        tokio::pin!(newcomer);
        let took_at_once = tokio::select! {
            biased;
            _ = &mut newcomer => true,
            () = std::future::ready(()) => false,
        };
        assert!(
            !took_at_once,
            "the newcomer does not take the share ahead of the queue"
        );
        let newcomer_got = newcomer.await;
        order.lock().unwrap().push(5);
        assert!(newcomer_got.is_ok());
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);
    }

    /// Two shares freed at once while two sessions wait: the first, served, leaves the second
    /// woken (the second share wakes only the first, which was first in the queue when freed).
    #[tokio::test(start_paused = true)]
    async fn shares_freed_together_serve_every_waiter() {
        let (pool, cfg) = capped(Some(2), None, 10_000);
        let counters = counters(&pool);
        let held_both = [held(&pool, A1), held(&pool, A1)];
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (p, c, k) = (Arc::clone(&pool), cfg.clone(), Arc::clone(&counters));
            waiters.push(tokio::spawn(async move {
                let got = p.acquire(&key("pg1", A1), &c, &k).await;
                // Held past the end of the test's wait: neither frees a share for the other.
                tokio::time::sleep(Duration::from_secs(60)).await;
                got.is_ok()
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 2);
        drop(held_both);
        for w in waiters {
            assert!(w.await.unwrap(), "a waiter timed out with a share free");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_leaves_while_waiting_is_no_longer_counted() {
        let (pool, cfg) = capped(Some(5), Some(1), 10_000);
        let counters = counters(&pool);
        let _a = held(&pool, A1);
        let (p, c, k) = (Arc::clone(&pool), cfg.clone(), Arc::clone(&counters));
        let waiter = tokio::spawn(async move { p.acquire(&key("pg1", A1), &c, &k).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let on_pair = &counters.clients_waiting_user_database;
        assert_eq!(on_pair.load(Ordering::Relaxed), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(counters.clients_waiting.load(Ordering::Relaxed), 0);
        assert_eq!(on_pair.load(Ordering::Relaxed), 0);
    }
}
