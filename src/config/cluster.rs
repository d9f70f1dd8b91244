//! `[[listeners]]`, `[[backends]]` and `[[users]]`: what clients connect to, the PostgreSQL
//! servers behind it, and who may log in.

use std::collections::HashSet;

use toml::Spanned;

use std::net::SocketAddr;

use super::{
    BackendConfig, ClientAuthMethod, ConfigError, ListenerConfig, RawBackend, RawListener, RawUser,
    UserConfig, Validator,
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

    pub(super) fn backends(
        &self,
        raw: Vec<Spanned<RawBackend>>,
    ) -> Result<Vec<BackendConfig>, ConfigError> {
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
            if b.name.is_empty() || !names.insert(b.name.clone()) {
                return Err(self.err(
                    span,
                    &key("name"),
                    format!("empty or duplicate backend name {:?}", b.name),
                ));
            }
            if b.host.is_empty() {
                return Err(self.err(span, &key("host"), "must not be empty"));
            }
            let port = self.count(&span, &key("port"), b.port, 5432, 1, 65535)? as u16;
            let weight = self.count(&span, &key("weight"), b.weight, 1, 0, 1000)? as u32;
            out.push(BackendConfig {
                name: b.name,
                host: b.host,
                port,
                weight,
            });
        }
        Ok(out)
    }

    pub(super) fn users(&self, raw: Vec<Spanned<RawUser>>) -> Result<Vec<UserConfig>, ConfigError> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in raw.into_iter().enumerate() {
            let span = item.span();
            let u = item.into_inner();
            let key = |k: &str| format!("users[{i}].{k}");
            if u.name.is_empty() || !names.insert(u.name.clone()) {
                return Err(self.err(
                    span,
                    &key("name"),
                    format!("empty or duplicate user name {:?}", u.name),
                ));
            }
            let auth = u.auth.unwrap_or(ClientAuthMethod::ScramSha256);
            if auth != ClientAuthMethod::Trust && u.password.is_none() {
                return Err(self.err(span, &key("password"), "required unless auth = \"trust\""));
            }
            out.push(UserConfig {
                name: u.name,
                auth,
                password: u.password,
                backend_password: u.backend_password,
            });
        }
        Ok(out)
    }
}
