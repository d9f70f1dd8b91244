//! Per-database classifier caches. Functions live in each database's own `pg_proc`, so the set
//! of VOLATILE functions (and the routing decisions that depend on it) is kept per database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::classify::{ClassifyCache, FunctionPolicy};
use crate::config::RoutingConfig;

/// The classifier caches of every database clients have used.
#[derive(Debug)]
pub struct Catalogs {
    caches: Mutex<BTreeMap<String, Arc<ClassifyCache>>>,
    capacity: usize,
    overrides: Mutex<(Vec<String>, Vec<String>)>,
    /// Woken when a database appears, so its functions are loaded at once.
    pub new_database: Notify,
}

impl Catalogs {
    pub fn new(routing: &RoutingConfig) -> Arc<Self> {
        Arc::new(Catalogs {
            caches: Mutex::new(BTreeMap::new()),
            capacity: routing.statement_cache_size,
            overrides: Mutex::new((
                routing.read_functions.clone(),
                routing.write_functions.clone(),
            )),
            new_database: Notify::new(),
        })
    }

    fn unloaded_policy(&self) -> FunctionPolicy {
        let o = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        FunctionPolicy::new(None, o.0.iter().cloned(), o.1.iter().cloned())
    }

    /// The cache for `database`, created (with every function call counting as a write until
    /// the database's functions are loaded) on first use.
    pub fn for_database(&self, database: &str) -> Arc<ClassifyCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = caches.get(database) {
            return Arc::clone(c);
        }
        let cache = Arc::new(ClassifyCache::new(self.capacity));
        cache.set_policy(self.unloaded_policy());
        caches.insert(database.to_string(), Arc::clone(&cache));
        drop(caches);
        self.new_database.notify_one();
        cache
    }

    /// Installs the VOLATILE function names read from `database`.
    pub fn set_volatile(&self, database: &str, volatile: std::collections::HashSet<String>) {
        let cache = self.for_database(database);
        let o = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cache.set_policy(FunctionPolicy::new(Some(volatile), o.0, o.1));
    }

    /// Applies changed override lists (config reload); the next refresh reloads the sets.
    pub fn set_overrides(&self, routing: &RoutingConfig) {
        let mut o = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        *o = (
            routing.read_functions.clone(),
            routing.write_functions.clone(),
        );
    }

    pub fn databases(&self) -> Vec<(String, bool)> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .iter()
            .map(|(k, v)| (k.clone(), v.policy_loaded()))
            .collect()
    }

    /// (entries, hits, misses, every database's functions loaded)
    pub fn stats(&self) -> (usize, u64, u64, bool) {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.values().fold((0, 0, 0, true), |acc, c| {
            let (h, m) = c.stats();
            (
                acc.0 + c.len(),
                acc.1 + h,
                acc.2 + m,
                acc.3 && c.policy_loaded(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::classify::StatementClass;

    fn routing() -> RoutingConfig {
        RoutingConfig {
            read_your_writes: crate::config::ReadYourWrites::Session,
            read_functions: vec!["random".into()],
            write_functions: vec![],
            fallback_reads_to_primary: true,
            statement_cache_size: 100,
        }
    }

    #[test]
    fn functions_are_per_database() {
        let c = Catalogs::new(&routing());
        let a = c.for_database("a");
        assert_eq!(
            &a.classify("SELECT f()")[..],
            &[StatementClass::Write],
            "unknown until loaded"
        );
        assert_eq!(
            &a.classify("SELECT random()")[..],
            &[StatementClass::Read],
            "override applies at once"
        );
        c.set_volatile("a", ["g".to_string()].into_iter().collect());
        assert_eq!(&a.classify("SELECT f()")[..], &[StatementClass::Read]);
        assert_eq!(&a.classify("SELECT g()")[..], &[StatementClass::Write]);
        let b = c.for_database("b");
        assert_eq!(
            &b.classify("SELECT f()")[..],
            &[StatementClass::Write],
            "b is not loaded"
        );
        assert_eq!(
            c.databases(),
            vec![("a".to_string(), true), ("b".to_string(), false)]
        );
        assert!(!c.stats().3);
    }
}
