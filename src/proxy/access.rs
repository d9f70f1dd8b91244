//! Which `[[access]]` rule applies to a new client, as pure code: the first rule whose
//! network, listener, database, user and TLS match decides, as in PostgreSQL's
//! `pg_hba.conf` (<https://www.postgresql.org/docs/15/auth-pg-hba-conf.html>). The refusals
//! keep the shape of PostgreSQL 15's (`src/backend/libpq/auth.c`, `ClientAuthentication`), with
//! "pgcast access rules" where PostgreSQL names its file, so a client or an operator who knows
//! one recognises the other.

use std::net::IpAddr;

use crate::config::{AccessMethod, AccessRule, ClientAuthMethod};

/// What is known about a client when its start-up packet has arrived.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client's address (`None` if the socket could not tell).
    pub address: Option<IpAddr>,
    pub listener: &'a str,
    pub database: &'a str,
    pub user: &'a str,
    pub tls: bool,
}

/// The outcome of the rules for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `[[access]]` rule is configured: the user's own `auth` applies.
    NoRules,
    /// Rule `rule` (its index in the file) matched and asks for `method`.
    Matched { rule: usize, method: AccessMethod },
    /// Rules are configured and none matched: refused.
    NoMatch,
}

/// The first rule that matches `facts` decides.
pub fn decide(rules: &[AccessRule], facts: &Facts<'_>) -> Verdict {
    if rules.is_empty() {
        return Verdict::NoRules;
    }
    rules
        .iter()
        .position(|r| matches(r, facts))
        .map_or(Verdict::NoMatch, |rule| Verdict::Matched {
            rule,
            method: rules[rule].method,
        })
}

fn matches(rule: &AccessRule, facts: &Facts<'_>) -> bool {
    let network = match (rule.network, facts.address) {
        (None, _) => true,
        // A client of a dual-stack listener shows as ::ffff:a.b.c.d; IPv4 rules mean it too.
        (Some(net), Some(addr)) => net.contains(&addr.to_canonical()),
        (Some(_), None) => false,
    };
    network
        && rule.listeners.contains(facts.listener)
        && rule.databases.contains(facts.database)
        && rule.users.contains(facts.user)
        && rule.tls.is_none_or(|tls| tls == facts.tls)
}

/// The method the matched rule asks for; `None` when no rule is configured (each user's own
/// `auth` applies) or the client is refused ([`refusal`] says how).
pub fn rule_method(verdict: Verdict) -> Option<ClientAuthMethod> {
    match verdict {
        Verdict::Matched { method, .. } => match method {
            AccessMethod::ScramSha256 => Some(ClientAuthMethod::ScramSha256),
            AccessMethod::Md5 => Some(ClientAuthMethod::Md5),
            AccessMethod::Trust => Some(ClientAuthMethod::Trust),
            AccessMethod::Reject => None,
        },
        Verdict::NoRules | Verdict::NoMatch => None,
    }
}

/// The FATAL message (SQLSTATE 28000) for a client the rules refuse, or `None` when they let
/// it go on to authentication.
pub fn refusal(verdict: Verdict, facts: &Facts<'_>) -> Option<String> {
    // Formatted only for a refusal: this runs at every login.
    let opening = match verdict {
        Verdict::NoMatch => "no pgcast access rule for",
        Verdict::Matched {
            method: AccessMethod::Reject,
            ..
        } => "pgcast access rules reject connection for",
        Verdict::NoRules | Verdict::Matched { .. } => return None,
    };
    let host = facts
        .address
        .map_or_else(|| "[unknown]".to_string(), |a| a.to_canonical().to_string());
    let (user, database) = (facts.user, facts.database);
    // PostgreSQL 15 names the encryption last: "SSL encryption", "GSS encryption" or
    // "no encryption".
    let encryption = if facts.tls {
        "SSL encryption"
    } else {
        "no encryption"
    };
    Some(format!(
        "{opening} host \"{host}\", user \"{user}\", database \"{database}\", {encryption}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NameSet;

    fn names(list: &[&str]) -> NameSet {
        NameSet::Names(list.iter().map(|s| s.to_string()).collect())
    }

    fn rule(network: Option<&str>, method: AccessMethod) -> AccessRule {
        AccessRule {
            network: network.map(|n| n.parse().expect("CIDR")),
            listeners: NameSet::All,
            databases: NameSet::All,
            users: NameSet::All,
            tls: None,
            method,
        }
    }

    fn facts<'a>(address: &str, listener: &'a str, database: &'a str, user: &'a str) -> Facts<'a> {
        Facts {
            address: Some(address.parse().expect("address")),
            listener,
            database,
            user,
            tls: false,
        }
    }

    fn rules() -> Vec<AccessRule> {
        use AccessMethod::*;
        vec![
            // 0: the admin user only from the office, on any listener.
            AccessRule {
                users: names(&["admin"]),
                ..rule(Some("192.0.2.0/24"), ScramSha256)
            },
            // 1: nobody else as admin.
            AccessRule {
                users: names(&["admin"]),
                ..rule(None, Reject)
            },
            // 2: local monitoring without a password, on the replica listener only.
            AccessRule {
                listeners: names(&["ro"]),
                users: names(&["monitor"]),
                ..rule(Some("127.0.0.0/8"), Trust)
            },
            // 3: the legacy database with md5 from the application network.
            AccessRule {
                databases: names(&["legacy"]),
                ..rule(Some("10.0.0.0/8"), Md5)
            },
            // 4: TLS connections only.
            AccessRule {
                tls: Some(true),
                ..rule(Some("2001:db8::/32"), ScramSha256)
            },
            // 5: everyone else in 10/8 and 2001:db8::/32 without TLS.
            rule(Some("10.0.0.0/8"), ScramSha256),
            AccessRule {
                tls: Some(false),
                ..rule(Some("2001:db8::/32"), Md5)
            },
        ]
    }

    #[test]
    fn first_matching_rule_decides() {
        use AccessMethod::*;
        // (address, listener, database, user, the rule that decides and its method)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            Expected,
        );
        type Expected = Option<(usize, AccessMethod)>;
        let cases: &[Case] = &[
            ("192.0.2.7", "rw", "app", "admin", Some((0, ScramSha256))),
            ("10.1.1.1", "rw", "app", "admin", Some((1, Reject))),
            ("127.0.0.1", "ro", "app", "monitor", Some((2, Trust))),
            // The wrong listener: no trust; and 127/8 is in no later rule.
            ("127.0.0.1", "rw", "app", "monitor", None),
            ("10.2.3.4", "rw", "legacy", "app", Some((3, Md5))),
            ("10.2.3.4", "rw", "app", "app", Some((5, ScramSha256))),
            // A dual-stack listener's IPv4 client.
            (
                "::ffff:10.2.3.4",
                "rw",
                "app",
                "app",
                Some((5, ScramSha256)),
            ),
            // Not TLS: rule 4 is skipped.
            ("2001:db8::1", "rw", "app", "app", Some((6, Md5))),
            // The wrong network.
            ("198.51.100.1", "rw", "app", "app", None),
            ("2001:db9::1", "rw", "app", "app", None),
        ];
        let rules = rules();
        for &(address, listener, database, user, want) in cases {
            let f = facts(address, listener, database, user);
            let want = want.map_or(Verdict::NoMatch, |(rule, method)| Verdict::Matched {
                rule,
                method,
            });
            assert_eq!(decide(&rules, &f), want, "{f:?}");
        }
        let tls = Facts {
            tls: true,
            ..facts("2001:db8::1", "rw", "app", "app")
        };
        assert_eq!(
            decide(&rules, &tls),
            Verdict::Matched {
                rule: 4,
                method: ScramSha256
            }
        );
    }

    #[test]
    fn no_rules_keep_the_users_own_method_and_an_unknown_address_matches_only_all() {
        let f = facts("10.0.0.1", "rw", "app", "app");
        assert_eq!(decide(&[], &f), Verdict::NoRules);
        assert_eq!(refusal(Verdict::NoRules, &f), None);
        let unknown = Facts { address: None, ..f };
        assert_eq!(decide(&rules(), &unknown), Verdict::NoMatch);
        let all = [rule(None, AccessMethod::Md5)];
        assert_eq!(
            decide(&all, &unknown),
            Verdict::Matched {
                rule: 0,
                method: AccessMethod::Md5
            }
        );
    }

    #[test]
    fn refusals_have_postgresqls_shape() {
        let f = facts("::ffff:10.9.8.7", "rw", "app", "bob");
        let reject = Verdict::Matched {
            rule: 1,
            method: AccessMethod::Reject,
        };
        assert_eq!(
            refusal(reject, &f).as_deref(),
            Some(
                "pgcast access rules reject connection for host \"10.9.8.7\", user \"bob\", \
                 database \"app\", no encryption"
            )
        );
        assert_eq!(
            refusal(Verdict::NoMatch, &f).as_deref(),
            Some("no pgcast access rule for host \"10.9.8.7\", user \"bob\", database \"app\", no encryption")
        );
        let trust = Verdict::Matched {
            rule: 0,
            method: AccessMethod::Trust,
        };
        assert_eq!(refusal(trust, &f), None);
    }

    #[test]
    fn the_rules_method() {
        use ClientAuthMethod as C;
        let matched = |method| Verdict::Matched { rule: 0, method };
        assert_eq!(rule_method(matched(AccessMethod::Md5)), Some(C::Md5));
        assert_eq!(
            rule_method(matched(AccessMethod::ScramSha256)),
            Some(C::ScramSha256)
        );
        assert_eq!(rule_method(matched(AccessMethod::Trust)), Some(C::Trust));
        assert_eq!(rule_method(matched(AccessMethod::Reject)), None);
        assert_eq!(rule_method(Verdict::NoRules), None);
        assert_eq!(rule_method(Verdict::NoMatch), None);
    }
}
