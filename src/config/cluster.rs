//! `[[listeners]]` and `[[backends]]`: what clients connect to and the PostgreSQL servers
//! behind it.

use std::collections::HashSet;

use toml::Spanned;

use std::net::{Ipv6Addr, SocketAddr};

use super::{
    BackendConfig, BackendTlsConfig, ConfigError, ListenerConfig, RawBackend, RawListener,
    Validator,
};

impl Validator<'_> {
    pub(super) fn listeners(
        &self,
        raw: Vec<Spanned<RawListener>>,
        tls_configured: bool,
    ) -> Result<Vec<ListenerConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                0..0,
                "listeners",
                "at least one [[listeners]] entry is required",
            ));
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let l = item.into_inner();
            let key = |k: &str| format!("listeners[{i}].{k}");
            if !names.insert(l.name.clone()) {
                return Err(self.err(
                    span,
                    &key("name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            let address: SocketAddr = l.address.parse().map_err(|e| {
                self.err(
                    span.clone(),
                    &key("address"),
                    format!("not an address:port ({e})"),
                )
            })?;
            if !addrs.insert(address) {
                return Err(self.err(
                    span,
                    &key("address"),
                    format!("{address} is used by another listener"),
                ));
            }
            let tls = self.listener_tls(span, &key("tls"), l.tls.as_deref(), tls_configured)?;
            out.push(ListenerConfig {
                name: l.name,
                address,
                role: l.role,
                tls,
            });
        }
        Ok(out)
    }

    /// `name` is not empty and not in `seen` (then it is added).
    pub(super) fn unique_name(
        &self,
        seen: &mut HashSet<String>,
        name: &str,
        span: &std::ops::Range<usize>,
        key: &str,
        what: &str,
    ) -> Result<(), ConfigError> {
        if name.is_empty() || !seen.insert(name.to_string()) {
            return Err(self.err(
                span.clone(),
                key,
                format!("empty or duplicate {what} name {name:?}"),
            ));
        }
        Ok(())
    }

    pub(super) fn backends(
        &self,
        raw: Vec<Spanned<RawBackend>>,
        tls: &BackendTlsConfig,
        tls_span: std::ops::Range<usize>,
    ) -> Result<Vec<BackendConfig>, ConfigError> {
        if tls.sslmode.verifies() && tls.ca.is_none() {
            return Err(self.err(
                tls_span,
                "backend_tls.ca",
                "verify-ca and verify-full need the CA certificates (a PEM file)",
            ));
        }
        if raw.is_empty() {
            return Err(self.err(
                0..0,
                "backends",
                "at least one [[backends]] entry is required",
            ));
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let b = item.into_inner();
            let key = |k: &str| format!("backends[{i}].{k}");
            self.unique_name(&mut names, &b.name, &span, &key("name"), "backend")?;
            let host = self.backend_host(&span, &key("host"), b.host)?;
            let port = self.count(&span, &key("port"), b.port, 5432, 1, 65535)? as u16;
            let weight = self.count(&span, &key("weight"), b.weight, 1, 0, 1000)? as u32;
            let sslmode = match b.sslmode.as_deref() {
                None => tls.sslmode,
                Some(v) => self.sslmode(span.clone(), &key("sslmode"), v)?,
            };
            if sslmode.verifies() && tls.ca.is_none() {
                return Err(self.err(
                    span,
                    &key("sslmode"),
                    "verify-ca and verify-full need [backend_tls] ca (a PEM file)",
                ));
            }
            out.push(BackendConfig {
                name: b.name,
                host,
                port,
                weight,
                sslmode,
            });
        }
        Ok(out)
    }

    /// A host name or an IP address. An IPv6 address may be written with brackets, as in a
    /// URL; it is kept without them, as libpq's `host` takes it.
    fn backend_host(
        &self,
        span: &std::ops::Range<usize>,
        key: &str,
        host: String,
    ) -> Result<String, ConfigError> {
        let bare = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner.to_string(),
            None => host,
        };
        if bare.is_empty() {
            return Err(self.err(span.clone(), key, "must not be empty"));
        }
        if bare.contains(':') && bare.parse::<Ipv6Addr>().is_err() {
            return Err(self.err(
                span.clone(),
                key,
                format!(
                    "{bare:?} is neither a host name nor an IP address (give the port as port)"
                ),
            ));
        }
        Ok(bare)
    }
}

/// `host:port` as an address is written: an IPv6 address in brackets (`[::1]:5432`).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::ConfigError;

    fn backend_host(written: &str) -> Result<String, ConfigError> {
        let text = MINIMAL.replace("host = \"127.0.0.1\"", &format!("host = {written:?}"));
        parse(&text).map(|c| c.backends[0].host.clone())
    }

    #[test]
    fn backend_hosts_are_names_or_addresses_ipv6_with_or_without_brackets() {
        assert_eq!(backend_host("db1.example").unwrap(), "db1.example");
        assert_eq!(backend_host("10.0.0.5").unwrap(), "10.0.0.5");
        assert_eq!(backend_host("::1").unwrap(), "::1");
        assert_eq!(backend_host("[2001:db8::5]").unwrap(), "2001:db8::5");
        for bad in ["", "[]", "10.0.0.5:5432", "db1:5432", "[::1]:5432"] {
            let e = backend_host(bad).expect_err(bad).to_string();
            assert!(e.contains("backends[0].host"), "{bad}: {e}");
            assert!(e.starts_with("test.toml:10: "), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_are_written_with_ipv6_in_brackets() {
        assert_eq!(host_port("10.0.0.5", 5432), "10.0.0.5:5432");
        assert_eq!(host_port("db1.example", 6432), "db1.example:6432");
        assert_eq!(host_port("::1", 5432), "[::1]:5432");
        assert_eq!(host_port("2001:db8::5", 5433), "[2001:db8::5]:5433");
    }
}
