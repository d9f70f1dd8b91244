//! What a session needs to take a connection to one backend: the pool's key, the backend's
//! counters and the caps that apply. In transaction mode a session takes a connection for
//! every transaction; these cannot change while it lives (its parameters, its configuration,
//! the process-wide counters and caps), so it looks them up once per backend, not per
//! transaction (three mutex-guarded map lookups and a key with two allocated names each time).

use std::sync::Arc;

use super::pool::{PoolKey, StartupParams};
use super::server_budget::KeyBudgets;
use super::session::Session;
use super::stats::BackendCounters;

pub struct Route {
    /// The pool's own copy (`Pool::intern`), whose parameters may be another session's.
    pub key: Arc<PoolKey>,
    /// The parameters it was asked for, to find it again by pointer.
    params: StartupParams,
    pub counters: Arc<BackendCounters>,
    pub budgets: KeyBudgets,
}

/// The routes a session has used. Bounded: a session that keeps falling back to read-only
/// primary connections makes new parameters each time.
#[derive(Default)]
pub struct Routes(Vec<Arc<Route>>);

const MAX_ROUTES: usize = 8;

impl Session {
    /// The route to `backend` for connections with the client's own startup parameters.
    pub(super) fn client_route(&mut self, backend: &str, host: &str, port: u16) -> Arc<Route> {
        // Cloned (a reference count) because `route` needs the session mutably.
        let params = Arc::clone(&self.client.params);
        self.route(backend, (host, port), &params)
    }

    /// The route to `backend` (at `host`:`port`) for connections with `params`.
    pub(super) fn route(
        &mut self,
        backend: &str,
        (host, port): (&str, u16),
        params: &StartupParams,
    ) -> Arc<Route> {
        let sslmode = self.config.sslmode_of(host, port);
        let known = self.routes.0.iter().find(|r| {
            let k = &r.key;
            k.backend == backend
                && k.host == host
                && k.port == port
                && k.sslmode == sslmode
                && Arc::ptr_eq(&r.params, params)
        });
        if let Some(r) = known {
            return Arc::clone(r);
        }
        let pool = &self.ctx.pool;
        let key = pool.intern(PoolKey::new(
            backend,
            host,
            port,
            Arc::clone(params),
            sslmode,
        ));
        let route = Arc::new(Route {
            budgets: pool.budgets_of(&key),
            counters: self.ctx.stats.backend(backend),
            key,
            params: Arc::clone(params),
        });
        if self.routes.0.len() >= MAX_ROUTES {
            self.routes.0.clear();
        }
        self.routes.0.push(Arc::clone(&route));
        route
    }
}
