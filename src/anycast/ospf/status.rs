//! Serializable snapshot of the instance for the admin API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::instance::{Announcement, Instance, NetworkType};
use super::interface::{mask_of, IfState};
use super::lsa::{ls_type, LsaBody};
use super::neighbor::NbrState;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NeighborStatus {
    pub router_id: Ipv4Addr,
    pub address: Ipv4Addr,
    pub priority: u8,
    pub state: NbrState,
    pub dead_timer_ms: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub network_type: NetworkType,
    pub state: IfState,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub cost: u16,
    pub neighbors: Vec<NeighborStatus>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OwnLsaStatus {
    pub ls_type: u8,
    pub ls_id: Ipv4Addr,
    pub adv_router: Ipv4Addr,
    /// Sequence number as hex, the way routers print it (0x80000001).
    pub seq: String,
    pub age: u16,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OspfStatus {
    pub router_id: Ipv4Addr,
    pub area_id: Ipv4Addr,
    pub interfaces: Vec<InterfaceStatus>,
    pub own_lsas: Vec<OwnLsaStatus>,
    /// What our current LSAs carry.
    pub announced: Vec<Announcement>,
    /// What the application asked for.
    pub desired: Vec<Announcement>,
    /// Milliseconds until an origination held back by MinLSInterval goes out.
    pub pending_origination_ms: Option<u64>,
    pub lsdb_size: usize,
    pub dropped: BTreeMap<String, u64>,
    pub sent: BTreeMap<String, u64>,
    pub received: BTreeMap<String, u64>,
}

fn ms_until(now: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn build(inst: &Instance, now: Instant) -> OspfStatus {
    let interfaces = inst
        .interfaces
        .iter()
        .map(|i| InterfaceStatus {
            name: i.cfg.name.clone(),
            network_type: i.cfg.network_type,
            state: i.state,
            dr: i.dr,
            bdr: i.bdr,
            cost: i.cfg.cost,
            neighbors: i
                .neighbors
                .values()
                .map(|n| NeighborStatus {
                    router_id: n.router_id,
                    address: n.addr,
                    priority: n.priority,
                    state: n.state,
                    dead_timer_ms: ms_until(now, n.inactivity_due),
                })
                .collect(),
        })
        .collect();
    let own_lsas = inst
        .origin
        .own
        .keys()
        .filter_map(|k| inst.lsdb.get(k).map(|e| (k, e)))
        .map(|(k, e)| OwnLsaStatus {
            ls_type: k.ls_type,
            ls_id: k.ls_id,
            adv_router: k.adv_router,
            seq: format!("{:#010x}", e.lsa.header.seq),
            age: e.age(now),
        })
        .collect();
    let announced = if inst.external.is_some() {
        inst.origin
            .own
            .iter()
            .filter(|(k, o)| k.ls_type == ls_type::AS_EXTERNAL && !o.flushed)
            .filter_map(|(k, o)| match &o.body {
                LsaBody::AsExternal(x) => {
                    let len = (0..=32u8).find(|l| mask_of(*l) == x.mask).unwrap_or(32);
                    let cost = u16::try_from(x.metric).unwrap_or(u16::MAX);
                    Some(Announcement {
                        prefix: k.ls_id,
                        prefix_len: len,
                        cost,
                    })
                }
                _ => None,
            })
            .collect()
    } else {
        inst.origin.announced_stub.clone()
    };
    let c = inst.counters();
    OspfStatus {
        router_id: inst.router_id,
        area_id: inst.area_id,
        interfaces,
        own_lsas,
        announced,
        desired: inst.origin.desired.clone(),
        pending_origination_ms: inst
            .origin
            .pending
            .values()
            .min()
            .map(|t| ms_until(now, *t)),
        lsdb_size: inst.lsdb.len(),
        dropped: c.dropped.clone(),
        sent: c.sent.clone(),
        received: c.received.clone(),
    }
}
