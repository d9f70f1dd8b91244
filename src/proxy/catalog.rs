//! Per-database classifier caches. Functions live in each database's own `pg_proc`, so the
//! functions' volatility (and the routing decisions that depend on it) is kept per database.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::classify::{ClassifyCache, FunctionInfo, FunctionPolicy};
use crate::config::RoutingConfig;

/// The classifier caches of every database clients have used.
#[derive(Debug)]
pub struct Catalogs {
    caches: Mutex<BTreeMap<String, Arc<ClassifyCache>>>,
    capacity: usize,
    overrides: Mutex<(Vec<String>, Vec<String>)>,
    /// Woken when a database appears, so its functions are loaded at once, and when a
    /// statement may have changed a database's functions, so they are reloaded soon.
    pub new_database: Arc<Notify>,
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
            new_database: Arc::new(Notify::new()),
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
        let cache = Arc::new(ClassifyCache::with_notify(
            self.capacity,
            Some(Arc::clone(&self.new_database)),
        ));
        cache.set_policy(self.unloaded_policy());
        caches.insert(database.to_string(), Arc::clone(&cache));
        drop(caches);
        self.new_database.notify_one();
        cache
    }

    /// Installs every function name read from `database`'s `pg_proc`.
    pub fn set_functions(&self, database: &str, functions: HashMap<String, FunctionInfo>) {
        let cache = self.for_database(database);
        let o = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cache.set_policy(FunctionPolicy::new(Some(functions), o.0, o.1));
    }

    /// Drops `database`'s cache (it does not exist): a client that uses it again creates it
    /// afresh. Sessions holding the old cache keep it (with every call a write).
    pub fn forget(&self, database: &str) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.remove(database);
    }

    /// The databases in which a statement may have changed functions since the last call.
    pub fn take_functions_changed(&self) -> Vec<String> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .iter()
            .filter(|(_, c)| c.take_functions_changed())
            .map(|(k, _)| k.clone())
            .collect()
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
            &a.classify("SELECT pg_catalog.random()")[..],
            &[StatementClass::Read],
            "override applies at once to the built-in"
        );
        assert_eq!(
            &a.classify("SELECT random()")[..],
            &[StatementClass::Write],
            "which schema random() is in is not known yet"
        );
        let info = |may_write| FunctionInfo {
            may_write,
            only_pg_catalog: false,
        };
        c.set_functions(
            "a",
            [
                ("f".to_string(), info(false)),
                ("g".to_string(), info(true)),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(&a.classify("SELECT f()")[..], &[StatementClass::Read]);
        assert_eq!(&a.classify("SELECT g()")[..], &[StatementClass::Write]);
        assert_eq!(
            &a.classify("SELECT h()")[..],
            &[StatementClass::Write],
            "unknown"
        );
        assert!(c.take_functions_changed().is_empty());
        let ddl = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'";
        assert_eq!(&a.classify(ddl)[..], &[StatementClass::Write]);
        assert_eq!(
            &a.classify("SELECT f()")[..],
            &[StatementClass::Write],
            "forgotten until reloaded"
        );
        assert_eq!(c.take_functions_changed(), vec!["a".to_string()]);
        assert!(c.take_functions_changed().is_empty(), "taken");
        let b = c.for_database("b");
        assert_eq!(
            &b.classify("SELECT f()")[..],
            &[StatementClass::Write],
            "b is not loaded"
        );
        assert_eq!(
            c.databases(),
            vec![("a".to_string(), false), ("b".to_string(), false)],
            "a's functions were forgotten after the CREATE FUNCTION"
        );
        assert!(!c.stats().3);
        c.forget("b");
        assert_eq!(c.databases(), vec![("a".to_string(), false)]);
    }
}
