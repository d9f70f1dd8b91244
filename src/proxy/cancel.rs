//! Cancel keys.
//!
//! The BackendKeyData a client receives carries the real process ID of the session's home
//! backend connection when the session opened one at login (so `pg_terminate_backend(pid)`
//! means what it means on a direct connection), else a PID pgcast issued (`session_pid.rs`),
//! and a secret that pgcast owns. The secret's top 8 bits are the
//! issuing balancer's `node.id`: with anycast, a CancelRequest may reach another balancer, which
//! can tell from the key which peer issued it and forward the request there (`[[peers]]`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::session_pid::PidAliases;
use crate::config::Peer;

/// The key of one backend connection, as that server issued it.
#[derive(Debug)]
pub struct BackendCancelKey {
    pub host: String,
    pub port: u16,
    pub pid: i32,
    pub secret: i32,
    /// True while a query is in flight on this connection: only those are cancelled, so a
    /// late cancel cannot hit the session's next statement on an idle connection.
    pub busy: AtomicBool,
}

/// The backend connections a client session currently uses.
#[derive(Debug, Default)]
pub struct CancelTargets {
    keys: Mutex<Vec<Arc<BackendCancelKey>>>,
    /// The client was told this issued PID: its server processes are recorded under it.
    alias: Option<(Arc<PidAliases>, i32)>,
}

impl CancelTargets {
    /// Targets of a session whose client was told `told_pid`, an issued PID.
    pub fn aliased(aliases: Arc<PidAliases>, told_pid: i32) -> Self {
        CancelTargets {
            keys: Mutex::default(),
            alias: Some((aliases, told_pid)),
        }
    }

    pub fn add(&self, key: Arc<BackendCancelKey>) {
        if let Some((aliases, told)) = &self.alias {
            aliases.insert(&key.host, key.port, key.pid, *told);
        }
        if let Ok(mut k) = self.keys.lock() {
            k.push(key);
        }
    }

    pub fn remove(&self, key: &Arc<BackendCancelKey>) {
        if let Some((aliases, _)) = &self.alias {
            aliases.remove(&key.host, key.port, key.pid);
        }
        if let Ok(mut k) = self.keys.lock() {
            k.retain(|x| !Arc::ptr_eq(x, key));
        }
    }

    /// The keys of connections with a query in flight.
    pub fn busy(&self) -> Vec<Arc<BackendCancelKey>> {
        self.keys
            .lock()
            .map(|k| {
                k.iter()
                    .filter(|x| x.busy.load(Ordering::Acquire))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Builds the secret a client sees: node id in the top byte, 24 random bits below.
pub fn make_secret(node_id: u8, random: u32) -> i32 {
    (((node_id as u32) << 24) | (random & 0x00ff_ffff)) as i32
}

/// The node id that issued a secret made by [`make_secret`].
pub fn issuer_of(secret: i32) -> u8 {
    ((secret as u32) >> 24) as u8
}

/// Where a CancelRequest goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRoute {
    /// A session of this balancer holds the key: cancel its running queries.
    Local,
    /// Another balancer issued the key: hand the request on to that peer.
    Forward(SocketAddr),
    /// Nobody we know holds the key: drop the request, as PostgreSQL does (silently).
    Unknown,
}

/// Decides where a CancelRequest for a key issued by `issuer` goes.
///
/// At most one hop, no loops: a forwarded request carries the issuer's id in its secret, so when
/// it arrives at the issuer `issuer == own_id` and it is cancelled there or dropped, never
/// forwarded again. That relies on `peers` pointing at the right balancers; should a wrong
/// address bounce a key between peers anyway, [`CancelRegistry::begin_forward`] breaks the cycle.
pub fn cancel_route(own_id: u8, issuer: u8, local_hit: bool, peers: &[Peer]) -> CancelRoute {
    if local_hit {
        return CancelRoute::Local;
    }
    if issuer == own_id {
        // Our own key and no session holds it: the session has ended.
        return CancelRoute::Unknown;
    }
    peers
        .iter()
        .find(|p| p.id == issuer)
        .map_or(CancelRoute::Unknown, |p| CancelRoute::Forward(p.address))
}

/// Maps the keys this balancer issued to the sessions that hold them.
#[derive(Debug)]
pub struct CancelRegistry {
    node_id: u8,
    sessions: Mutex<HashMap<(i32, i32), Arc<CancelTargets>>>,
    /// Keys this balancer is forwarding right now (see [`CancelRegistry::begin_forward`]).
    forwarding: Mutex<HashSet<(i32, i32)>>,
}

/// Marks a key as being forwarded until dropped.
pub struct Forwarding {
    registry: Arc<CancelRegistry>,
    key: (i32, i32),
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.registry
            .forwarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Removes a session's key from the registry when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: (i32, i32),
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.registry.sessions.lock() {
            s.remove(&self.key);
        }
    }
}

impl CancelRegistry {
    pub fn new(node_id: u8) -> Arc<Self> {
        Arc::new(CancelRegistry {
            node_id,
            sessions: Mutex::new(HashMap::new()),
            forwarding: Mutex::new(HashSet::new()),
        })
    }

    pub fn node_id(&self) -> u8 {
        self.node_id
    }

    /// Registers a session under (pid, a fresh secret); returns the secret and a guard.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        targets: Arc<CancelTargets>,
    ) -> (i32, Registration) {
        let mut sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        loop {
            let secret = make_secret(self.node_id, rand::random::<u32>());
            if let std::collections::hash_map::Entry::Vacant(e) = sessions.entry((pid, secret)) {
                e.insert(targets);
                let reg = Registration {
                    registry: Arc::clone(self),
                    key: (pid, secret),
                };
                return (secret, reg);
            }
        }
    }

    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Arc<CancelTargets>> {
        self.sessions.lock().ok()?.get(&(pid, secret)).cloned()
    }

    /// Claims the forwarding of (pid, secret); `None` while this balancer already forwards it.
    ///
    /// The forwarder keeps its connection to the peer open until the peer has handled the
    /// request, so if misconfigured peer addresses route a key in a circle, it comes back here
    /// while still claimed and is dropped: one round at most, not a storm of connections. A
    /// client repeating the same cancel at once loses nothing either, the first one is on its way.
    pub fn begin_forward(self: &Arc<Self>, pid: i32, secret: i32) -> Option<Forwarding> {
        let mut f = self
            .forwarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.insert((pid, secret)).then(|| Forwarding {
            registry: Arc::clone(self),
            key: (pid, secret),
        })
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_carries_node_id() {
        for node in [0u8, 1, 7, 200, 255] {
            for r in [0u32, 1, 0xffff_ffff, 0x1234_5678] {
                assert_eq!(issuer_of(make_secret(node, r)), node);
            }
        }
    }

    #[test]
    fn register_lookup_and_drop() {
        let reg = CancelRegistry::new(9);
        let targets = Arc::new(CancelTargets::default());
        let (secret, guard) = reg.register(4242, Arc::clone(&targets));
        assert_eq!(issuer_of(secret), 9);
        assert!(reg.lookup(4242, secret).is_some());
        assert!(reg.lookup(4242, secret ^ 1).is_none());
        drop(guard);
        assert!(reg.lookup(4242, secret).is_none());
        assert!(reg.is_empty());
    }

    fn peer(id: u8, port: u16) -> Peer {
        Peer {
            id,
            address: SocketAddr::from(([192, 0, 2, id], port)),
        }
    }

    #[test]
    fn cancel_route_decisions() {
        let peers = [peer(2, 5432), peer(3, 6432)];
        let to = |id: u8, port: u16| CancelRoute::Forward(peer(id, port).address);
        // (own id, issuer, found locally, expected)
        let cases = [
            (1, 1, true, CancelRoute::Local),
            // A local hit wins whatever the top byte says.
            (1, 2, true, CancelRoute::Local),
            (1, 1, false, CancelRoute::Unknown),
            (1, 2, false, to(2, 5432)),
            (1, 3, false, to(3, 6432)),
            (1, 4, false, CancelRoute::Unknown),
            // A forwarded request arriving at its issuer is never forwarded again, even if the
            // peer list (say, after a reload that could not change node.id) names us.
            (2, 2, false, CancelRoute::Unknown),
            (3, 3, false, CancelRoute::Unknown),
        ];
        for (own, issuer, hit, want) in cases {
            assert_eq!(
                cancel_route(own, issuer, hit, &peers),
                want,
                "own {own}, issuer {issuer}, hit {hit}"
            );
        }
        assert_eq!(cancel_route(1, 2, false, &[]), CancelRoute::Unknown);
    }

    #[test]
    fn cancel_route_never_panics_and_forwards_only_to_the_issuer() {
        let peers: Vec<Peer> = (0..=255u8).map(|id| peer(id, 5432)).collect();
        for own in [0u8, 1, 128, 255] {
            for secret in [0i32, -1, i32::MIN, i32::MAX, 0x0200_0000, -0x0100_0000] {
                let issuer = issuer_of(secret);
                for hit in [false, true] {
                    match cancel_route(own, issuer, hit, &peers) {
                        CancelRoute::Local => assert!(hit),
                        CancelRoute::Forward(a) => {
                            assert!(!hit && issuer != own);
                            assert_eq!(a, peer(issuer, 5432).address);
                        }
                        CancelRoute::Unknown => assert!(!hit && issuer == own),
                    }
                }
            }
        }
    }

    #[test]
    fn a_key_is_forwarded_once_at_a_time() {
        let reg = CancelRegistry::new(1);
        let first = reg.begin_forward(7, 0x0200_0001).expect("free");
        assert!(
            reg.begin_forward(7, 0x0200_0001).is_none(),
            "already in flight"
        );
        let other = reg.begin_forward(7, 0x0200_0002);
        assert!(other.is_some(), "other keys are independent");
        drop(first);
        assert!(reg.begin_forward(7, 0x0200_0001).is_some(), "free again");
    }

    #[test]
    fn only_busy_connections_are_targets() {
        let t = CancelTargets::default();
        let idle = Arc::new(BackendCancelKey {
            host: "h".into(),
            port: 1,
            pid: 1,
            secret: 1,
            busy: AtomicBool::new(false),
        });
        let busy = Arc::new(BackendCancelKey {
            host: "h".into(),
            port: 2,
            pid: 2,
            secret: 2,
            busy: AtomicBool::new(true),
        });
        t.add(Arc::clone(&idle));
        t.add(Arc::clone(&busy));
        let got = t.busy();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pid, 2);
        t.remove(&busy);
        assert!(t.busy().is_empty());
    }
}
