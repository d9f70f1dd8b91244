//! `[[access]]`: ordered rules, in the spirit of PostgreSQL's `pg_hba.conf`, that decide by
//! the client's address, the listener, the database, the user and TLS how a client must
//! authenticate, or that it may not log in at all. The first rule that matches decides
//! (`proxy::access::decide`); with rules but none matching, the login is refused. Without any
//! rule each user's own `auth` applies, as before rules existed.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ListenerConfig, Validator};

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    // Spanned per key, so an error points at the offending key's line.
    address: Spanned<String>,
    listener: Option<Spanned<Vec<String>>>,
    database: Option<Spanned<Vec<String>>>,
    user: Option<Spanned<Vec<String>>>,
    tls: Option<bool>,
    method: Spanned<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

/// What a matching rule asks of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMethod {
    ScramSha256,
    Md5,
    /// No password: whoever reaches the listener from the rule's network is let in.
    Trust,
    /// Refused before any authentication (FATAL 28000).
    Reject,
}

/// A set of names, or every name (`"all"`, as in `pg_hba.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSet {
    All,
    Names(Vec<String>),
}

impl NameSet {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::All => true,
            NameSet::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

/// One `[[access]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// The client network; `None`: every address (`"all"`).
    pub network: Option<IpNet>,
    pub listeners: NameSet,
    pub databases: NameSet,
    pub users: NameSet,
    /// `Some(true)`: only TLS connections (`[tls]`), `Some(false)`: only clear ones, `None`:
    /// both.
    pub tls: Option<bool>,
    pub method: AccessMethod,
}

impl Validator<'_> {
    /// Validates the rules; trust rules open to more than loopback are added to `warnings`.
    pub(super) fn access(
        &self,
        raw: Vec<Spanned<RawAccess>>,
        listeners: &[ListenerConfig],
        warnings: &mut Vec<String>,
    ) -> Result<Vec<AccessRule>, ConfigError> {
        let listener_names: HashSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let r = item.into_inner();
            let key = |k: &str| format!("access[{i}].{k}");
            let network = self.access_network(&r.address, &key("address"))?;
            let listener_span = r.listener.as_ref().map_or(span.clone(), |l| l.span());
            let listeners = self.names(r.listener, span.clone(), &key("listener"))?;
            if let NameSet::Names(names) = &listeners {
                if let Some(unknown) = names.iter().find(|n| !listener_names.contains(n.as_str())) {
                    return Err(self.err(
                        listener_span,
                        &key("listener"),
                        format!("no listener named {unknown:?}"),
                    ));
                }
            }
            let method = self.access_method(&r.method, &key("method"))?;
            if method == AccessMethod::Trust && !is_loopback(network) {
                warnings.push(format!(
                    "{}:{}: {}: \"trust\" lets anyone from {} log in without a password",
                    self.path,
                    self.line_of(r.method.span().start),
                    key("method"),
                    network.map_or("any address".to_string(), |n| n.to_string()),
                ));
            }
            out.push(AccessRule {
                network,
                listeners,
                databases: self.names(r.database, span.clone(), &key("database"))?,
                users: self.names(r.user, span, &key("user"))?,
                tls: r.tls,
                method,
            });
        }
        Ok(out)
    }

    /// `"all"`, a CIDR network or a single address (a /32 or /128).
    fn access_network(
        &self,
        raw: &Spanned<String>,
        key: &str,
    ) -> Result<Option<IpNet>, ConfigError> {
        let text = raw.get_ref().trim();
        if text == "all" {
            return Ok(None);
        }
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(self.err(
                        raw.span(),
                        key,
                        format!("{text:?} is not \"all\", an address or a CIDR network"),
                    ))
                }
            },
        };
        // 10.1.2.3/8 is most likely a typo for a host or for 10.0.0.0/8: say which was meant
        // rather than guess.
        if net.trunc() != net {
            return Err(self.err(
                raw.span(),
                key,
                format!("{net} has host bits set; write {}", net.trunc()),
            ));
        }
        Ok(Some(net))
    }

    fn access_method(&self, raw: &Spanned<String>, key: &str) -> Result<AccessMethod, ConfigError> {
        match raw.get_ref().as_str() {
            "scram-sha-256" => Ok(AccessMethod::ScramSha256),
            "md5" => Ok(AccessMethod::Md5),
            "trust" => Ok(AccessMethod::Trust),
            "reject" => Ok(AccessMethod::Reject),
            other => Err(self.err(
                raw.span(),
                key,
                format!(
                    "unknown method {other:?}; expected \"scram-sha-256\", \"md5\", \"trust\" \
                     or \"reject\""
                ),
            )),
        }
    }

    /// A list of names; `"all"` in it (or no list) means every name.
    fn names(
        &self,
        raw: Option<Spanned<Vec<String>>>,
        rule_span: std::ops::Range<usize>,
        key: &str,
    ) -> Result<NameSet, ConfigError> {
        let Some(raw) = raw else {
            return Ok(NameSet::All);
        };
        let span = raw.span();
        let names = raw.into_inner();
        if names.is_empty() || names.iter().any(|n| n.is_empty()) {
            let span = if span.is_empty() { rule_span } else { span };
            return Err(self.err(
                span,
                key,
                "must list names, or \"all\" (an empty list would match nothing)",
            ));
        }
        if names.iter().any(|n| n == "all") {
            return Ok(NameSet::All);
        }
        Ok(NameSet::Names(names))
    }
}

/// Whether every address of `network` is a loopback address (None: every address).
fn is_loopback(network: Option<IpNet>) -> bool {
    match network {
        None => false,
        Some(net) => net.network().is_loopback() && net.broadcast().is_loopback(),
    }
}
