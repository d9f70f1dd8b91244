//! Anycast announcement of the proxy's address. `announce` decides, per prefix, whether it is
//! announced and why; `ospf` is the embedded OSPFv2 speaker (RFC 2328): a pure codec, pure
//! state machines and one actor that owns the sockets. This module couples them: it follows the
//! health verdicts and the drain flag and tells every speaker what to announce.

pub mod announce;
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
use ospf::instance::Announcement;
use ospf::io::{OspfHandle, OspfIoError};
use ospf::status::OspfStatus;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("ospf: {0}")]
    Ospf(#[from] OspfIoError),
}

/// The routing part of `pgcast status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RoutingStatus {
    /// Every configured prefix, announced or not, and why.
    pub prefixes: Vec<PrefixVerdict>,
    /// The OSPF speaker, when configured.
    pub ospf: Option<OspfStatus>,
}

/// The running speakers and the task that couples them to health.
pub struct Routing {
    verdicts: watch::Receiver<Vec<PrefixVerdict>>,
    draining: watch::Sender<bool>,
    ospf: Option<OspfHandle>,
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
        let (draining_tx, draining_rx) = watch::channel(false);
        let initial = announce::evaluate(&config.prefixes, &cluster.borrow(), false);
        let (verdict_tx, verdict_rx) = watch::channel(initial);
        tokio::spawn(couple(
            config.prefixes.clone(),
            cluster,
            draining_rx,
            verdict_tx,
            ospf.clone(),
        ));
        Ok(Routing {
            verdicts: verdict_rx,
            draining: draining_tx,
            ospf,
        })
    }

    /// A cheap handle for the admin socket.
    pub fn status_source(&self) -> RoutingStatusSource {
        RoutingStatusSource {
            verdicts: self.verdicts.clone(),
            ospf: self.ospf.as_ref().map(|o| o.status_receiver()),
        }
    }

    /// Withdraws every prefix and waits (at most `limit`) until every speaker has sent the
    /// withdrawal; OSPF may hold it back for MinLSInterval after the previous origination.
    pub async fn withdraw_all(&self, limit: Duration) {
        self.draining.send_replace(true);
        let Some(o) = &self.ospf else { return };
        let mut rx = o.status_receiver();
        let sent = rx.wait_for(|s| {
            s.as_ref()
                .is_some_and(|s| s.announced.is_empty() && s.desired.is_empty())
        });
        if tokio::time::timeout(limit, sent).await.is_err() {
            tracing::warn!("withdrawal not confirmed by the OSPF speaker within {limit:?}");
        }
    }

    /// Flushes what the speakers originated and stops them.
    pub async fn shutdown(&self) {
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
}

impl RoutingStatusSource {
    pub fn get(&self) -> RoutingStatus {
        RoutingStatus {
            prefixes: self.verdicts.borrow().clone(),
            ospf: self.ospf.as_ref().and_then(|o| o.borrow().clone()),
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
