//! What a client is told at login when no server connection is opened for it: the
//! ParameterStatus messages that the latest fresh login with the same key (backend, user,
//! database, start-up parameters) received.
//!
//! A key is only ever remembered from a login that succeeded, so the first login of a user to
//! a database still meets the server (a wrong database or a refused role fails at login, as
//! directly); later ones are answered from here. A key whose login fails later is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::message::Message;
use super::pool::PoolKey;

/// Keys remembered at most; past it the map starts over (each key is relearned by one login).
const MAX_GREETINGS: usize = 10_000;

#[derive(Default)]
pub struct Greetings {
    map: Mutex<HashMap<PoolKey, Arc<[Message]>>>,
}

impl Greetings {
    pub fn get(&self, key: &PoolKey) -> Option<Arc<[Message]>> {
        self.lock().get(key).cloned()
    }

    pub fn remember(&self, key: &PoolKey, parameter_status: &[Message]) {
        let mut map = self.lock();
        if map.len() >= MAX_GREETINGS && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.clone(), parameter_status.into());
    }

    /// Forgets every backend's greeting for these start-up parameters (a login with them
    /// failed: the next one must meet the server again).
    pub fn forget(&self, params: &[(String, String)]) {
        self.lock().retain(|k, _| *k.params != *params);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<[Message]>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a greeting says of `in_hot_standby` (PostgreSQL 14+ reports it at login; libpq's
/// `target_session_attrs` decides from it): `None` if it says nothing.
pub fn says_standby(greeting: &[Message]) -> Option<bool> {
    // A prefix test per message, not a split of every body: this runs at every login.
    greeting.iter().find_map(|m| {
        let value = m.body().strip_prefix(b"in_hot_standby\0")?;
        Some(value.split(|b| *b == 0).next() == Some(b"on".as_slice()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(backend: &str, user: &str) -> PoolKey {
        let params = vec![("user".into(), user.into())].into();
        PoolKey::new(
            backend,
            "127.0.0.1",
            5432,
            params,
            crate::config::SslMode::Disable,
        )
    }

    fn status(raw: &'static [u8]) -> Message {
        Message {
            tag: b'S',
            raw: Bytes::from_static(raw),
        }
    }

    #[test]
    fn remembered_per_key_and_forgotten_per_parameters() {
        let g = Greetings::default();
        assert!(g.get(&key("pg1", "alice")).is_none());
        g.remember(&key("pg1", "alice"), &[status(b"S-a")]);
        g.remember(&key("pg2", "alice"), &[status(b"S-b")]);
        g.remember(&key("pg1", "bob"), &[status(b"S-c")]);
        assert_eq!(&g.get(&key("pg1", "alice")).unwrap()[0].raw[..], b"S-a");
        g.forget(&key("pg1", "alice").params);
        assert!(g.get(&key("pg1", "alice")).is_none());
        assert!(g.get(&key("pg2", "alice")).is_none());
        assert!(g.get(&key("pg1", "bob")).is_some());
    }

    #[test]
    fn reads_in_hot_standby() {
        let m = |raw: &'static [u8]| Message {
            tag: b'S',
            raw: Bytes::from_static(raw),
        };
        let on = m(b"S\0\0\0\x17in_hot_standby\0on\0");
        let off = m(b"S\0\0\0\x18in_hot_standby\0off\0");
        let other = m(b"S\0\0\0\x0fTimeZone\0UTC\0");
        assert_eq!(says_standby(&[other.clone(), on]), Some(true));
        assert_eq!(says_standby(&[off, other.clone()]), Some(false));
        assert_eq!(says_standby(&[other]), None);
    }

    #[test]
    fn bounded() {
        let g = Greetings::default();
        for i in 0..MAX_GREETINGS + 5 {
            g.remember(&key("pg1", &format!("u{i}")), &[]);
        }
        assert!(g.lock().len() <= MAX_GREETINGS);
    }
}
