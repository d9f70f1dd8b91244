//! `[pool]`: how backend connections are shared between client sessions.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{split, ConfigError, Validator};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    mode: Option<String>,
    connect: Option<String>,
    max_idle_per_key: Option<i64>,
    idle_timeout_ms: Option<i64>,
    max_lifetime_ms: Option<i64>,
    max_server_connections: Option<i64>,
    max_server_connections_per_user_database: Option<i64>,
    checkout_timeout_ms: Option<i64>,
}

/// How backend connections are reused between client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// Every client session opens its own backend connections and closes them at its end.
    None,
    /// A client session owns its backend connections; at its end they are reset with
    /// `DISCARD ALL` and kept for the next session of the same user, database and parameters.
    Session,
    /// A client holds a backend connection for a transaction (or an autocommit statement, or
    /// an extended batch up to Sync) and gives it back when ReadyForQuery says idle, unless
    /// it created state that cannot move (then it keeps the connection: pinned).
    Transaction,
}

/// When a session-mode session opens its first server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerConnect {
    /// At its first statement: a client that logs in and sends nothing holds no server
    /// connection. Its BackendKeyData carries a process ID pgcast issues (above any Linux PID),
    /// since no server process exists yet.
    OnDemand,
    /// At login, so BackendKeyData carries the real process ID of the session's connection,
    /// as `pg_backend_pid()` reports it. Session mode only: `none` always connects at login
    /// and `transaction` never does.
    AtLogin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    pub connect: ServerConnect,
    /// Idle connections kept per (backend, user, database, startup parameters).
    pub max_idle_per_key: usize,
    /// An idle connection unused for this long is closed.
    pub idle_timeout: Duration,
    /// A connection older than this is closed instead of being reused.
    pub max_lifetime: Duration,
    /// Server connections per backend from this balancer, in sessions and idle together
    /// (none: no cap).
    pub max_server_connections: Option<usize>,
    /// Server connections per (backend, user, database) from this balancer, in sessions and
    /// idle together (none: no cap). A connection needs a share of this cap and of
    /// `max_server_connections`.
    pub max_server_connections_per_user_database: Option<usize>,
    /// How long a session waits for a server connection when a cap is reached.
    pub checkout_timeout: Duration,
}

impl PoolConfig {
    /// Whether a session opens a server connection at login and keeps it, telling the client
    /// that connection's real process ID.
    pub fn connects_at_login(&self) -> bool {
        match self.mode {
            PoolMode::None => true,
            PoolMode::Session => self.connect == ServerConnect::AtLogin,
            PoolMode::Transaction => false,
        }
    }
}

impl Validator<'_> {
    pub(super) fn pool(&self, raw: Option<Spanned<RawPool>>) -> Result<PoolConfig, ConfigError> {
        let (ps, p) = split(raw);
        let mode = match p.mode.as_deref() {
            None | Some("session") => PoolMode::Session,
            Some("none") => PoolMode::None,
            Some("transaction") => PoolMode::Transaction,
            Some(other) => {
                return Err(self.err(
                    ps,
                    "pool.mode",
                    format!(
                        "unknown mode {other:?}; expected \"session\", \"transaction\" or \"none\""
                    ),
                ))
            }
        };
        let connect = match p.connect.as_deref() {
            None | Some("on_demand") => ServerConnect::OnDemand,
            Some("at_login") => ServerConnect::AtLogin,
            Some(other) => {
                return Err(self.err(
                    ps,
                    "pool.connect",
                    format!("unknown value {other:?}; expected \"on_demand\" or \"at_login\""),
                ))
            }
        };
        let optional_cap = |key: &str, value: Option<i64>| match value {
            None => Ok(None),
            Some(n) => self
                .count(&ps, key, Some(n), 0, 1, 1_000_000)
                .map(|n| Some(n as usize)),
        };
        let max_server_connections =
            optional_cap("pool.max_server_connections", p.max_server_connections)?;
        let max_server_connections_per_user_database = optional_cap(
            "pool.max_server_connections_per_user_database",
            p.max_server_connections_per_user_database,
        )?;
        Ok(PoolConfig {
            mode,
            connect,
            max_idle_per_key: self.count(
                &ps,
                "pool.max_idle_per_key",
                p.max_idle_per_key,
                100,
                0,
                100_000,
            )? as usize,
            idle_timeout: self.ms(&ps, "pool.idle_timeout_ms", p.idle_timeout_ms, 60_000, 100)?,
            max_lifetime: self.ms(
                &ps,
                "pool.max_lifetime_ms",
                p.max_lifetime_ms,
                3_600_000,
                100,
            )?,
            max_server_connections,
            max_server_connections_per_user_database,
            checkout_timeout: self.ms(
                &ps,
                "pool.checkout_timeout_ms",
                p.checkout_timeout_ms,
                5_000,
                1,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::merge_reload;
    use super::super::tests::{parse, MINIMAL};
    use super::{PoolMode, ServerConnect};

    #[test]
    fn pool_connect_defaults_to_on_demand_and_names_a_bad_value() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.pool.connect, ServerConnect::OnDemand);
        assert!(!c.pool.connects_at_login());
        let c = parse(&format!("{MINIMAL}\n[pool]\nconnect = \"at_login\"\n")).unwrap();
        assert!(c.pool.connects_at_login());
        let c = parse(&format!(
            "{MINIMAL}\n[pool]\nmode = \"transaction\"\nconnect = \"at_login\"\n"
        ))
        .unwrap();
        assert_eq!(c.pool.mode, PoolMode::Transaction);
        assert!(
            !c.pool.connects_at_login(),
            "transaction mode never connects at login"
        );
        let c = parse(&format!("{MINIMAL}\n[pool]\nmode = \"none\"\n")).unwrap();
        assert!(
            c.pool.connects_at_login(),
            "without a pool every session connects at login"
        );
        let e = parse(&format!("{MINIMAL}\n\n[pool]\nconnect = \"later\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pool.connect") && e.contains("\"later\""), "{e}");
    }

    /// (value, what the key becomes or the text of the error).
    #[test]
    fn the_user_database_cap_is_a_count_named_in_its_errors() {
        let key = "max_server_connections_per_user_database";
        let table: [(&str, Result<Option<usize>, &str>); 5] = [
            ("", Ok(None)),
            ("= 1", Ok(Some(1))),
            ("= 1000000", Ok(Some(1_000_000))),
            ("= 0", Err("must be between 1 and 1000000, got 0")),
            ("= -3", Err("must be between 1 and 1000000, got -3")),
        ];
        for (value, expected) in table {
            let line = if value.is_empty() {
                String::new()
            } else {
                format!("{key} {value}\n")
            };
            let got = parse(&format!("{MINIMAL}\n[pool]\n{line}"));
            match (got, expected) {
                (Ok(c), Ok(cap)) => {
                    assert_eq!(c.pool.max_server_connections_per_user_database, cap)
                }
                (Err(e), Err(text)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains(&format!("pool.{key}")) && e.contains(text),
                        "{e}"
                    );
                    assert!(e.contains("test.toml:"), "names the file and line: {e}");
                }
                (got, expected) => panic!("{value}: got {got:?}, expected {expected:?}"),
            }
        }
        let e = parse(&format!(
            "{MINIMAL}\n[pool]\nmax_connections_per_user = 2\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_connections_per_user"),
            "unknown keys stay refused: {e}"
        );
    }

    #[test]
    fn a_changed_user_database_cap_needs_a_restart() {
        let old = parse(&format!(
            "{MINIMAL}\n[pool]\nmax_server_connections_per_user_database = 2\n"
        ))
        .unwrap();
        let new = parse(&format!(
            "{MINIMAL}\n[pool]\nmax_server_connections_per_user_database = 5\n\
             checkout_timeout_ms = 250\n"
        ))
        .unwrap();
        let (merged, report) = merge_reload(&old, new);
        assert_eq!(
            report.restart_needed,
            ["[pool] max_server_connections_per_user_database"]
        );
        assert_eq!(report.applied, ["[pool]"]);
        assert_eq!(
            merged.pool.max_server_connections_per_user_database,
            Some(2)
        );
        assert_eq!(merged.pool.checkout_timeout.as_millis(), 250);
    }
}
