//! How a session gets its backend connections: the home connection whose PID the client
//! sees, the primary for writes, a replica chosen by weight from the read set for reads (with
//! the session's SET statements replayed on it), and the fallbacks when one is missing.

use std::sync::Arc;

use super::backend::LoginParams;
use super::cancel::Registration;
use super::message;
use super::router::Target;
use super::session::Session;
use super::slot::Slot;
use super::weighted::{self, Candidate};
use super::ProxyError;
use crate::config::ListenerRole;
use crate::health::ClusterView;

impl Session {
    pub(super) fn view(&self) -> Arc<ClusterView> {
        self.ctx.cluster.borrow().clone()
    }

    pub(super) fn login<'a>(&'a self, host: &'a str, port: u16) -> LoginParams<'a> {
        LoginParams {
            host,
            port,
            user: &self.client.user.name,
            secret: &self.client.backend_secret,
            params: &self.client.params,
            connect_timeout: self.config.limits.connect_timeout,
            max_message: self.config.limits.max_message_bytes,
        }
    }

    /// Opens the connection whose process ID the client sees, and greets the client.
    pub(super) async fn open_home(&mut self) -> Result<Registration, ProxyError> {
        let mut home = match self.listener.role {
            ListenerRole::Replica => Target::Replica,
            ListenerRole::Primary => Target::Primary,
            // With no primary (failover in progress) an auto session can still read.
            ListenerRole::Auto if self.view().primary.is_none() => Target::Replica,
            ListenerRole::Auto => Target::Primary,
        };
        match self.ensure_slot(home).await {
            Ok(()) => {}
            // The primary just went away and health has not noticed yet: reads still work.
            Err(ProxyError::BackendUnavailable(why))
                if home == Target::Primary && self.listener.role == ListenerRole::Auto =>
            {
                tracing::info!(%why, "primary unreachable at session start; starting read-only");
                home = Target::Replica;
                self.ensure_slot(home).await?;
            }
            Err(e) => return Err(e),
        }
        let slot = self
            .slots
            .get(home)
            .ok_or_else(|| ProxyError::BackendUnavailable("no backend".into()))?;
        let pid = slot.startup.pid;
        message::write_auth_request(&mut self.client_out, 0, &[]);
        for m in &slot.startup.parameter_status {
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
    pub(super) async fn ensure_slot(&mut self, target: Target) -> Result<(), ProxyError> {
        match target {
            Target::Primary if self.slots.is_open(Target::Primary) => Ok(()),
            Target::Primary => self.open_primary().await,
            Target::Replica => self.ensure_replica().await,
        }
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
        let counters = self.ctx.stats.backend(&p.name);
        let slot = Slot::open(
            Target::Primary,
            &p.name,
            &self.login(&p.host, p.port),
            counters,
            Arc::clone(&self.cancel_targets),
            (&self.ctx.pool, &self.config.pool),
        )
        .await?;
        self.slots.set(Target::Primary, slot);
        self.replay_sets(Target::Primary).await
    }

    async fn ensure_replica(&mut self) -> Result<(), ProxyError> {
        let view = self.view();
        if let Some(r) = self.slots.get(Target::Replica) {
            // Leave a replica that dropped out of the read set at the next chance.
            let still_good =
                view.read_set.contains(&r.backend) || view.primary.as_deref() == Some(&r.backend);
            // A replica listener's session lives on its one connection: swapping it would
            // lose the session's state and change its PID.
            if still_good
                || !r.idle()
                || r.in_transaction()
                || self.listener.role != ListenerRole::Auto
            {
                return Ok(());
            }
            self.slots.take(Target::Replica);
        }
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
            let counters = self.ctx.stats.backend(&c.name);
            match Slot::open(
                Target::Replica,
                &c.name,
                &self.login(&c.host, c.port),
                counters,
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
        let mut params = self.client.params.clone();
        params.push(("default_transaction_read_only".into(), "on".into()));
        let mut login = self.login(&p.host, p.port);
        login.params = &params;
        let mut slot = Slot::open(
            Target::Replica,
            &p.name,
            &login,
            self.ctx.stats.backend(&p.name),
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
