//! Anycast announcement of the proxy's address. `announce` decides, per prefix, whether it is
//! announced and why; `ospf` is the embedded OSPFv2 speaker (RFC 2328): a pure codec, pure
//! state machines and one actor that owns the sockets. This module couples them: it follows the
//! health verdicts and the drain flag and tells every speaker what to announce.

pub mod announce;
pub mod bfd;
mod bfd_owners;
pub mod bgp;
pub mod ospf;
pub mod render;
pub mod timer_lag;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, PrefixConfig};
use crate::health::ClusterView;
use announce::{Drain, PrefixVerdict};
use bgp::io::{BgpHandle, BgpIoError, BgpStatusSource};
use bgp::status::BgpStatus;
use ospf::instance::Announcement;
use ospf::io::{OspfHandle, OspfIoError};
use ospf::status::OspfStatus;

#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    #[error("ospf: {0}")]
    Ospf(#[from] OspfIoError),
    #[error("bgp: {0}")]
    Bgp(#[from] BgpIoError),
    #[error("bfd: {0}")]
    Bfd(#[from] bfd::BfdIoError),
}

/// The routing part of `pgcast status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AnycastStatus {
    /// Every configured prefix, announced or not, and why.
    pub prefixes: Vec<PrefixVerdict>,
    /// The OSPF speaker, when configured.
    pub ospf: Option<OspfStatus>,
    /// The BGP speaker, when configured.
    #[serde(default)]
    pub bgp: Option<BgpStatus>,
    /// BFD sessions, when any neighbour or interface has BFD on.
    #[serde(default)]
    pub bfd: Option<bfd::BfdStatus>,
    /// How the routing thread is scheduled and how late its timers fire.
    #[serde(default)]
    pub timer_lag: Option<timer_lag::TimerLag>,
}

/// The running speakers and the task that couples them to health.
pub struct Speakers {
    verdicts: watch::Receiver<Vec<PrefixVerdict>>,
    drain: watch::Sender<Drain>,
    ospf: Option<OspfHandle>,
    bgp: Option<Arc<BgpHandle>>,
    bfd: Option<bfd::BfdHandle>,
    timer_lag: watch::Receiver<timer_lag::TimerLag>,
    /// The coupling task, until the daemon takes it to supervise it.
    coupling: Option<JoinHandle<()>>,
}

/// The reason every prefix shows once the health checker is gone.
pub const HEALTH_GONE_REASON: &str =
    "health checker stopped: withdrawn (never announced on stale health)";

/// The reason every prefix shows while the health checker's heartbeat is late.
pub const HEALTH_STALE_REASON: &str =
    "health checker stalled (no heartbeat): withdrawn until it runs again";

/// How long the health supervisor's heartbeat may be missing before its verdicts count as
/// stale: six of its intervals, at least 3 s (a loaded host can delay a thread by a fraction
/// of that; a stall longer than it is a fault).
pub fn stale_after(health_interval: Duration) -> Duration {
    (health_interval * 6).max(Duration::from_secs(3))
}

/// What the coupling follows of health.
struct HealthInput {
    cluster: watch::Receiver<Arc<ClusterView>>,
    heartbeat: watch::Receiver<Instant>,
    stale_after: Duration,
}

impl Speakers {
    /// Starts the configured speakers (none: only the verdicts are computed, for status).
    pub fn start(
        config: &Config,
        cluster: watch::Receiver<Arc<ClusterView>>,
        heartbeat: watch::Receiver<Instant>,
    ) -> Result<Speakers, AnycastError> {
        let ospf = match &config.ospf {
            Some(o) => Some(ospf::io::spawn(o)?),
            None => None,
        };
        let bgp = match &config.bgp {
            Some(b) => Some(Arc::new(bgp::io::spawn(b)?)),
            None => None,
        };
        let bfd = bfd_owners::start(config, ospf.as_ref().map(|o| o.status_receiver()))?;
        let (drain_tx, drain_rx) = watch::channel(Drain::Serving);
        let initial = announce::evaluate(&config.prefixes, &cluster.borrow(), Drain::Serving);
        let (verdict_tx, verdict_rx) = watch::channel(initial);
        let health = HealthInput {
            cluster,
            heartbeat,
            stale_after: stale_after(config.health.interval),
        };
        let coupling = tokio::spawn(couple(
            config.prefixes.clone(),
            health,
            drain_rx,
            verdict_tx,
            ospf.clone(),
            bgp.clone(),
        ));
        Ok(Speakers {
            verdicts: verdict_rx,
            drain: drain_tx,
            ospf,
            bgp,
            bfd,
            timer_lag: timer_lag::spawn(),
            coupling: Some(coupling),
        })
    }

    /// The tasks whose end would leave the router with a route nobody decides any more: the
    /// coupling to health, and each speaker's actor (watched through its status channel, which
    /// closes when the actor returns or panics). Each named; any of them finishing is fatal.
    /// Call once: the coupling's handle moves to the caller.
    pub fn critical_tasks(&mut self) -> Vec<(String, JoinHandle<()>)> {
        let mut tasks = Vec::new();
        if let Some(c) = self.coupling.take() {
            tasks.push(("anycast coupling".to_string(), c));
        }
        if let Some(o) = &self.ospf {
            tasks.push(("OSPF speaker".into(), until_closed(o.status_receiver())));
        }
        for (peer, rx) in self.bgp.iter().flat_map(|b| b.neighbor_status_receivers()) {
            tasks.push((format!("BGP neighbor {peer}"), until_closed(rx)));
        }
        if let Some(b) = &self.bfd {
            tasks.push(("BFD".into(), until_closed(b.status_receiver())));
        }
        tasks
    }

    /// A reload's new `[bfd]` timers, renegotiated on every running session with a Poll
    /// Sequence (RFC 5880 §6.8.3). Without BFD sessions there is nothing to change.
    pub async fn set_bfd_timers(&self, c: &crate::config::BfdConfig) {
        if let Some(b) = &self.bfd {
            b.set_timers(bfd::BfdTimers {
                desired_min_tx: c.desired_min_tx,
                required_min_rx: c.required_min_rx,
                detect_multiplier: c.detect_multiplier,
            })
            .await;
        }
    }

    /// Fail closed: withdraws every prefix straight through the speakers (not through the
    /// coupling, which may be the part that died), waits until they sent it, then stops them:
    /// OSPF flushes its LSAs, BGP sends Cease, BFD AdminDown. Each step is bounded by `limit`
    /// (which must cover OSPF's MinLSInterval: a router ignores an instance that follows the
    /// previous one within MinLSArrival, RFC 2328 §13 (5a)), the stop also by OSPF's wait for
    /// the acknowledgements of its flush, so a speaker that is itself gone cannot hold the
    /// exit; the process exit closes what is left (a dead BGP actor's TCP
    /// session closes with it).
    pub async fn withdraw_now(&self, limit: Duration) {
        self.drain.send_replace(Drain::Shutdown);
        let withdraw = async {
            if let Some(b) = &self.bgp {
                b.announce(&[]).await;
            }
            if let Some(o) = &self.ospf {
                o.announce(Vec::new()).await;
            }
        };
        if tokio::time::timeout(limit, withdraw).await.is_err() {
            tracing::error!("a speaker did not take the withdrawal within {limit:?}");
        }
        self.wait_withdrawn(limit).await;
        // OSPF stops once its flush is acknowledged; it may need a retransmission for that.
        let stop_limit = limit.max(ospf::origin::SHUTDOWN_ACK_WAIT + Duration::from_millis(500));
        if tokio::time::timeout(stop_limit, self.shutdown())
            .await
            .is_err()
        {
            tracing::error!("the speakers did not stop within {stop_limit:?}");
        }
    }

    /// A cheap handle for the admin socket.
    pub fn status_source(&self) -> AnycastStatusSource {
        AnycastStatusSource {
            verdicts: self.verdicts.clone(),
            ospf: self.ospf.as_ref().map(|o| o.status_receiver()),
            bgp: self.bgp.as_ref().map(|b| b.status_source()),
            bfd: self.bfd.as_ref().map(|b| b.status_receiver()),
            timer_lag: self.timer_lag.clone(),
        }
    }

    /// The drain in force.
    pub fn drain_state(&self) -> Drain {
        *self.drain.borrow()
    }

    /// The current verdicts, one per configured prefix.
    pub fn verdicts(&self) -> Vec<PrefixVerdict> {
        self.verdicts.borrow().clone()
    }

    /// Withdraws every prefix (`cause` says why, in status) and waits (at most `limit`) until
    /// every speaker has sent the withdrawal; OSPF may hold it back for MinLSInterval after
    /// the previous origination. BGP first re-announces with GRACEFUL_SHUTDOWN (RFC 8326) for
    /// its grace period, so routers move traffic before the route disappears. Returns whether
    /// every speaker confirmed. Sessions stay up: `undrain` announces again.
    pub async fn drain(&self, cause: Drain, limit: Duration) -> bool {
        if let Some(b) = &self.bgp {
            let grace = b.graceful_shutdown_time();
            // Already drained (an operator's drain before SIGTERM): nothing left to de-prefer.
            let announced = self.drain_state() == Drain::Serving;
            if announced && !grace.is_zero() && b.any_established() {
                b.set_graceful_shutdown(true).await;
                tracing::info!(?grace, "BGP routes re-announced with GRACEFUL_SHUTDOWN");
                tokio::time::sleep(grace).await;
            }
        }
        self.drain.send_replace(cause);
        self.wait_withdrawn(limit).await
    }

    /// Waits (at most `limit`) until every speaker has sent the withdrawal of every prefix;
    /// whether each confirmed.
    async fn wait_withdrawn(&self, limit: Duration) -> bool {
        let ospf_done = async {
            let Some(o) = &self.ospf else { return true };
            let mut rx = o.status_receiver();
            let sent = rx.wait_for(|s| {
                s.as_ref()
                    .is_some_and(|s| s.announced.is_empty() && s.desired.is_empty())
            });
            let confirmed = tokio::time::timeout(limit, sent).await.is_ok();
            if !confirmed {
                tracing::warn!("withdrawal not confirmed by the OSPF speaker within {limit:?}");
            }
            confirmed
        };
        let bgp_done = async {
            let Some(b) = &self.bgp else { return true };
            let confirmed = b.wait_withdrawn(limit).await;
            if !confirmed {
                tracing::warn!("withdrawal not confirmed by every BGP neighbor within {limit:?}");
            }
            confirmed
        };
        let (ospf, bgp) = tokio::join!(ospf_done, bgp_done);
        ospf && bgp
    }

    /// Ends an operator's drain: BGP routes lose GRACEFUL_SHUTDOWN and every prefix is
    /// announced again as health allows. Returns the verdicts once they no longer say drained
    /// (at most 1 s later).
    pub async fn undrain(&self) -> Vec<PrefixVerdict> {
        // First, so that nothing is re-announced with the community still attached.
        if let Some(b) = &self.bgp {
            b.set_graceful_shutdown(false).await;
        }
        self.drain.send_replace(Drain::Serving);
        let mut rx = self.verdicts.clone();
        let undrained = rx.wait_for(|v| {
            v.iter()
                .all(|p| p.reason != announce::OPERATOR_DRAIN_REASON)
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), undrained).await;
        self.verdicts()
    }

    /// The drain on the way out (SIGTERM): [`Speakers::drain`], then BFD AdminDown. Returns
    /// whether every speaker confirmed the withdrawal.
    pub async fn withdraw_all(&self, limit: Duration) -> bool {
        let confirmed = self.drain(Drain::Shutdown, limit).await;
        // Withdrawn: tell the router's BFD that our going away is on purpose (AdminDown, which
        // RFC 5882 says must not take the routing session down). Not for an operator's drain:
        // FRR's ospfd takes AdminDown as neighbour down, and the adjacency must stay.
        if let Some(b) = &self.bfd {
            b.admin_down().await;
        }
        confirmed
    }

    /// Flushes what the speakers originated, sends BGP Cease, and stops them.
    pub async fn shutdown(&self) {
        if let Some(b) = &self.bfd {
            b.shutdown().await;
        }
        if let Some(b) = &self.bgp {
            b.stop("pgcast is shutting down").await;
        }
        if let Some(o) = &self.ospf {
            o.shutdown().await;
        }
    }
}

/// What the admin socket reads to report routing.
#[derive(Clone)]
pub struct AnycastStatusSource {
    verdicts: watch::Receiver<Vec<PrefixVerdict>>,
    ospf: Option<watch::Receiver<Option<OspfStatus>>>,
    bgp: Option<BgpStatusSource>,
    bfd: Option<watch::Receiver<bfd::BfdStatus>>,
    timer_lag: watch::Receiver<timer_lag::TimerLag>,
}

impl AnycastStatusSource {
    pub fn get(&self) -> AnycastStatus {
        let prefixes = self.verdicts.borrow().clone();
        AnycastStatus {
            ospf: self.ospf.as_ref().and_then(|o| o.borrow().clone()),
            bgp: self.bgp.as_ref().map(|b| b.get(&prefixes)),
            bfd: self.bfd.as_ref().map(|b| b.borrow().clone()),
            timer_lag: Some(self.timer_lag.borrow().clone()),
            prefixes,
        }
    }
}

/// Finishes when `rx`'s sender is dropped (its owner returned or panicked).
fn until_closed<T: Send + Sync + 'static>(mut rx: watch::Receiver<T>) -> JoinHandle<()> {
    tokio::spawn(async move { while rx.changed().await.is_ok() {} })
}

/// Every prefix withdrawn, for `reason`.
fn withdrawn_all(prefixes: &[PrefixConfig], reason: &str) -> Vec<PrefixVerdict> {
    prefixes
        .iter()
        .map(|p| PrefixVerdict {
            prefix: p.address,
            prefix_len: p.prefix_len,
            announce: false,
            cost: p.cost,
            reason: reason.into(),
        })
        .collect()
}

/// Re-evaluates the prefixes on every health or drain change and tells the speakers. Fails
/// closed: a closed health channel withdraws everything for good, a late heartbeat until the
/// health checker runs again.
async fn couple(
    prefixes: Vec<PrefixConfig>,
    mut health: HealthInput,
    mut drain: watch::Receiver<Drain>,
    verdicts: watch::Sender<Vec<PrefixVerdict>>,
    ospf: Option<OspfHandle>,
    bgp: Option<Arc<BgpHandle>>,
) {
    let mut last: Option<Vec<Wanted>> = None;
    let mut health_alive = true;
    loop {
        let last_beat = *health.heartbeat.borrow_and_update();
        let stale = last_beat.elapsed() >= health.stale_after;
        let now = if !health_alive {
            withdrawn_all(&prefixes, HEALTH_GONE_REASON)
        } else if stale {
            withdrawn_all(&prefixes, HEALTH_STALE_REASON)
        } else {
            let view = health.cluster.borrow_and_update().clone();
            announce::evaluate(&prefixes, &view, *drain.borrow_and_update())
        };
        let wanted: Vec<Wanted> = now
            .iter()
            .filter(|v| v.announce)
            .map(|v| Wanted {
                prefix: v.prefix,
                prefix_len: v.prefix_len,
                cost: v.cost,
            })
            .collect();
        if last.as_ref() != Some(&wanted) {
            tell_speakers(&now, &wanted, ospf.as_ref(), bgp.as_deref()).await;
            last = Some(wanted);
        }
        verdicts.send_if_modified(|old| {
            if *old != now {
                *old = now;
                true
            } else {
                false
            }
        });
        let stale_at = last_beat + health.stale_after;
        tokio::select! {
            r = health.cluster.changed(), if health_alive => if r.is_err() {
                tracing::error!("health verdicts stopped: withdrawing every prefix");
                health_alive = false;
            },
            r = health.heartbeat.changed(), if health_alive => if r.is_err() {
                health_alive = false;
            },
            _ = tokio::time::sleep_until(stale_at), if health_alive && !stale => {
                tracing::error!(
                    "no heartbeat from the health checker for {:?}: withdrawing every prefix",
                    health.stale_after
                );
            }
            r = drain.changed() => if r.is_err() { return },
            never = crate::fault::panic_when_triggered("coupling") => never,
        }
    }
}

async fn tell_speakers(
    verdicts: &[PrefixVerdict],
    wanted: &[Wanted],
    ospf: Option<&OspfHandle>,
    bgp: Option<&BgpHandle>,
) {
    for v in verdicts {
        tracing::info!(
            prefix = %v.prefix,
            announce = v.announce,
            cost = v.cost,
            reason = %v.reason,
            "anycast verdict"
        );
    }
    if let Some(o) = ospf {
        // OSPFv2 carries IPv4 only (RFC 2328); IPv6 prefixes go over BGP.
        let ipv4 = wanted
            .iter()
            .filter_map(|w| match w.prefix {
                IpAddr::V4(prefix) => Some(Announcement {
                    prefix,
                    prefix_len: w.prefix_len,
                    cost: w.cost,
                }),
                IpAddr::V6(_) => None,
            })
            .collect();
        o.announce(ipv4).await;
    }
    if let Some(b) = bgp {
        let prefixes: Vec<(IpAddr, u8)> = wanted.iter().map(|w| (w.prefix, w.prefix_len)).collect();
        b.announce(&prefixes).await;
    }
}

/// A prefix to announce now, with its cost (OSPF's metric).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    prefix: IpAddr,
    prefix_len: u8,
    cost: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenerRole, Requirement, WhenUnhealthy};
    use crate::health::ListenerVerdict;

    fn healthy_view() -> Arc<ClusterView> {
        Arc::new(ClusterView {
            listeners: vec![ListenerVerdict {
                name: "auto".into(),
                role: ListenerRole::Auto,
                can_read: true,
                can_write: true,
                reason: "ok".into(),
                accepting: true,
                accept_error: None,
            }],
            ..ClusterView::default()
        })
    }

    fn prefix() -> PrefixConfig {
        PrefixConfig {
            address: std::net::Ipv4Addr::new(198, 18, 2, 0).into(),
            prefix_len: 32,
            listeners: Vec::new(),
            require: Requirement::ReadWrite,
            cost: 10,
            when_unhealthy: WhenUnhealthy::Withdraw,
            last_resort_cost: 65535,
        }
    }

    /// The coupling without speakers: what it decides shows in the verdicts.
    #[tokio::test(start_paused = true)]
    async fn stale_or_closed_health_withdraws() {
        let (cluster_tx, cluster) = watch::channel(healthy_view());
        let (beat_tx, heartbeat) = watch::channel(Instant::now());
        let (_drain_tx, drain) = watch::channel(Drain::Serving);
        let (verdict_tx, mut verdicts) = watch::channel(Vec::new());
        let health = HealthInput {
            cluster,
            heartbeat,
            stale_after: stale_after(Duration::from_millis(500)),
        };
        tokio::spawn(couple(
            vec![prefix()],
            health,
            drain,
            verdict_tx,
            None,
            None,
        ));
        let announced = |v: &Vec<PrefixVerdict>| v.first().is_some_and(|p| p.announce);
        verdicts.wait_for(announced).await.expect("announced");
        // No heartbeat: once 3 s have passed (paused time advances to the coupling's timer),
        // the verdicts are stale.
        let t0 = Instant::now();
        let stale = verdicts
            .wait_for(|v| !announced(v))
            .await
            .expect("withdrawn");
        assert_eq!(stale[0].reason, HEALTH_STALE_REASON);
        drop(stale);
        assert!(
            t0.elapsed() >= Duration::from_secs(2),
            "not before the heartbeat is late"
        );
        beat_tx.send_replace(Instant::now());
        verdicts.wait_for(announced).await.expect("announced again");
        drop(cluster_tx);
        let gone = verdicts
            .wait_for(|v| !announced(v))
            .await
            .expect("withdrawn");
        assert_eq!(gone[0].reason, HEALTH_GONE_REASON);
    }

    #[test]
    fn stale_after_has_a_floor() {
        assert_eq!(
            stale_after(Duration::from_millis(100)),
            Duration::from_secs(3)
        );
        assert_eq!(stale_after(Duration::from_secs(1)), Duration::from_secs(6));
    }
}
