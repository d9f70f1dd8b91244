//! Origination of our own LSAs (RFC 2328 §12.4): the Router-LSA (§12.4.1) and, in external
//! mode, one AS-External-LSA per announced prefix (§12.4.4); MinLSInterval, LSRefreshTime,
//! premature aging (§14.1), self-originated LSAs received from others (§13.4) and the
//! shutdown flush.
//!
//! Not implemented: sequence number wrap (§12.1.6). Starting at InitialSequenceNumber and
//! refreshing every 30 minutes, reaching MaxSequenceNumber would take ~10^5 years; the one way
//! to get there sooner is a neighbour flooding back an instance of ours with a sequence near
//! the maximum, in which case we saturate at MaxSequenceNumber.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::instance::{Action, Announcement, Instance, NetworkType, ShutdownState, OUR_OPTIONS};
use super::interface::{mask_of, network_of, IfState};
use super::lsa::{
    ls_type, AsExternalLsa, Lsa, LsaBody, LsaKey, RouterLink, RouterLsa, INITIAL_SEQ,
    LS_REFRESH_TIME, MAX_AGE, MAX_SEQ,
};
use super::neighbor::NbrState;

/// Errors of origination (currently only logged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("sequence number space exhausted for {0:?} (wrap not implemented, §12.1.6)")]
    SeqExhausted(LsaKey),
}

#[derive(Debug, Clone)]
pub struct OwnLsa {
    pub body: LsaBody,
    pub seq: i32,
    pub originated: Instant,
    /// Flushed (premature aging, §14.1): kept until it leaves the database.
    pub flushed: bool,
}

#[derive(Debug, Default)]
pub struct Origin {
    /// The announcements wanted by the application (sorted, deduplicated).
    pub desired: Vec<Announcement>,
    /// What our current Router-LSA carries as stub links (non-external mode).
    pub announced_stub: Vec<Announcement>,
    pub own: BTreeMap<LsaKey, OwnLsa>,
    /// Last sequence number used or seen per key, surviving flushes, so that a re-origination
    /// is always newer than anything we or others hold.
    pub seqs: BTreeMap<LsaKey, i32>,
    /// Last origination per key (MinLSInterval, §12.4).
    pub last_orig: BTreeMap<LsaKey, Instant>,
    /// Originations held back by MinLSInterval: key -> when it may go.
    pub pending: BTreeMap<LsaKey, Instant>,
    /// §13.4: originate at once regardless of MinLSInterval.
    pub forced: BTreeSet<LsaKey>,
}

/// How long a shutdown waits for the acknowledgements of its flush. The flush usually
/// follows the withdrawal within a millisecond, so a neighbour discards it (MinLSArrival,
/// §13 step 5a) and only a retransmission gets through: retransmitted every OWN_RETRANSMIT
/// while shutting down, this leaves room for three tries and a delayed ack (§13.5) of the
/// first. Independent of RxmtInterval, which may be configured long.
pub const SHUTDOWN_ACK_WAIT: Duration = Duration::from_millis(3500);

fn refresh_time() -> Duration {
    Duration::from_secs(u64::from(LS_REFRESH_TIME))
}

impl Origin {
    pub fn set_desired(&mut self, mut list: Vec<Announcement>) {
        list.sort();
        list.dedup();
        self.desired = list;
    }

    pub fn next_deadline(&self, _min_ls_interval: Duration) -> Option<Instant> {
        let pending = self.pending.values().copied();
        let refresh = self
            .own
            .values()
            .filter(|o| !o.flushed)
            .map(|o| o.originated + refresh_time());
        pending.chain(refresh).min()
    }

    /// Whether we currently originate (and have not flushed) this LSA.
    pub fn holds(&self, key: &LsaKey) -> bool {
        self.own.get(key).is_some_and(|o| !o.flushed)
    }

    pub fn forget(&mut self, key: &LsaKey) {
        if self.own.get(key).is_some_and(|o| o.flushed) {
            self.own.remove(key);
        }
    }
}

impl Instance {
    fn router_key(&self) -> LsaKey {
        LsaKey {
            ls_type: ls_type::ROUTER,
            ls_id: self.router_id,
            adv_router: self.router_id,
        }
    }

    /// The Router-LSA we should be advertising now (§12.4.1).
    pub(crate) fn router_lsa_body(&self) -> LsaBody {
        let mut links = Vec::new();
        for ifc in &self.interfaces {
            let addr = ifc.cfg.address;
            let cost = ifc.cfg.cost;
            let stub = RouterLink {
                link_id: network_of(addr, ifc.cfg.prefix_len),
                link_data: ifc.mask(),
                link_type: RouterLink::STUB,
                metric: cost,
            };
            match (ifc.cfg.network_type, ifc.state) {
                (_, IfState::Down) => {}
                (NetworkType::Broadcast, state) => {
                    // §12.4.1.2: a transit link once we are fully adjacent to the DR (or are
                    // the DR with at least one full neighbour); a stub network before that.
                    let full = |n: &&super::neighbor::Neighbor| n.state == NbrState::Full;
                    let transit = match state {
                        IfState::DR => ifc.neighbors.values().any(|n| full(&n)),
                        IfState::Backup | IfState::DROther => ifc
                            .neighbors
                            .values()
                            .any(|n| full(&n) && n.addr == ifc.dr && !ifc.dr.is_unspecified()),
                        _ => false,
                    };
                    if transit {
                        links.push(RouterLink {
                            link_id: ifc.dr,
                            link_data: addr,
                            link_type: RouterLink::TRANSIT,
                            metric: cost,
                        });
                    } else {
                        links.push(stub);
                    }
                }
                (NetworkType::PointToPoint, _) => {
                    // §12.4.1.1: a point-to-point link per full neighbour, plus the subnet.
                    for n in ifc.neighbors.values().filter(|n| n.state == NbrState::Full) {
                        links.push(RouterLink {
                            link_id: n.router_id,
                            link_data: addr,
                            link_type: RouterLink::POINT_TO_POINT,
                            metric: cost,
                        });
                    }
                    links.push(stub);
                }
            }
        }
        if self.external.is_none() {
            // Announced prefixes as host/stub networks of this router.
            for a in &self.origin.desired {
                links.push(RouterLink {
                    link_id: network_of(a.prefix, a.prefix_len),
                    link_data: mask_of(a.prefix_len),
                    link_type: RouterLink::STUB,
                    metric: a.cost,
                });
            }
        }
        // E bit: we are an AS boundary router when announcing externals (§A.4.2).
        let flags = if self.external.is_some() {
            RouterLsa::E
        } else {
            0
        };
        LsaBody::Router(RouterLsa { flags, links })
    }

    /// Every LSA we want in the database, keyed.
    fn desired_lsas(&self) -> BTreeMap<LsaKey, LsaBody> {
        let mut out = BTreeMap::new();
        out.insert(self.router_key(), self.router_lsa_body());
        if let Some(ext) = &self.external {
            for a in &self.origin.desired {
                let key = LsaKey {
                    ls_type: ls_type::AS_EXTERNAL,
                    ls_id: network_of(a.prefix, a.prefix_len),
                    adv_router: self.router_id,
                };
                // Appendix E (same network, different masks) is not handled: first one wins.
                out.entry(key).or_insert(LsaBody::AsExternal(AsExternalLsa {
                    mask: mask_of(a.prefix_len),
                    type2: ext.type2,
                    metric: ext.metric & 0x00ff_ffff,
                    forwarding: std::net::Ipv4Addr::UNSPECIFIED,
                    tag: ext.tag,
                }));
            }
        }
        out
    }

    /// Bring our LSAs in line with what they should contain; originations closer than
    /// MinLSInterval to the previous one are held back until that deadline.
    pub(crate) fn reconcile_origination(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        let desired = self.desired_lsas();
        for (key, body) in &desired {
            let forced = self.origin.forced.contains(key);
            let changed = self
                .origin
                .own
                .get(key)
                .is_none_or(|o| o.flushed || o.body != *body);
            if !changed && !forced {
                self.origin.pending.remove(key);
                continue;
            }
            let earliest = self
                .origin
                .last_orig
                .get(key)
                .map(|t| *t + self.min_ls_interval);
            if forced || earliest.is_none_or(|t| now >= t) {
                self.originate(now, *key, body.clone());
            } else if let Some(t) = earliest {
                self.origin.pending.insert(*key, t);
            }
        }
        let withdrawn: Vec<LsaKey> = self
            .origin
            .own
            .iter()
            .filter(|(k, o)| !o.flushed && !desired.contains_key(k))
            .map(|(k, _)| *k)
            .collect();
        for key in withdrawn {
            self.origin.pending.remove(&key);
            self.flush_own(now, key);
        }
    }

    /// Refresh LSAs that reached LSRefreshTime (§12.4).
    pub(crate) fn origin_timers(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        let due: Vec<(LsaKey, LsaBody)> = self
            .origin
            .own
            .iter()
            .filter(|(_, o)| !o.flushed && now >= o.originated + refresh_time())
            .map(|(k, o)| (*k, o.body.clone()))
            .collect();
        for (key, body) in due {
            self.originate(now, key, body);
        }
    }

    /// Originate a new instance: next sequence number, install, flood (§12.4, §13.2, §13.3).
    fn originate(&mut self, now: Instant, key: LsaKey, body: LsaBody) {
        let last = [
            self.origin.seqs.get(&key).copied(),
            self.lsdb.get(&key).map(|e| e.lsa.header.seq),
        ]
        .into_iter()
        .flatten()
        .max();
        let seq = match last {
            None => INITIAL_SEQ,
            Some(MAX_SEQ) => {
                tracing::warn!("ospf: {}", OriginError::SeqExhausted(key));
                MAX_SEQ
            }
            Some(s) => s + 1,
        };
        let lsa = Lsa::originate(0, OUR_OPTIONS, key, seq, body.clone());
        tracing::info!(?key, seq = format_args!("{seq:#010x}"), "ospf: originating");
        if key.ls_type == ls_type::ROUTER && self.external.is_none() {
            self.origin.announced_stub = self.origin.desired.clone();
        }
        self.origin.own.insert(
            key,
            super::origin::OwnLsa {
                body,
                seq,
                originated: now,
                flushed: false,
            },
        );
        self.origin.seqs.insert(key, seq);
        self.origin.last_orig.insert(key, now);
        self.origin.pending.remove(&key);
        self.origin.forced.remove(&key);
        self.remove_from_retransmit_lists(&key);
        // Our own LSAs always fit: the bound is for what others send us.
        let _ = self.lsdb.install(now, lsa.clone(), false, true);
        self.flood_out(now, &lsa, None);
    }

    /// Premature aging of one of our LSAs (§14.1): same instance, age MaxAge, flooded.
    fn flush_own(&mut self, now: Instant, key: LsaKey) {
        if let Some(o) = self.origin.own.get_mut(&key) {
            o.flushed = true;
        }
        let Some(e) = self.lsdb.get(&key) else { return };
        let lsa = e.lsa.with_age(MAX_AGE);
        self.flush_lsa(now, lsa);
    }

    fn flush_lsa(&mut self, now: Instant, lsa: Lsa) {
        let key = lsa.key();
        tracing::info!(?key, "ospf: flushing");
        self.remove_from_retransmit_lists(&key);
        let _ = self.lsdb.install(now, lsa.clone(), false, true);
        self.lsdb.mark_maxage_flooded(&key);
        self.flood_out(now, &lsa, None);
    }

    /// §13.4: someone flooded an instance of "our" LSA newer than ours (typically left over
    /// from before a restart). If we still want it, jump past its sequence number and
    /// re-originate at once; otherwise flush it.
    pub(crate) fn self_originated_received(&mut self, now: Instant, lsa: &Lsa) {
        let key = lsa.key();
        let wanted = self.shutdown.is_none()
            && key.adv_router == self.router_id
            && key.ls_type != ls_type::NETWORK
            && self.desired_lsas().contains_key(&key);
        if wanted {
            let seq = self
                .origin
                .seqs
                .get(&key)
                .copied()
                .unwrap_or(lsa.header.seq);
            self.origin.seqs.insert(key, seq.max(lsa.header.seq));
            self.origin.forced.insert(key);
            // reconcile_origination (run after every input) originates it.
        } else if lsa.header.age < MAX_AGE {
            if let Some(o) = self.origin.own.get_mut(&key) {
                o.flushed = true;
            }
            self.flush_lsa(now, lsa.with_age(MAX_AGE));
        }
    }

    /// Input::Shutdown: flush everything we originate, then wait for the acks (at most
    /// SHUTDOWN_ACK_WAIT) before ShutdownComplete.
    pub(crate) fn start_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        let keys: BTreeSet<LsaKey> = self
            .origin
            .own
            .iter()
            .filter(|(_, o)| !o.flushed)
            .map(|(k, _)| *k)
            .collect();
        self.shutdown = Some(ShutdownState {
            keys: keys.clone(),
            deadline: now + SHUTDOWN_ACK_WAIT,
            completed: false,
        });
        self.origin.pending.clear();
        for key in keys {
            self.flush_own(now, key);
        }
    }

    pub(crate) fn check_shutdown(&mut self, now: Instant) {
        let Some(s) = &self.shutdown else { return };
        if s.completed {
            return;
        }
        let unacked = s
            .keys
            .iter()
            .any(|k| self.interfaces.iter().any(|i| i.on_retransmit_list(k)));
        if !unacked || now >= s.deadline {
            if let Some(s) = &mut self.shutdown {
                s.completed = true;
            }
            self.out.push(Action::ShutdownComplete);
        }
    }
}
