//! How a session gets its backend connections: what it tells the client at login (from the
//! home connection whose PID the client sees, or from an earlier login's greeting), the primary for writes, a replica chosen by weight from the read set for reads (with
//! the session's SET statements replayed on it), and the fallbacks when one is missing.

use std::sync::Arc;

use super::backend::LoginParams;
use super::cancel::Registration;
use super::greeting::says_standby;
use super::message::{self, Message};
use super::pool::{PoolKey, Reset};
use super::router::Target;
use super::session::Session;
use super::session_pid;
use super::slot::Slot;
use super::weighted::{self, Candidate};
use super::ProxyError;
use crate::config::ListenerRole;
use crate::health::{BackendView, ClusterView};

impl Session {
    pub(super) fn view(&self) -> Arc<ClusterView> {
        self.ctx.cluster.borrow().clone()
    }

    pub(super) fn login<'a>(
        &'a self,
        backend: &'a str,
        host: &'a str,
        port: u16,
    ) -> LoginParams<'a> {
        LoginParams {
            backend,
            host,
            port,
            user: &self.client.user.name,
            secret: &self.client.backend_secret,
            params: &self.client.params,
            connect_timeout: self.config.limits.connect_timeout,
            max_message: self.config.limits.max_message_bytes,
            tls: self.ctx.backend_tls.current(),
            sslmode: self.config.sslmode_of(host, port),
        }
    }

    /// Greets the client: ParameterStatus, BackendKeyData, ReadyForQuery.
    ///
    /// A session that connects at login opens its home connection now and tells the client
    /// that connection's PID. Any other tells the PID it was issued and the parameters an
    /// earlier login with the same key was given; only when there was none does it open a
    /// connection to learn them, and gives it straight back to the pool.
    pub(super) async fn open_home(&mut self) -> Result<Registration, ProxyError> {
        let home = self.home_at_login();
        let (pid, parameter_status) = match self.issued_pid {
            None => {
                let target = self.open_home_slot(home).await?;
                let slot = self
                    .slots
                    .get(target)
                    .ok_or_else(|| ProxyError::BackendUnavailable("no backend".into()))?;
                (
                    slot.conn.startup.pid,
                    slot.conn.startup.parameter_status.as_slice().into(),
                )
            }
            Some(pid) => {
                let (target, greeting) = match self.remembered_greeting(home) {
                    Some(g) => g,
                    None => self.learn_greeting(home).await?,
                };
                self.greeting = Some((target, Arc::clone(&greeting)));
                (pid, greeting)
            }
        };
        message::write_auth_request(&mut self.client_out, 0, &[]);
        for m in parameter_status.iter() {
            self.client_out.extend_from_slice(&m.raw);
        }
        let (secret, registration) = self
            .ctx
            .cancel
            .register(pid, Arc::clone(&self.cancel_targets));
        message::write_backend_key_data(&mut self.client_out, pid, secret);
        message::write_ready_for_query(&mut self.client_out, b'I');
        Ok(registration)
    }

    /// The kind of connection whose parameters the client is told at login.
    fn home_at_login(&self) -> Target {
        match self.listener.role {
            ListenerRole::Replica => Target::Replica,
            ListenerRole::Primary => Target::Primary,
            // With no primary (failover in progress) an auto session can still read.
            ListenerRole::Auto if self.view().primary.is_none() => Target::Replica,
            ListenerRole::Auto => Target::Primary,
        }
    }

    /// Opens the home connection (or, on an auto listener whose primary just went away, a
    /// replica one); returns which.
    async fn open_home_slot(&mut self, home: Target) -> Result<Target, ProxyError> {
        match self.ensure_slot(home).await {
            Ok(()) => Ok(home),
            // The primary just went away and health has not noticed yet: reads still work.
            Err(ProxyError::BackendUnavailable(why))
                if home == Target::Primary && self.listener.role == ListenerRole::Auto =>
            {
                tracing::info!(%why, "primary unreachable at session start; starting read-only");
                self.ensure_slot(Target::Replica).await?;
                Ok(Target::Replica)
            }
            Err(e) => Err(e),
        }
    }

    /// What an earlier login with this client's key, to a backend of the home kind, was told.
    fn remembered_greeting(&self, home: Target) -> Option<(Target, Arc<[Message]>)> {
        let view = self.view();
        let backends: Vec<&BackendView> = match home {
            Target::Primary => view.primary_backend().into_iter().collect(),
            Target::Replica => view.backends.iter().filter(|b| b.in_read_set).collect(),
        };
        let is_primary = |name: &str| view.primary.as_deref() == Some(name);
        backends.into_iter().find_map(|b| {
            let key = PoolKey::new(
                &b.name,
                &b.host,
                b.port,
                Arc::clone(&self.client.params),
                self.config.sslmode_of(&b.host, b.port),
            );
            let g = self.ctx.pool.greetings.get(&key)?;
            // Learned before the backend changed role (a failover): it would tell the client
            // the wrong `in_hot_standby`, on which libpq's target_session_attrs decides.
            if says_standby(&g).is_some_and(|standby| standby == is_primary(&b.name)) {
                return None;
            }
            Some((home, g))
        })
    }

    /// Opens a connection only to learn what to tell the client, and pools it at once: the
    /// session takes one again (likely this one) when it has something to run.
    async fn learn_greeting(
        &mut self,
        home: Target,
    ) -> Result<(Target, Arc<[Message]>), ProxyError> {
        let target = self.open_home_slot(home).await?;
        let slot = self
            .slots
            .take(target)
            .ok_or_else(|| ProxyError::BackendUnavailable("no backend".into()))?;
        let greeting: Arc<[Message]> = slot.conn.startup.parameter_status.as_slice().into();
        self.ctx
            .pool
            .greetings
            .remember(&slot.pool_key, &slot.conn.startup.parameter_status);
        let (key, conn) = slot.into_server_conn();
        self.ctx
            .pool
            .checkin(key, conn, &self.config.pool, Reset::Nothing);
        Ok((target, greeting))
    }

    /// The first connection of the kind the greeting came from: the parameters it reports
    /// differently from what the client was told reach the client as ParameterStatus, as
    /// PostgreSQL reports a changed parameter.
    pub(super) fn tell_parameter_changes(&mut self, target: Target) {
        let Some((_, told)) = self.greeting.take_if(|(kind, _)| *kind == target) else {
            return;
        };
        let Some(slot) = self.slots.get(target) else {
            return;
        };
        for m in &slot.conn.startup.parameter_status {
            if !told.iter().any(|t| t.raw == m.raw) {
                self.client_out.extend_from_slice(&m.raw);
            }
        }
    }

    /// A notification as the client expects it: from a server process of a session whose
    /// client was told an issued PID, it carries that PID (`session_pid.rs`).
    pub(super) fn as_told(&self, target: Target, m: Message) -> Message {
        let (Some(pid), Some(slot)) = (session_pid::notification_pid(&m), self.slots.get(target))
        else {
            return m;
        };
        let (host, port) = (&slot.pool_key.host, slot.pool_key.port);
        let own = self.slots.iter().any(|(_, s)| {
            s.conn.startup.pid == pid && &s.pool_key.host == host && s.pool_key.port == port
        });
        let told = match (own, self.issued_pid) {
            (true, Some(issued)) => Some(issued),
            _ => self.ctx.pid_aliases.told(host, port, pid),
        };
        match told {
            Some(t) => session_pid::with_notification_pid(&m, t),
            None => m,
        }
    }

    pub(super) fn report_connect_error(&mut self, e: &ProxyError) {
        match e {
            ProxyError::BackendError(fields, raw) => {
                self.ctx.stats.count_error(&fields.code);
                self.client_out.extend_from_slice(&raw.raw);
            }
            ProxyError::ServerConnectionsFull(full) => {
                self.ctx.stats.count_error("53300");
                message::write_error(
                    &mut self.client_out,
                    "FATAL",
                    "53300",
                    &format!("pgcast: {full}"),
                );
            }
            ProxyError::BackendLogin(why) => {
                // A configuration problem (the backend's verifier or password kind differs
                // from what pgcast holds), not the client's fault: the operator must hear of it.
                crate::log_limited!(warn, user = %self.client.user.name, "{why}");
                self.ctx.stats.count_error("28000");
                message::write_error(
                    &mut self.client_out,
                    "FATAL",
                    "28000",
                    &format!("pgcast: {e}"),
                );
            }
            other => {
                self.ctx.stats.count_error("08006");
                message::write_error(
                    &mut self.client_out,
                    "FATAL",
                    "08006",
                    &format!("pgcast: {other}"),
                );
            }
        }
    }

    /// Makes sure a connection for `target` exists, opening one if needed.
    /// Opening one is awaited boxed: the handlers that get here run inline for every message
    /// (a boxed handler costs an allocation and a copy of its future per message), so their
    /// futures must not hold room for a pool checkout and a backend login. A pooled primary
    /// connection that can be had at once is taken without that future (in transaction mode,
    /// every transaction gets here).
    pub(super) async fn ensure_slot(&mut self, target: Target) -> Result<(), ProxyError> {
        match target {
            Target::Primary if self.slots.is_open(Target::Primary) => return Ok(()),
            Target::Primary if self.take_pooled_primary() => {}
            Target::Primary => Box::pin(self.open_primary()).await?,
            Target::Replica if self.keeps_replica() => {}
            Target::Replica => Box::pin(self.open_replica()).await?,
        }
        self.tell_parameter_changes(target);
        Ok(())
    }

    /// Takes a pooled primary connection if `open_primary` would get one without waiting and
    /// would have no SETs to replay on it. False: nothing was taken.
    fn take_pooled_primary(&mut self) -> bool {
        if !self.session_sets.is_empty() {
            return false;
        }
        let view = self.view();
        let Some(p) = view.primary_backend() else {
            return false;
        };
        let route = self.client_route(&p.name, &p.host, p.port);
        let pooled = self
            .ctx
            .pool
            .take_pooled(&route.key, &route.budgets, &self.config.pool);
        let Some(conn) = pooled else {
            return false;
        };
        let cancel_targets = Arc::clone(&self.cancel_targets);
        let slot = Slot::with_conn(Target::Primary, &route, conn, cancel_targets);
        self.slots.set(Target::Primary, slot);
        true
    }

    async fn open_primary(&mut self) -> Result<(), ProxyError> {
        let view = self.view();
        let Some(p) = view.primary_backend() else {
            let why = if view.split_brain.is_empty() {
                "no primary is available".to_string()
            } else {
                format!(
                    "split brain: {} all claim to be primary",
                    view.split_brain.join(", ")
                )
            };
            return Err(ProxyError::BackendUnavailable(why));
        };
        let route = self.client_route(&p.name, &p.host, p.port);
        let slot = Slot::open(
            Target::Primary,
            &route,
            &self.login(&p.name, &p.host, p.port),
            Arc::clone(&self.cancel_targets),
            (&self.ctx.pool, &self.config.pool),
        )
        .await?;
        self.slots.set(Target::Primary, slot);
        self.replay_sets(Target::Primary).await
    }

    /// Whether the replica connection stays in use; one to leave is closed (taken) here.
    fn keeps_replica(&mut self) -> bool {
        let view = self.view();
        let Some(r) = self.slots.get(Target::Replica) else {
            return false;
        };
        // Leave a replica that dropped out of the read set at the next chance.
        let still_good = view.read_set.iter().any(|b| b == r.backend())
            || view.primary.as_deref() == Some(r.backend());
        // A replica listener's session lives on its one connection: swapping it would
        // lose the session's state and change its PID.
        if still_good || !r.idle() || r.in_transaction() || self.listener.role != ListenerRole::Auto
        {
            return true;
        }
        self.slots.take(Target::Replica);
        false
    }

    /// A connection to a replica of the read set (none is open: see `keeps_replica`).
    async fn open_replica(&mut self) -> Result<(), ProxyError> {
        let view = self.view();
        let mut candidates: Vec<Candidate> = view
            .backends
            .iter()
            .filter(|b| b.in_read_set)
            .map(|b| Candidate {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
                weight: b.weight,
            })
            .collect();
        while let Some(i) = weighted::pick(&candidates, rand::random::<u64>()) {
            let c = candidates.swap_remove(i);
            let route = self.client_route(&c.name, &c.host, c.port);
            match Slot::open(
                Target::Replica,
                &route,
                &self.login(&c.name, &c.host, c.port),
                Arc::clone(&self.cancel_targets),
                (&self.ctx.pool, &self.config.pool),
            )
            .await
            {
                Ok(slot) => {
                    self.slots.set(Target::Replica, slot);
                    return self.replay_sets(Target::Replica).await;
                }
                Err(e) => {
                    tracing::warn!(backend = %c.name, error = %e, "cannot open replica connection")
                }
            }
        }
        // An auto session reads from its own primary connection instead (see dispatch).
        if !self.config.routing.fallback_reads_to_primary
            || self.listener.role == ListenerRole::Auto
        {
            return Err(ProxyError::BackendUnavailable(
                "no replica is available".into(),
            ));
        }
        self.open_read_only_primary(&view).await
    }

    /// Reads fall back to the primary, read-only so a replica listener never writes.
    async fn open_read_only_primary(&mut self, view: &ClusterView) -> Result<(), ProxyError> {
        let p = view.primary_backend().ok_or_else(|| {
            ProxyError::BackendUnavailable("no replica and no primary is available".into())
        })?;
        let mut params = self.client.params.to_vec();
        params.push(("default_transaction_read_only".into(), "on".into()));
        let params: super::pool::StartupParams = params.into();
        let route = self.route(&p.name, (&p.host, p.port), &params);
        let mut login = self.login(&p.name, &p.host, p.port);
        login.params = &params;
        let mut slot = Slot::open(
            Target::Replica,
            &route,
            &login,
            Arc::clone(&self.cancel_targets),
            (&self.ctx.pool, &self.config.pool),
        )
        .await?;
        slot.read_only_fallback = self.listener.role == ListenerRole::Replica;
        self.slots.set(Target::Replica, slot);
        self.replay_sets(Target::Replica).await
    }

    pub(super) async fn replay_sets(&mut self, target: Target) -> Result<(), ProxyError> {
        let sets = self.session_sets.clone();
        if let Some(slot) = self.slots.get_mut(target) {
            for sql in &sets {
                slot.send_silent_query(sql).await?;
            }
        }
        Ok(())
    }
}
