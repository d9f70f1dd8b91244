//! Drains: the operator's (`pgcast drain` / `undrain`: withdraw and stay up, announce
//! again) and SIGTERM's (withdraw, then close the listeners and wait for the sessions).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::supervise::CriticalTasks;
use crate::admin::CommandReply;
use crate::anycast::announce::Drain;
use crate::anycast::Speakers;
use crate::config::Config;
use crate::proxy::{self, ProxyContext};

/// How long SIGTERM waits for client sessions to finish before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a drain works on: the listeners to pause, the sessions to wait for, the speakers.
/// `[drain]` timings are read from the running configuration at each drain (a reload applies
/// them); what they act on (listeners, prefixes) changes only with a restart.
pub(super) struct Anycast<'a> {
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) listeners: Vec<(String, Arc<TcpListener>)>,
    /// Tells the self-check that the listeners drop SYNs on purpose.
    pub(super) paused: watch::Sender<bool>,
    pub(super) ctx: &'a ProxyContext,
    pub(super) speakers: &'a Speakers,
}

impl Anycast<'_> {
    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn open_sessions(&self) -> usize {
        let max = self.config().limits.max_client_connections;
        max - self.ctx.client_slots.available_permits()
    }

    /// Logged-in sessions and connections still logging in. A login in progress when the
    /// route moves is reset by the balancer its next packets reach (the lab's `pgbench -C`
    /// saw "server closed the connection unexpectedly"), so the quiesce before a withdrawal
    /// waits for those too.
    fn connections_in_flight(&self) -> usize {
        self.open_sessions() + self.ctx.prelogin.in_flight()
    }

    /// SIGTERM: withdraw (unless an operator's drain already did), give the routers
    /// `drain.withdraw_grace`, stop accepting, close the listening sockets, and wait (at most
    /// [`DRAIN_TIMEOUT`]) for the sessions in flight.
    pub(super) async fn shut_down(
        mut self,
        stop_tx: &watch::Sender<bool>,
        listener_tasks: CriticalTasks,
    ) {
        let config = self.config();
        if !config.prefixes.is_empty() {
            let converged = self.speakers.drain_state() == Drain::Operator;
            self.withdraw(Drain::Shutdown).await;
            // After an operator's drain the routers moved clients away long ago.
            if !converged {
                tokio::time::sleep(config.drain.withdraw_grace).await;
            }
        }
        tracing::info!("shutting down: no new clients");
        let _ = stop_tx.send(true);
        listener_tasks.join_all().await;
        // Closes the listening sockets.
        self.listeners.clear();
        wait_for_sessions(&|| self.open_sessions(), DRAIN_TIMEOUT, 50).await;
    }

    /// Withdraws every prefix (`cause`: SIGTERM or an operator's drain). The listeners are
    /// paused first and the sessions in flight get `drain.quiesce` to end, because the
    /// router's ECMP is stateless: once the prefix is withdrawn, packets of a session still
    /// open here are hashed to another balancer, which resets it. A paused listener drops
    /// SYNs instead of refusing them, so those clients retry, and their retry reaches another
    /// balancer once the withdrawal has converged. Returns whether every speaker confirmed
    /// the withdrawal. The listeners stay paused.
    async fn withdraw(&self, cause: Drain) -> bool {
        self.paused.send_replace(true);
        for (name, socket) in &self.listeners {
            if let Err(e) = proxy::pause_accepting(socket) {
                tracing::warn!(listener = %name, error = %e, "cannot pause the listener");
            }
        }
        tracing::info!(
            connections = self.connections_in_flight(),
            ?cause,
            "draining: new connections paused, waiting for client connections in flight"
        );
        // Polled every 5 ms: the withdrawal waits for this, and short sessions end in ms.
        let config = self.config();
        let left =
            wait_for_sessions(&|| self.connections_in_flight(), config.drain.quiesce, 5).await;
        if left > 0 {
            tracing::warn!(
                connections = left,
                "withdrawing with client connections still open: their clients will see resets"
            );
        }
        tracing::info!(?cause, "draining: withdrawing anycast prefixes");
        let limit = super::withdrawal_limit(&config);
        match cause {
            Drain::Shutdown => self.speakers.withdraw_all(limit).await,
            Drain::Operator | Drain::Serving => self.speakers.drain(cause, limit).await,
        }
    }

    /// `pgcast drain`: withdraw, wait `drain.withdraw_grace` for the routers, then accept new
    /// connections again (only clients that use this balancer's own address still reach it)
    /// and stay up until `pgcast undrain`.
    pub(super) async fn operator_drain(&self) -> CommandReply {
        let config = self.config();
        if config.prefixes.is_empty() {
            return reply(
                false,
                "nothing to drain: no [[prefix]] is configured".into(),
            );
        }
        if self.speakers.drain_state() == Drain::Operator {
            return reply(true, "already drained".into());
        }
        let confirmed = self.withdraw(Drain::Operator).await;
        // Paused until the routers have moved the address elsewhere: a SYN accepted before
        // that could start a session whose next packets the new route takes to another
        // balancer (seen in the lab: resumed right after the withdrawal, such sessions were
        // reset).
        tokio::time::sleep(config.drain.withdraw_grace).await;
        for (name, socket) in &self.listeners {
            if let Err(e) = proxy::resume_accepting(socket) {
                tracing::warn!(listener = %name, error = %e, "cannot resume the listener");
            }
        }
        self.paused.send_replace(false);
        let prefixes = self.prefix_list();
        tracing::info!(%prefixes, confirmed, "drained by the operator");
        if confirmed {
            let open = self.open_sessions();
            reply(
                true,
                format!("drained: {prefixes} withdrawn; {open} client sessions open here"),
            )
        } else {
            reply(
                false,
                format!(
                    "drained, but not every speaker confirmed withdrawing {prefixes}: see pgcast status"
                ),
            )
        }
    }

    /// `pgcast undrain`: announce again as health allows.
    pub(super) async fn operator_undrain(&self) -> CommandReply {
        if self.speakers.drain_state() != Drain::Operator {
            return reply(true, "not drained".into());
        }
        let verdicts = self.speakers.undrain().await;
        let summary: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let what = if v.announce { "announced" } else { "withdrawn" };
                format!("{}/{} {what} ({})", v.prefix, v.prefix_len, v.reason)
            })
            .collect();
        tracing::info!(prefixes = %summary.join("; "), "undrained by the operator");
        reply(true, format!("undrained: {}", summary.join("; ")))
    }

    fn prefix_list(&self) -> String {
        let list: Vec<String> = self
            .config()
            .prefixes
            .iter()
            .map(|p| format!("{}/{}", p.address, p.prefix_len))
            .collect();
        list.join(", ")
    }
}

fn reply(ok: bool, message: String) -> CommandReply {
    CommandReply { ok, message }
}

/// Waits until `open_sessions()` is 0 on two polls in a row or `limit` has passed, polling
/// every `poll_ms`; returns how many sessions are still open. Two polls, because a handshake
/// that completed just before the listener's pause is accepted (and counted) a moment later.
async fn wait_for_sessions(
    open_sessions: &impl Fn() -> usize,
    limit: Duration,
    poll_ms: u64,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut idle_polls = 0;
    while idle_polls < 2 && tokio::time::Instant::now() < deadline {
        idle_polls = if open_sessions() == 0 {
            idle_polls + 1
        } else {
            0
        };
        if idle_polls < 2 {
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        }
    }
    open_sessions()
}
