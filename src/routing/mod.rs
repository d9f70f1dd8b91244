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

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, PrefixConfig};
use crate::health::ClusterView;
use announce::PrefixVerdict;
use bgp::io::{BgpHandle, BgpIoError, BgpStatusSource};
use bgp::status::BgpStatus;
use ospf::instance::Announcement;
use ospf::io::{OspfHandle, OspfIoError};
use ospf::status::OspfStatus;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("ospf: {0}")]
    Ospf(#[from] OspfIoError),
    #[error("bgp: {0}")]
    Bgp(#[from] BgpIoError),
    #[error("bfd: {0}")]
    Bfd(#[from] bfd::BfdIoError),
}

/// The routing part of `pgcast status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RoutingStatus {
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
}

/// The running speakers and the task that couples them to health.
pub struct Routing {
    verdicts: watch::Receiver<Vec<PrefixVerdict>>,
    draining: watch::Sender<bool>,
    ospf: Option<OspfHandle>,
    bgp: Option<Arc<BgpHandle>>,
    bfd: Option<bfd::BfdHandle>,
}

impl Routing {
    /// Starts the configured speakers (none: only the verdicts are computed, for status).
    pub fn start(
        config: &Config,
        cluster: watch::Receiver<Arc<ClusterView>>,
    ) -> Result<Routing, RoutingError> {
        let ospf = match &config.ospf {
            Some(o) => Some(ospf::io::spawn(o)?),
            None => None,
        };
        let bgp = match &config.bgp {
            Some(b) => Some(Arc::new(bgp::io::spawn(b)?)),
            None => None,
        };
        let bfd = bfd_owners::start(config, ospf.as_ref().map(|o| o.status_receiver()))?;
        let (draining_tx, draining_rx) = watch::channel(false);
        let initial = announce::evaluate(&config.prefixes, &cluster.borrow(), false);
        let (verdict_tx, verdict_rx) = watch::channel(initial);
        tokio::spawn(couple(
            config.prefixes.clone(),
            cluster,
            draining_rx,
            verdict_tx,
            ospf.clone(),
            bgp.clone(),
        ));
        Ok(Routing {
            verdicts: verdict_rx,
            draining: draining_tx,
            ospf,
            bgp,
            bfd,
        })
    }

    /// A cheap handle for the admin socket.
    pub fn status_source(&self) -> RoutingStatusSource {
        RoutingStatusSource {
            verdicts: self.verdicts.clone(),
            ospf: self.ospf.as_ref().map(|o| o.status_receiver()),
            bgp: self.bgp.as_ref().map(|b| b.status_source()),
            bfd: self.bfd.as_ref().map(|b| b.status_receiver()),
        }
    }

    /// Withdraws every prefix and waits (at most `limit`) until every speaker has sent the
    /// withdrawal; OSPF may hold it back for MinLSInterval after the previous origination.
    /// BGP first re-announces with GRACEFUL_SHUTDOWN (RFC 8326) for its grace period, so
    /// routers move traffic before the route disappears.
    pub async fn withdraw_all(&self, limit: Duration) {
        if let Some(b) = &self.bgp {
            let grace = b.graceful_shutdown_time();
            if !grace.is_zero() && b.any_established() {
                b.graceful_shutdown().await;
                tracing::info!(?grace, "BGP routes re-announced with GRACEFUL_SHUTDOWN");
                tokio::time::sleep(grace).await;
            }
        }
        self.draining.send_replace(true);
        let ospf_done = async {
            let Some(o) = &self.ospf else { return };
            let mut rx = o.status_receiver();
            let sent = rx.wait_for(|s| {
                s.as_ref()
                    .is_some_and(|s| s.announced.is_empty() && s.desired.is_empty())
            });
            if tokio::time::timeout(limit, sent).await.is_err() {
                tracing::warn!("withdrawal not confirmed by the OSPF speaker within {limit:?}");
            }
        };
        let bgp_done = async {
            let Some(b) = &self.bgp else { return };
            if !b.wait_withdrawn(limit).await {
                tracing::warn!("withdrawal not confirmed by every BGP neighbor within {limit:?}");
            }
        };
        tokio::join!(ospf_done, bgp_done);
        // Withdrawn: tell the router's BFD that our going away is on purpose (AdminDown, which
        // RFC 5882 says must not take the routing session down).
        if let Some(b) = &self.bfd {
            b.admin_down().await;
        }
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
pub struct RoutingStatusSource {
    verdicts: watch::Receiver<Vec<PrefixVerdict>>,
    ospf: Option<watch::Receiver<Option<OspfStatus>>>,
    bgp: Option<BgpStatusSource>,
    bfd: Option<watch::Receiver<bfd::BfdStatus>>,
}

impl RoutingStatusSource {
    pub fn get(&self) -> RoutingStatus {
        let prefixes = self.verdicts.borrow().clone();
        RoutingStatus {
            ospf: self.ospf.as_ref().and_then(|o| o.borrow().clone()),
            bgp: self.bgp.as_ref().map(|b| b.get(&prefixes)),
            bfd: self.bfd.as_ref().map(|b| b.borrow().clone()),
            prefixes,
        }
    }
}

/// Re-evaluates the prefixes on every health or drain change and tells the speakers.
async fn couple(
    prefixes: Vec<PrefixConfig>,
    mut cluster: watch::Receiver<Arc<ClusterView>>,
    mut draining: watch::Receiver<bool>,
    verdicts: watch::Sender<Vec<PrefixVerdict>>,
    ospf: Option<OspfHandle>,
    bgp: Option<Arc<BgpHandle>>,
) {
    let mut last: Option<Vec<Announcement>> = None;
    loop {
        let view = cluster.borrow_and_update().clone();
        let drain = *draining.borrow_and_update();
        let now = announce::evaluate(&prefixes, &view, drain);
        let wanted: Vec<Announcement> = now
            .iter()
            .filter(|v| v.announce)
            .map(|v| Announcement {
                prefix: v.prefix,
                prefix_len: v.prefix_len,
                cost: v.cost,
            })
            .collect();
        if last.as_ref() != Some(&wanted) {
            for v in &now {
                tracing::info!(
                    prefix = %v.prefix,
                    announce = v.announce,
                    cost = v.cost,
                    reason = %v.reason,
                    "anycast verdict"
                );
            }
            if let Some(o) = &ospf {
                o.announce(wanted.clone()).await;
            }
            if let Some(b) = &bgp {
                let prefixes: Vec<(std::net::Ipv4Addr, u8)> =
                    wanted.iter().map(|a| (a.prefix, a.prefix_len)).collect();
                b.announce(&prefixes).await;
            }
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
        tokio::select! {
            r = cluster.changed() => if r.is_err() { return },
            r = draining.changed() => if r.is_err() { return },
        }
    }
}
