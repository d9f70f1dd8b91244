//! Link-state database (RFC 2328 §12, §14).
//!
//! LSAs are stored as received (or as originated) together with the instant they were
//! installed, so that the current LS age is the stored age plus the time elapsed since
//! installation (§12.1.1: the age is incremented while the LSA sits in the database). An
//! LSA stored with age MaxAge stays at MaxAge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::lsa::{Lsa, LsaHeader, LsaKey, MAX_AGE};

/// Errors of the database (one per module, as the contract asks).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LsdbError {
    /// The configured bound on the number of LSAs is reached and the LSA would be new.
    #[error("LSDB full ({0} LSAs)")]
    Full(usize),
}

impl LsdbError {
    /// Stable snake_case reason for the dropped-packet counters.
    pub fn reason(&self) -> &'static str {
        match self {
            LsdbError::Full(_) => "lsdb_full",
        }
    }
}

/// One database entry.
#[derive(Debug, Clone)]
pub struct LsdbEntry {
    /// The LSA as installed (its header age is the age at `installed`).
    pub lsa: Lsa,
    /// When it was installed (base of the age computation).
    pub installed: Instant,
    /// Set when the copy arrived by flooding: the MinLSArrival check (§13 step 5a) only
    /// applies to such copies, not to ones we originated ourselves.
    pub via_flooding: bool,
    /// Whether we have already re-flooded it on reaching MaxAge by aging (§14).
    pub maxage_flooded: bool,
}

impl LsdbEntry {
    /// Current LS age in seconds, capped at MaxAge (§12.1.1).
    pub fn age(&self, now: Instant) -> u16 {
        let stored = self.lsa.header.age;
        if stored >= MAX_AGE {
            return MAX_AGE;
        }
        let elapsed = now.saturating_duration_since(self.installed).as_secs();
        let age = u64::from(stored).saturating_add(elapsed);
        u16::try_from(age.min(u64::from(MAX_AGE))).unwrap_or(MAX_AGE)
    }

    /// The header with the current age filled in (for DD packets and acks).
    pub fn header(&self, now: Instant) -> LsaHeader {
        let mut h = self.lsa.header;
        h.age = self.age(now);
        h
    }

    /// The LSA with its current age plus `delay` (InfTransDelay, §13.3 step 5), capped at MaxAge.
    pub fn lsa_for_sending(&self, now: Instant, delay: u16) -> Lsa {
        let age = self.age(now).saturating_add(delay).min(MAX_AGE);
        self.lsa.with_age(age)
    }

    /// Instant at which this entry reaches MaxAge by aging alone (None when already there).
    pub fn maxage_at(&self) -> Option<Instant> {
        let stored = self.lsa.header.age;
        // Once handled (re-flooded) it needs no more wake-ups: removal follows the acks.
        if stored >= MAX_AGE || self.maxage_flooded {
            return None;
        }
        Some(self.installed + Duration::from_secs(u64::from(MAX_AGE - stored)))
    }
}

/// The database of one area (we only ever have one).
#[derive(Debug)]
pub struct Lsdb {
    entries: BTreeMap<LsaKey, LsdbEntry>,
    max_lsas: usize,
}

impl Lsdb {
    pub fn new(max_lsas: usize) -> Lsdb {
        Lsdb {
            entries: BTreeMap::new(),
            max_lsas,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &LsaKey) -> Option<&LsdbEntry> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LsaKey, &LsdbEntry)> {
        self.entries.iter()
    }

    /// Whether installing `key` would need a new slot that the bound forbids.
    pub fn would_overflow(&self, key: &LsaKey) -> bool {
        !self.entries.contains_key(key) && self.entries.len() >= self.max_lsas
    }

    /// Install an LSA (§13.2). Replacing an existing instance is always allowed; a new key
    /// beyond the configured bound is refused unless `force` (our own LSAs must always fit:
    /// refusing them would leave us unable to announce anything).
    pub fn install(
        &mut self,
        now: Instant,
        lsa: Lsa,
        via_flooding: bool,
        force: bool,
    ) -> Result<(), LsdbError> {
        let key = lsa.key();
        if !force && self.would_overflow(&key) {
            return Err(LsdbError::Full(self.entries.len()));
        }
        self.entries.insert(
            key,
            LsdbEntry {
                lsa,
                installed: now,
                via_flooding,
                maxage_flooded: false,
            },
        );
        Ok(())
    }

    pub fn remove(&mut self, key: &LsaKey) -> Option<LsdbEntry> {
        self.entries.remove(key)
    }

    pub fn mark_maxage_flooded(&mut self, key: &LsaKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.maxage_flooded = true;
        }
    }

    /// Keys of entries whose age is MaxAge now.
    pub fn maxage_keys(&self, now: Instant) -> Vec<LsaKey> {
        self.entries
            .iter()
            .filter(|(_, e)| e.age(now) >= MAX_AGE)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Earliest instant at which some entry reaches MaxAge by aging (for the actor's wake-up).
    pub fn next_maxage(&self) -> Option<Instant> {
        self.entries.values().filter_map(LsdbEntry::maxage_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anycast::ospf::lsa::{ls_type, LsaBody, Options, INITIAL_SEQ};
    use std::net::Ipv4Addr;

    fn lsa(id: u8, age: u16) -> Lsa {
        let key = LsaKey {
            ls_type: ls_type::ROUTER,
            ls_id: Ipv4Addr::new(10, 0, 0, id),
            adv_router: Ipv4Addr::new(10, 0, 0, id),
        };
        Lsa::originate(age, Options(Options::E), key, INITIAL_SEQ, LsaBody::Unknown)
    }

    #[test]
    fn age_grows_and_caps() {
        let t0 = Instant::now();
        let mut db = Lsdb::new(10);
        db.install(t0, lsa(1, 10), true, false).unwrap();
        let e = db.get(&lsa(1, 0).key()).unwrap();
        assert_eq!(e.age(t0), 10);
        assert_eq!(e.age(t0 + Duration::from_secs(5)), 15);
        assert_eq!(e.age(t0 + Duration::from_secs(10_000)), MAX_AGE);
        assert_eq!(e.maxage_at(), Some(t0 + Duration::from_secs(3590)));
    }

    #[test]
    fn bound_refuses_new_but_allows_replace_and_force() {
        let t0 = Instant::now();
        let mut db = Lsdb::new(1);
        db.install(t0, lsa(1, 0), true, false).unwrap();
        assert_eq!(
            db.install(t0, lsa(2, 0), true, false),
            Err(LsdbError::Full(1))
        );
        assert!(db.install(t0, lsa(1, 5), true, false).is_ok());
        assert!(db.install(t0, lsa(3, 0), false, true).is_ok());
        assert_eq!(db.len(), 2);
    }
}
