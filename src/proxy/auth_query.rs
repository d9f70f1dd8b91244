//! Users that are not in `[[users]]`, looked up on the primary with `[auth_query]` (as
//! PgBouncer's `auth_query`): the configured SQL returns the user's stored password, pgcast
//! checks the client against it (`client_auth.rs`) and logs in to the backends with the
//! client's proven SCRAM keys or the MD5 hash (`backend_auth.rs`). Answers, found or not, are
//! cached for `ttl_ms`, so a user removed from the lookup can still log in until its entry
//! expires, and a flood of logins costs one query per user name and TTL. Failed lookups
//! (primary down, a query error) are not cached: the login fails and the next one asks again.
//! At most [`MAX_CONCURRENT_LOOKUPS`] run at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use crate::backend_tls::CurrentBackendTls;
use crate::config::{AuthQueryConfig, Config, PasswordHash, UserConfig};
use crate::health::{self, ClusterView};

/// At most this many user names are cached; past it expired entries are dropped, and if the
/// cache is still full a name is looked up without being kept (strangers trying many names
/// cannot grow it without bound).
const MAX_ENTRIES: usize = 10_000;
/// Lookups running at once, each on a connection of its own to the primary: strangers trying
/// many names at once wait for their turn (within the start-up timeout) instead of filling the
/// primary's `max_connections`.
const MAX_CONCURRENT_LOOKUPS: usize = 4;

/// Why a lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no primary to ask")]
    NoPrimary,
    #[error("{0}")]
    Connect(#[from] health::HealthError),
    #[error("auth_query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("auth_query took longer than {0:?}")]
    Timeout(Duration),
    #[error("shutting down")]
    Closed,
}

/// One user name's answer: `None` inside is "no such user".
type Answer = Arc<OnceCell<Option<PasswordHash>>>;

struct Entry {
    since: Instant,
    answer: Answer,
}

/// The longest role name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_ROLE_NAME: usize = 63;
/// The cache of looked-up users, shared by all sessions.
pub struct AuthQueryCache {
    state: Mutex<CacheState>,
    lookups: Semaphore,
}

impl Default for AuthQueryCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            lookups: Semaphore::new(MAX_CONCURRENT_LOOKUPS),
        }
    }
}

#[derive(Default)]
struct CacheState {
    /// The query the entries answered: another one (a reload) empties the cache.
    query: String,
    entries: HashMap<String, Entry>,
}

impl AuthQueryCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The user `name` as the lookup describes it, or `None` (no `[auth_query]`, no such
    /// user, or the lookup failed: logged). A lookup connects to the primary with `tls`.
    pub async fn user(
        &self,
        name: &str,
        config: &Config,
        cluster: &ClusterView,
        tls: &CurrentBackendTls,
    ) -> Option<Arc<UserConfig>> {
        let aq = config.auth_query.as_ref()?;
        // PostgreSQL truncates role names to NAMEDATALEN - 1 = 63 bytes: a longer one names
        // no role, and looking it up would let a stranger fill the cache with 10 KB names.
        if name.len() > MAX_ROLE_NAME {
            return None;
        }
        let answer = self.answer(name, aq, Instant::now());
        let looked_up = answer
            .get_or_try_init(|| async {
                let _turn = self
                    .lookups
                    .acquire()
                    .await
                    .map_err(|_| LookupError::Closed)?;
                lookup(name, aq, config, cluster, tls).await
            })
            .await;
        let hash = match looked_up {
            Ok(hash) => hash.clone()?,
            Err(e) => {
                crate::log_limited!(warn, user = %name, error = %e, "auth_query lookup failed");
                return None;
            }
        };
        Some(Arc::new(UserConfig {
            name: name.to_string(),
            auth: hash.method(),
            password: None,
            password_hash: Some(hash),
            backend_password: None,
        }))
    }

    /// The cell holding `name`'s answer: cached if younger than the TTL, else a new one.
    fn answer(&self, name: &str, aq: &AuthQueryConfig, now: Instant) -> Answer {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.query != aq.query {
            state.query = aq.query.clone();
            state.entries.clear();
        }
        let fresh = |e: &Entry| now.saturating_duration_since(e.since) < aq.ttl;
        if let Some(e) = state.entries.get(name).filter(|e| fresh(e)) {
            return Arc::clone(&e.answer);
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.retain(|_, e| fresh(e));
        }
        let answer = Answer::default();
        if state.entries.len() < MAX_ENTRIES || state.entries.contains_key(name) {
            let entry = Entry {
                since: now,
                answer: Arc::clone(&answer),
            };
            state.entries.insert(name.to_string(), entry);
        }
        answer
    }
}

/// Runs the query on the primary as the health user.
async fn lookup(
    name: &str,
    aq: &AuthQueryConfig,
    config: &Config,
    cluster: &ClusterView,
    tls: &CurrentBackendTls,
) -> Result<Option<PasswordHash>, LookupError> {
    let primary = cluster.primary_backend().ok_or(LookupError::NoPrimary)?;
    let timeout = config.health.timeout;
    let ask = async {
        let client = health::connect(
            &primary.host,
            primary.port,
            &aq.database,
            &config.health,
            (
                config.sslmode_of(&primary.host, primary.port),
                &tls.current(),
            ),
        )
        .await?;
        let row = client.query_opt(aq.query.as_str(), &[&name]).await?;
        Ok::<_, LookupError>(row.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?)
    };
    let stored = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| LookupError::Timeout(timeout))??
        .flatten();
    let Some(stored) = stored else {
        return Ok(None);
    };
    let hash = PasswordHash::parse(&stored);
    if hash.is_none() {
        // A role without a usable password (e.g. a plaintext one in an old pg_authid) cannot
        // log in through pgcast; never log what it was.
        crate::log_limited!(warn, user = %name, "auth_query returned neither a SCRAM verifier nor an MD5 hash");
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aq(query: &str, ttl_ms: u64) -> AuthQueryConfig {
        AuthQueryConfig {
            query: query.to_string(),
            database: "postgres".to_string(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    #[tokio::test]
    async fn answers_are_kept_for_the_ttl_and_forgotten_when_the_query_changes() {
        let cache = AuthQueryCache::new();
        let q = aq("SELECT f($1)", 1000);
        let t0 = Instant::now();
        let first = cache.answer("app", &q, t0);
        first.set(None).expect("empty");
        let hit = cache.answer("app", &q, t0 + Duration::from_millis(999));
        assert!(Arc::ptr_eq(&first, &hit), "a hit within the TTL");
        assert!(hit.initialized());
        let expired = cache.answer("app", &q, t0 + Duration::from_millis(1000));
        assert!(!Arc::ptr_eq(&first, &expired), "asked again after the TTL");
        let other = cache.answer("app", &aq("SELECT g($1)", 1000), t0);
        assert!(
            !Arc::ptr_eq(&expired, &other),
            "another query, another answer"
        );
        assert!(!Arc::ptr_eq(
            &other,
            &cache.answer("bob", &aq("SELECT g($1)", 1000), t0)
        ));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = AuthQueryCache::default();
        let q = aq("SELECT f($1)", 1000);
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 5 {
            cache.answer(&format!("u{i}"), &q, t0);
        }
        assert_eq!(cache.state.lock().unwrap().entries.len(), MAX_ENTRIES);
        // Once they expired, new names are kept again.
        cache.answer("late", &q, t0 + Duration::from_secs(2));
        let state = cache.state.lock().unwrap();
        assert_eq!(state.entries.len(), 1);
        assert!(state.entries.contains_key("late"));
    }
}
