//! What we want announced, what the peer has heard from us, and the
//! UPDATEs that turn one into the other (the Adj-RIB-Out of RFC 4271 §3.2).

use std::collections::BTreeMap;

use super::update::{
    LargeCommunity, Prefix, RouteAttributes, StandardCommunity, Update, UpdateEncoding,
};

/// One prefix pgcast wants the peer to route to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRoute {
    pub prefix: Prefix,
    pub med: Option<u32>,
    pub communities: Vec<StandardCommunity>,
    pub large_communities: Vec<LargeCommunity>,
    /// Tag this route with GRACEFUL_SHUTDOWN (RFC 8326) even while the
    /// session is not draining, e.g. to de-prefer one node of the anycast
    /// set ahead of its maintenance.
    pub graceful_shutdown: bool,
}

impl ExportedRoute {
    /// A plain announcement of `prefix`: no MED, no communities.
    pub fn new(prefix: Prefix) -> Self {
        ExportedRoute {
            prefix,
            med: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            graceful_shutdown: false,
        }
    }
}

/// How announcements become attributes on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportPolicy {
    /// The session is draining (RFC 8326): every route carries
    /// GRACEFUL_SHUTDOWN.
    pub draining: bool,
    /// LOCAL_PREF for iBGP routes not being shut down.
    pub local_pref: u32,
    /// The families the session negotiated: prefixes of another family are not sent.
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
}

impl ExportPolicy {
    fn carries(&self, prefix: &Prefix) -> bool {
        if prefix.is_ipv6() {
            self.ipv6_unicast
        } else {
            self.ipv4_unicast
        }
    }
}

/// Wanted announcements against what was sent on the current session.
#[derive(Debug, Clone, Default)]
pub struct AdjRibOut {
    wanted: BTreeMap<Prefix, ExportedRoute>,
    sent: BTreeMap<Prefix, RouteAttributes>,
}

impl AdjRibOut {
    /// Replace the wanted set. A prefix listed twice keeps its last entry.
    pub fn set_wanted(&mut self, announcements: Vec<ExportedRoute>) {
        self.wanted = announcements
            .into_iter()
            .map(|announcement| (announcement.prefix, announcement))
            .collect();
    }

    /// The peer no longer holds anything from us: the session ended, or it
    /// asked for everything again with a ROUTE-REFRESH (RFC 2918 §4).
    pub fn forget_sent(&mut self) {
        self.sent.clear();
    }

    /// Prefixes the peer currently has from us.
    pub fn sent_prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.sent.keys()
    }

    /// The UPDATEs that bring the peer from what was sent to what is
    /// wanted, and the bookkeeping that assumes they will be sent.
    /// Withdrawals come first, then announcements grouped by attributes so
    /// prefixes sharing them share messages.
    pub fn sync(&mut self, encoding: &UpdateEncoding, policy: ExportPolicy) -> Vec<Update> {
        let mut updates = Vec::new();

        let gone: Vec<Prefix> = self
            .sent
            .keys()
            .filter(|prefix| !self.wanted.contains_key(prefix))
            .copied()
            .collect();
        self.withdraw(&gone, &mut updates);

        // Grouped by family too: IPv6 prefixes that cannot be encoded (MP_REACH_NLRI takes
        // more room than NEXT_HOP) do not take IPv4 ones with them.
        let mut changed: BTreeMap<(bool, RouteAttributes), Vec<Prefix>> = BTreeMap::new();
        let carried = self.wanted.iter().filter(|(p, _)| policy.carries(p));
        for (prefix, announcement) in carried {
            let attributes = route_attributes(announcement, encoding.ibgp, policy);
            if self.sent.get(prefix) != Some(&attributes) {
                changed
                    .entry((prefix.is_ipv6(), attributes))
                    .or_default()
                    .push(*prefix);
            }
        }

        let mut unencodable = Vec::new();
        for ((_, attributes), prefixes) in changed {
            match Update::announce(encoding, &attributes, &prefixes) {
                Ok(built) => {
                    updates.extend(built);
                    for prefix in prefixes {
                        self.sent.insert(prefix, attributes.clone());
                    }
                }
                Err(error) => {
                    // Too many communities to fit, most likely. Announcing
                    // the route without them could attract traffic policy
                    // meant to steer away, so it is not announced at all,
                    // and an older version of it is withdrawn.
                    tracing::error!(%error, ?prefixes, "cannot encode announcement, not sending it");
                    unencodable.extend(
                        prefixes
                            .into_iter()
                            .filter(|prefix| self.sent.contains_key(prefix)),
                    );
                }
            }
        }
        self.withdraw(&unencodable, &mut updates);
        updates
    }

    fn withdraw(&mut self, prefixes: &[Prefix], updates: &mut Vec<Update>) {
        match Update::withdraw(prefixes) {
            Ok(built) => {
                updates.extend(built);
                for prefix in prefixes {
                    self.sent.remove(prefix);
                }
            }
            // Withdrawals carry no attributes and cannot outgrow a message;
            // should bgpkit-parser still refuse, keep them as sent so the
            // next sync retries.
            Err(error) => tracing::error!(%error, ?prefixes, "cannot encode withdrawal"),
        }
    }
}

/// The attributes `announcement` goes out with on this session.
fn route_attributes(
    announcement: &ExportedRoute,
    ibgp: bool,
    policy: ExportPolicy,
) -> RouteAttributes {
    let shutting_down = announcement.graceful_shutdown || policy.draining;
    let mut communities = announcement.communities.clone();
    if shutting_down && !communities.contains(&StandardCommunity::GRACEFUL_SHUTDOWN) {
        communities.push(StandardCommunity::GRACEFUL_SHUTDOWN);
    }
    // RFC 8326 §4: receivers map GRACEFUL_SHUTDOWN to LOCAL_PREF 0. Inside
    // our own AS we are the ones setting LOCAL_PREF, so we apply it here
    // and do not depend on the peer having that policy.
    let local_pref = ibgp.then_some(if shutting_down { 0 } else { policy.local_pref });
    RouteAttributes {
        med: announcement.med,
        local_pref,
        communities,
        large_communities: announcement.large_communities.clone(),
    }
}
