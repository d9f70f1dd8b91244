//! `[[listeners]]` and `[[backends]]`: what clients connect to and the PostgreSQL servers
//! behind it.

use std::collections::HashSet;

use toml::Spanned;

use std::net::SocketAddr;

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
            if b.host.is_empty() {
                return Err(self.err(span, &key("host"), "must not be empty"));
            }
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
                host: b.host,
                port,
                weight,
                sslmode,
            });
        }
        Ok(out)
    }
}
