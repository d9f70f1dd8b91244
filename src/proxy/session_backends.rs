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
            password: self.client.user.backend_password(),
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
        let slot = match home {
            Target::Primary => self.primary.as_ref(),
            Target::Replica => self.replica.as_ref(),
        }
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
        let view = self.view();
        match target {
            Target::Primary => {
                if self.primary.is_some() {
                    return Ok(());
                }
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
                self.primary = Some(slot);
                self.replay_sets(Target::Primary).await
            }
            Target::Replica => {
                if let Some(r) = &self.replica {
                    // Leave a replica that dropped out of the read set at the next chance.
                    let still_good = view.read_set.contains(&r.backend)
                        || view.primary.as_deref() == Some(&r.backend);
                    // A replica listener's session lives on its one connection: swapping it would
                    // lose the session's state and change its PID.
                    if still_good
                        || !r.idle()
                        || r.in_transaction()
                        || self.listener.role != ListenerRole::Auto
                    {
                        return Ok(());
                    }
                    self.replica = None;
                }
                let mut candidates: Vec<(String, String, u16, u32)> = view
                    .backends
                    .iter()
                    .filter(|b| b.in_read_set)
                    .map(|b| (b.name.clone(), b.host.clone(), b.port, b.weight))
                    .collect();
                while !candidates.is_empty() {
                    let i = pick_weighted(&candidates);
                    let (name, host, port, _) = candidates.swap_remove(i);
                    let counters = self.ctx.stats.backend(&name);
                    match Slot::open(
                        Target::Replica,
                        &name,
                        &self.login(&host, port),
                        counters,
                        Arc::clone(&self.cancel_targets),
                        (&self.ctx.pool, &self.config.pool),
                    )
                    .await
                    {
                        Ok(slot) => {
                            self.replica = Some(slot);
                            return self.replay_sets(Target::Replica).await;
                        }
                        Err(e) => {
                            tracing::warn!(backend = %name, error = %e, "cannot open replica connection")
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
                // Reads fall back to the primary, read-only so a replica listener never writes.
                let p = view.primary_backend().ok_or_else(|| {
                    ProxyError::BackendUnavailable("no replica and no primary is available".into())
                })?;
                let mut params = self.client.params.clone();
                params.push(("default_transaction_read_only".into(), "on".into()));
                let mut login = self.login(&p.host, p.port);
                login.params = &params;
                let slot = Slot::open(
                    Target::Replica,
                    &p.name,
                    &login,
                    self.ctx.stats.backend(&p.name),
                    Arc::clone(&self.cancel_targets),
                    (&self.ctx.pool, &self.config.pool),
                )
                .await?;
                let mut slot = slot;
                slot.read_only_fallback = self.listener.role == ListenerRole::Replica;
                self.replica = Some(slot);
                self.replay_sets(Target::Replica).await
            }
        }
    }

    pub(super) async fn replay_sets(&mut self, target: Target) -> Result<(), ProxyError> {
        let sets = self.session_sets.clone();
        if let Some(slot) = self.slot_mut(target) {
            for sql in &sets {
                slot.send_silent_query(sql).await?;
            }
        }
        Ok(())
    }

    pub(super) fn slot_mut(&mut self, target: Target) -> Option<&mut Slot> {
        match target {
            Target::Primary => self.primary.as_mut(),
            Target::Replica => self.replica.as_mut(),
        }
    }
}

/// Index of a weighted random choice (weights are > 0 for members of the read set).
fn pick_weighted(candidates: &[(String, String, u16, u32)]) -> usize {
    let total: u64 = candidates.iter().map(|c| c.3.max(1) as u64).sum();
    let mut r = rand::random::<u64>() % total.max(1);
    for (i, c) in candidates.iter().enumerate() {
        let w = c.3.max(1) as u64;
        if r < w {
            return i;
        }
        r -= w;
    }
    0
}
