//! Which BFD sessions the speakers want: one per BGP neighbour with `bfd = true`, and one per
//! OSPF neighbour we form an adjacency with (the DR and BDR, or the
//! point-to-point neighbour) on an interface with `bfd = true`. The router runs the other
//! end and drops our next hop when our packets stop (RFC 5882): BFD detects *our* death; our
//! own health verdicts still go through OSPF/BGP withdrawals.

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::bfd::{BfdHandle, BfdPeer, BfdTimers, BFD_CONTROL_PORT};
use super::ospf::instance::NetworkType;
use super::ospf::neighbor::NbrState;
use super::ospf::status::OspfStatus;
use crate::config::Config;

/// Starts the BFD actor when any neighbour or interface asks for it.
pub fn start(
    config: &Config,
    ospf: Option<watch::Receiver<Option<OspfStatus>>>,
) -> Result<Option<BfdHandle>, super::bfd::BfdIoError> {
    let bgp_peers: Vec<BfdPeer> = config
        .bgp
        .iter()
        .flat_map(|b| b.neighbors.iter())
        .filter(|n| n.bfd)
        .map(|n| BfdPeer {
            peer: n.address,
            local: n.local_address,
            interface: None,
            owner: format!("bgp {}", n.address),
        })
        .collect();
    let ospf_ifaces: BTreeSet<String> = config
        .ospf
        .iter()
        .flat_map(|o| o.interfaces.iter())
        .filter(|i| i.bfd)
        .map(|i| i.name.clone())
        .collect();
    if bgp_peers.is_empty() && ospf_ifaces.is_empty() {
        return Ok(None);
    }
    let c = &config.bfd;
    let timers = BfdTimers {
        desired_min_tx: c.desired_min_tx,
        required_min_rx: c.required_min_rx,
        detect_multiplier: c.detect_multiplier,
    };
    let bfd = super::bfd::spawn(timers, BFD_CONTROL_PORT)?;
    let handle = bfd.clone();
    tokio::spawn(async move {
        handle.set_peers("bgp", bgp_peers).await;
        if let (Some(mut rx), false) = (ospf, ospf_ifaces.is_empty()) {
            follow_ospf(&handle, &mut rx, &ospf_ifaces).await;
        }
    });
    Ok(Some(bfd))
}

/// Keeps one session per OSPF adjacency partner on the BFD interfaces: the DR and BDR of a
/// broadcast link (we are never DR, and are 2-Way only with the other balancers, for whom a
/// session would serve nobody) or the neighbour of a point-to-point link, from 2-Way on.
/// Not only while Full: a session removed on a transient adjacency reset (e.g. a DD sequence
/// mismatch) sends AdminDown, which FRR 8.4 ospfd answers by deleting the neighbour, which
/// resets the adjacency again. That loop flapped every balancer's route in the lab.
async fn follow_ospf(
    bfd: &BfdHandle,
    rx: &mut watch::Receiver<Option<OspfStatus>>,
    ifaces: &BTreeSet<String>,
) {
    let mut last: Option<Vec<BfdPeer>> = None;
    loop {
        let peers = ospf_peers(rx.borrow_and_update().as_ref(), ifaces);
        if last.as_ref() != Some(&peers) {
            bfd.set_peers("ospf", peers.clone()).await;
            last = Some(peers);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn ospf_peers(status: Option<&OspfStatus>, ifaces: &BTreeSet<String>) -> Vec<BfdPeer> {
    let Some(s) = status else { return Vec::new() };
    s.interfaces
        .iter()
        .filter(|i| ifaces.contains(&i.name))
        .flat_map(|i| {
            let p2p = i.network_type == NetworkType::PointToPoint;
            i.neighbors
                .iter()
                .filter(move |n| p2p || n.address == i.dr || n.address == i.bdr)
                .filter(|n| n.state >= NbrState::TwoWay)
                .map(|n| BfdPeer {
                    peer: n.address,
                    local: None,
                    interface: Some(i.name.clone()),
                    owner: format!("ospf {}", i.name),
                })
        })
        .collect()
}
