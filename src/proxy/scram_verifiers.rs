//! The SCRAM-SHA-256 verifiers of the configured users. The configuration holds only their
//! passwords; deriving a verifier costs 4096 PBKDF2 rounds, so it is done on a blocking thread
//! (never on a proxy worker), once per (user, password): a reload that leaves a user's password
//! alone keeps its verifier, salt included. [`spawn_refresh`] derives them whenever the
//! configuration changes, before clients ask; a login that comes first derives its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use super::auth::ScramVerifier;
use crate::config::{ClientAuthMethod, Config};

/// (user name, password) → its verifier, derived at most once.
type Cache = HashMap<(String, String), Arc<OnceCell<ScramVerifier>>>;

/// The verifiers of the SCRAM users, by (user, password).
#[derive(Default)]
pub struct ScramVerifiers {
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for ScramVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys hold passwords.
        f.debug_struct("ScramVerifiers").finish_non_exhaustive()
    }
}

impl ScramVerifiers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verifier of `user` with `password`: cached, else derived on a blocking thread (one
    /// derivation however many logins wait for it).
    pub async fn get(&self, user: &str, password: &str) -> ScramVerifier {
        let cell = {
            let mut cache = self.lock();
            let key = (user.to_string(), password.to_string());
            Arc::clone(cache.entry(key).or_default())
        };
        cell.get_or_init(|| derive(password.to_string()))
            .await
            .clone()
    }

    /// Derives the verifiers `config` needs that are not cached yet, and forgets those of
    /// users removed or whose password changed.
    pub async fn update(&self, config: &Config) {
        // With [[access]] rules any user may be asked for SCRAM, whatever its own `auth`.
        let any = !config.access.is_empty();
        let wanted: HashSet<(&str, &str)> = config
            .users
            .iter()
            .filter(|u| any || u.auth == ClientAuthMethod::ScramSha256)
            .filter_map(|u| Some((u.name.as_str(), u.password.as_deref()?)))
            .collect();
        self.lock()
            .retain(|(user, password), _| wanted.contains(&(user.as_str(), password.as_str())));
        for (user, password) in wanted {
            self.get(user, password).await;
        }
    }

    /// How many verifiers are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// PBKDF2 on the blocking pool, so that the async workers keep serving sessions.
async fn derive(password: String) -> ScramVerifier {
    let on_blocking = tokio::task::spawn_blocking(move || ScramVerifier::generate(&password));
    match on_blocking.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down; nothing else is left to do.
        Err(e) => panic!("deriving a SCRAM verifier: {e}"),
    }
}

/// Keeps `verifiers` in step with the configuration: derives them at start and after each
/// reload, on the blocking pool.
pub fn spawn_refresh(
    verifiers: Arc<ScramVerifiers>,
    mut config_rx: watch::Receiver<Arc<Config>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let config = config_rx.borrow_and_update().clone();
            verifiers.update(&config).await;
            if config_rx.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::auth::{AuthError, ScramServer};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn config(users: &str) -> Config {
        Config::parse(
            &format!(
                "[admin]\nsocket = \"/tmp/x.sock\"\n[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nrole = \"auto\"\n[[backends]]\nname = \"pg1\"\nhost = \"h\"\n{users}"
            ),
            std::path::Path::new("t.toml"),
        )
        .expect("valid")
    }

    fn users(app_password: &str) -> Config {
        config(&format!(
            "[[users]]\nname = \"app\"\npassword = \"{app_password}\"\n\
             [[users]]\nname = \"ro\"\npassword = \"ro-secret\"\n\
             [[users]]\nname = \"legacy\"\nauth = \"md5\"\npassword = \"md5-secret\"\n"
        ))
    }

    /// Whether a client that knows `password` logs in against `verifier`.
    fn accepts(verifier: ScramVerifier, password: &str) -> Result<(), AuthError> {
        let mut server = ScramServer::with_random_nonce(verifier);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).expect("server-first");
        let server_final = server.client_final(client.message())?;
        client.finish(&server_final).expect("server signature");
        Ok(())
    }

    #[tokio::test]
    async fn a_reload_keeps_the_verifier_of_an_unchanged_password_and_replaces_a_changed_one() {
        let v = ScramVerifiers::new();
        v.update(&users("app-secret")).await;
        assert_eq!(v.len(), 2, "the SCRAM users only, not the MD5 one");
        let app = v.get("app", "app-secret").await;
        let ro = v.get("ro", "ro-secret").await;
        accepts(app.clone(), "app-secret").expect("app logs in");
        assert_eq!(accepts(app.clone(), "wrong"), Err(AuthError::WrongPassword));

        // The same users again: identical verifiers, salt included.
        v.update(&users("app-secret")).await;
        let same = v.get("app", "app-secret").await;
        assert_eq!(same, app);
        assert_eq!(same.to_stored_string(), app.to_stored_string());
        assert_eq!(v.len(), 2);

        // app's password changes: a new verifier for it (and the old one is forgotten); ro
        // keeps its own.
        v.update(&users("new-secret")).await;
        assert_eq!(v.len(), 2);
        let changed = v.get("app", "new-secret").await;
        assert_ne!(changed, app);
        accepts(changed, "new-secret").expect("the new password logs in");
        assert_eq!(v.get("ro", "ro-secret").await, ro);

        // Users removed are forgotten.
        v.update(&config("")).await;
        assert!(v.is_empty());
    }

    #[tokio::test]
    async fn concurrent_first_logins_share_one_derivation() {
        let v = ScramVerifiers::new();
        let (a, b) = tokio::join!(v.get("app", "pw"), v.get("app", "pw"));
        assert_eq!(a, b, "one salt, not one per login");
        accepts(a, "pw").expect("logs in");
    }
}
