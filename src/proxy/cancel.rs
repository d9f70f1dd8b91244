//! Cancel keys.
//!
//! The BackendKeyData a client receives carries the real process ID of the session's home
//! backend connection (so `pg_terminate_backend(pid)` and notification PIDs mean what they
//! mean on a direct connection) and a secret that pgcast owns. The secret's top 8 bits are the
//! issuing balancer's `node.id`: with anycast, a CancelRequest may reach another balancer, which
//! can tell from the key which peer issued it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl CancelTargets {
    pub fn add(&self, key: Arc<BackendCancelKey>) {
        if let Ok(mut k) = self.keys.lock() {
            k.push(key);
        }
    }

    pub fn remove(&self, key: &Arc<BackendCancelKey>) {
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

/// Maps the keys this balancer issued to the sessions that hold them.
#[derive(Debug)]
pub struct CancelRegistry {
    node_id: u8,
    sessions: Mutex<HashMap<(i32, i32), Arc<CancelTargets>>>,
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
