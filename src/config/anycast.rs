//! Configuration of the anycast side: the OSPF speaker, the prefixes it announces and what
//! "healthy" means for each, and the drain sequence on SIGTERM.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{split, ConfigError, Validator};

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOspf {
    router_id: Option<String>,
    area: Option<String>,
    min_ls_interval_ms: Option<i64>,
    lsdb_max_lsas: Option<i64>,
    external: Option<RawExternal>,
    #[serde(default)]
    interfaces: Vec<Spanned<RawOspfInterface>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    #[serde(rename = "type")]
    kind: Option<i64>,
    metric: Option<i64>,
    tag: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOspfInterface {
    name: String,
    network: Option<String>,
    hello_interval: Option<i64>,
    dead_interval: Option<i64>,
    retransmit_interval: Option<i64>,
    transmit_delay: Option<i64>,
    cost: Option<i64>,
    priority: Option<i64>,
    mtu_ignore: Option<bool>,
    auth: Option<RawAuth>,
    bfd: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(rename = "type")]
    kind: String,
    key_id: Option<i64>,
    key: Option<String>,
    key_preparation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrefix {
    address: String,
    listeners: Option<Vec<String>>,
    require: Option<String>,
    cost: Option<i64>,
    when_unhealthy: Option<String>,
    last_resort_cost: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrain {
    quiesce_ms: Option<i64>,
    withdraw_grace_ms: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OspfNetwork {
    Broadcast,
    PointToPoint,
}

/// Authentication of one OSPF interface (RFC 2328 App. D, RFC 5709).
#[derive(Clone, PartialEq, Eq)]
pub enum OspfAuth {
    None,
    Simple(String),
    Md5 {
        key_id: u8,
        key: String,
    },
    HmacSha256 {
        key_id: u8,
        key: String,
        preparation: HmacKeyPreparation,
    },
}

/// `ospf.interfaces.auth.key_preparation` for HMAC-SHA-256: how a key of 33 to 64 bytes is
/// turned into the HMAC key. Both sides must agree, or no adjacency forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HmacKeyPreparation {
    /// "rfc5709" (default): hashed first, as RFC 5709 §3.3 says (FRR, Cisco).
    #[default]
    Rfc5709,
    /// "rfc2104": used as it is, as plain HMAC does (BIRD 2).
    Rfc2104,
}

impl std::fmt::Debug for OspfAuth {
    // Keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OspfAuth::None => write!(f, "None"),
            OspfAuth::Simple(_) => write!(f, "Simple(<hidden>)"),
            OspfAuth::Md5 { key_id, .. } => write!(f, "Md5 {{ key_id: {key_id} }}"),
            OspfAuth::HmacSha256 { key_id, .. } => write!(f, "HmacSha256 {{ key_id: {key_id} }}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfInterfaceConfig {
    pub name: String,
    pub network: OspfNetwork,
    pub hello_interval: u16,
    pub dead_interval: u32,
    pub retransmit_interval: u16,
    pub transmit_delay: u16,
    pub cost: u16,
    pub priority: u8,
    pub mtu_ignore: bool,
    pub auth: OspfAuth,
    /// BFD sessions to every neighbour on this interface.
    pub bfd: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfExternal {
    pub type2: bool,
    pub metric: u32,
    pub tag: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfConfig {
    pub router_id: Ipv4Addr,
    pub area: Ipv4Addr,
    pub min_ls_interval: Duration,
    pub lsdb_max_lsas: usize,
    pub external: Option<OspfExternal>,
    pub interfaces: Vec<OspfInterfaceConfig>,
}

/// What a prefix needs from its listeners to be announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Read,
    Write,
    ReadWrite,
}

/// What happens to a prefix whose listeners fail its requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnhealthy {
    /// Withdraw it: the router sends clients to the balancers that pass.
    Withdraw,
    /// Keep announcing it at `last_resort_cost`: routers prefer healthy balancers, and when the
    /// backends are down for every balancer the address still answers (with a PostgreSQL error
    /// clients can act on) instead of vanishing.
    LastResort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixConfig {
    /// An IPv4 /32 (OSPF and BGP) or an IPv6 /128 (BGP only: OSPFv2 carries IPv4).
    pub address: IpAddr,
    pub prefix_len: u8,
    /// Listener names; empty = all listeners.
    pub listeners: Vec<String>,
    pub require: Requirement,
    pub cost: u16,
    pub when_unhealthy: WhenUnhealthy,
    pub last_resort_cost: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// Before the withdrawal: new connections are paused (their SYNs dropped, so clients
    /// retry) while the sessions in flight get up to this long to end. The router's ECMP is
    /// stateless: once the prefix is withdrawn, every packet of a session still open here is
    /// hashed to another balancer and reset.
    pub quiesce: Duration,
    /// Between the withdrawal and closing the listeners: time for routers to converge.
    pub withdraw_grace: Duration,
}

impl Validator<'_> {
    pub(super) fn ospf(
        &self,
        raw: Option<Spanned<RawOspf>>,
    ) -> Result<Option<OspfConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let o = raw.into_inner();
        let router_id = self.ipv4(
            &span,
            "ospf.router_id",
            o.router_id.as_deref().ok_or_else(|| {
                self.err(span.clone(), "ospf.router_id", "missing (an IPv4 address)")
            })?,
        )?;
        let area = match o.area.as_deref() {
            None => Ipv4Addr::UNSPECIFIED,
            // Areas are written either dotted or as a number ("0").
            Some(a) => match a.parse::<u32>() {
                Ok(n) => Ipv4Addr::from(n),
                Err(_) => self.ipv4(&span, "ospf.area", a)?,
            },
        };
        let external = match o.external {
            None => None,
            Some(e) => Some(OspfExternal {
                type2: match e.kind.unwrap_or(2) {
                    1 => false,
                    2 => true,
                    other => {
                        return Err(self.err(
                            span,
                            "ospf.external.type",
                            format!("must be 1 or 2, got {other}"),
                        ))
                    }
                },
                metric: self.count(&span, "ospf.external.metric", e.metric, 20, 0, 0xff_ffff)?
                    as u32,
                tag: self.count(&span, "ospf.external.tag", e.tag, 0, 0, u32::MAX as u64)? as u32,
            }),
        };
        if o.interfaces.is_empty() {
            return Err(self.err(
                span,
                "ospf.interfaces",
                "at least one [[ospf.interfaces]] entry is required",
            ));
        }
        let mut interfaces = Vec::new();
        for item in o.interfaces {
            let s = item.span();
            let i = item.into_inner();
            if interfaces
                .iter()
                .any(|x: &OspfInterfaceConfig| x.name == i.name)
            {
                return Err(self.err(s, "ospf.interfaces.name", "duplicate interface"));
            }
            let hello = self.count(
                &s,
                "ospf.interfaces.hello_interval",
                i.hello_interval,
                10,
                1,
                65535,
            )?;
            let dead = self.count(
                &s,
                "ospf.interfaces.dead_interval",
                i.dead_interval,
                hello * 4,
                1,
                u32::MAX as u64,
            )?;
            if dead <= hello {
                return Err(self.err(
                    s,
                    "ospf.interfaces.dead_interval",
                    format!("must be longer than hello_interval ({hello} s), got {dead} s"),
                ));
            }
            interfaces.push(OspfInterfaceConfig {
                network: match i.network.as_deref() {
                    None | Some("broadcast") => OspfNetwork::Broadcast,
                    Some("point-to-point") => OspfNetwork::PointToPoint,
                    Some(other) => {
                        return Err(self.err(
                            s,
                            "ospf.interfaces.network",
                            format!("unknown network type {other:?}; expected \"broadcast\" or \"point-to-point\""),
                        ))
                    }
                },
                hello_interval: hello as u16,
                dead_interval: dead as u32,
                retransmit_interval: self.count(&s, "ospf.interfaces.retransmit_interval", i.retransmit_interval, 5, 1, 3600)? as u16,
                transmit_delay: self.count(&s, "ospf.interfaces.transmit_delay", i.transmit_delay, 1, 0, 3600)? as u16,
                cost: self.count(&s, "ospf.interfaces.cost", i.cost, 10, 1, 65535)? as u16,
                priority: self.count(&s, "ospf.interfaces.priority", i.priority, 0, 0, 255)? as u8,
                mtu_ignore: i.mtu_ignore.unwrap_or(false),
                auth: self.ospf_auth(&s, i.auth)?,
                bfd: i.bfd.unwrap_or(false),
                name: i.name,
            });
        }
        Ok(Some(OspfConfig {
            router_id,
            area,
            min_ls_interval: self.ms(
                &span,
                "ospf.min_ls_interval_ms",
                o.min_ls_interval_ms,
                1000,
                0,
            )?,
            lsdb_max_lsas: self.count(
                &span,
                "ospf.lsdb_max_lsas",
                o.lsdb_max_lsas,
                10_000,
                10,
                10_000_000,
            )? as usize,
            external,
            interfaces,
        }))
    }

    fn hmac_key_preparation(
        &self,
        s: &Range<usize>,
        raw: Option<&str>,
    ) -> Result<HmacKeyPreparation, ConfigError> {
        match raw {
            None | Some("rfc5709") => Ok(HmacKeyPreparation::Rfc5709),
            Some("rfc2104") => Ok(HmacKeyPreparation::Rfc2104),
            Some(other) => Err(self.err(
                s.clone(),
                "ospf.interfaces.auth.key_preparation",
                format!(
                    "unknown value {other:?}; expected \"rfc5709\" (FRR) or \"rfc2104\" (BIRD 2)"
                ),
            )),
        }
    }

    fn ospf_auth(&self, s: &Range<usize>, raw: Option<RawAuth>) -> Result<OspfAuth, ConfigError> {
        let Some(a) = raw else {
            return Ok(OspfAuth::None);
        };
        let key = |max: usize| -> Result<String, ConfigError> {
            let k = a
                .key
                .clone()
                .ok_or_else(|| self.err(s.clone(), "ospf.interfaces.auth.key", "missing"))?;
            if k.is_empty() || k.len() > max {
                return Err(self.err(
                    s.clone(),
                    "ospf.interfaces.auth.key",
                    format!("must be 1 to {max} bytes"),
                ));
            }
            Ok(k)
        };
        let key_id = || -> Result<u8, ConfigError> {
            Ok(self.count(s, "ospf.interfaces.auth.key_id", a.key_id, 1, 0, 255)? as u8)
        };
        Ok(match a.kind.as_str() {
            "none" | "null" => OspfAuth::None,
            // RFC 2328 D.3: the password field is 8 bytes.
            "simple" => OspfAuth::Simple(key(8)?),
            // App. D.4.3: the key is 16 bytes (shorter ones are padded with zeros).
            "md5" => OspfAuth::Md5 { key_id: key_id()?, key: key(16)? },
            "hmac-sha-256" => OspfAuth::HmacSha256 {
                key_id: key_id()?,
                key: key(1024)?,
                preparation: self.hmac_key_preparation(s, a.key_preparation.as_deref())?,
            },
            other => {
                return Err(self.err(
                    s.clone(),
                    "ospf.interfaces.auth.type",
                    format!("unknown type {other:?}; expected \"none\", \"simple\", \"md5\" or \"hmac-sha-256\""),
                ))
            }
        })
    }

    /// `[[prefix]]`; `bgp_configured`: an IPv6 prefix needs BGP (OSPFv2 carries IPv4 only).
    pub(super) fn prefixes(
        &self,
        raw: Vec<Spanned<RawPrefix>>,
        listener_names: &[String],
        bgp_configured: bool,
    ) -> Result<Vec<PrefixConfig>, ConfigError> {
        let mut out: Vec<PrefixConfig> = Vec::new();
        for item in raw {
            let s = item.span();
            let p = item.into_inner();
            let (address, prefix_len) = self.anycast_host(&s, &p.address)?;
            if address.is_ipv6() && !bgp_configured {
                return Err(self.err(
                    s,
                    "prefix.address",
                    format!(
                        "{address} is IPv6: it is announced over BGP only (OSPFv2 carries \
                         IPv4), and [bgp] is not configured"
                    ),
                ));
            }
            if out.iter().any(|x| x.address == address) {
                return Err(self.err(s, "prefix.address", "announced twice"));
            }
            let listeners = p.listeners.unwrap_or_default();
            if let Some(unknown) = listeners.iter().find(|l| !listener_names.contains(l)) {
                return Err(self.err(
                    s,
                    "prefix.listeners",
                    format!("no listener named {unknown:?}"),
                ));
            }
            let require = match p.require.as_deref() {
                None | Some("read") => Requirement::Read,
                Some("write") => Requirement::Write,
                Some("read-write") => Requirement::ReadWrite,
                Some(other) => {
                    return Err(self.err(
                        s,
                        "prefix.require",
                        format!(
                            "unknown {other:?}; expected \"read\", \"write\" or \"read-write\""
                        ),
                    ))
                }
            };
            let when_unhealthy = match p.when_unhealthy.as_deref() {
                None | Some("withdraw") => WhenUnhealthy::Withdraw,
                Some("last-resort") => WhenUnhealthy::LastResort,
                Some(other) => {
                    return Err(self.err(
                        s,
                        "prefix.when_unhealthy",
                        format!("unknown {other:?}; expected \"withdraw\" or \"last-resort\""),
                    ))
                }
            };
            out.push(PrefixConfig {
                address,
                prefix_len,
                listeners,
                require,
                cost: self.count(&s, "prefix.cost", p.cost, 10, 0, 65535)? as u16,
                when_unhealthy,
                last_resort_cost: self.count(
                    &s,
                    "prefix.last_resort_cost",
                    p.last_resort_cost,
                    65535,
                    0,
                    65535,
                )? as u16,
            });
        }
        Ok(out)
    }

    pub(super) fn drain(&self, raw: Option<Spanned<RawDrain>>) -> Result<DrainConfig, ConfigError> {
        let (s, d) = split(raw);
        Ok(DrainConfig {
            quiesce: self.ms(&s, "drain.quiesce_ms", d.quiesce_ms, 2000, 0)?,
            withdraw_grace: self.ms(&s, "drain.withdraw_grace_ms", d.withdraw_grace_ms, 2000, 0)?,
        })
    }

    /// An anycast host address: IPv4 /32 or IPv6 /128, the length optional.
    fn anycast_host(&self, s: &Range<usize>, text: &str) -> Result<(IpAddr, u8), ConfigError> {
        let key = "prefix.address";
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let address: IpAddr = addr.parse().map_err(|_| {
            self.err(
                s.clone(),
                key,
                format!("not an IPv4 or IPv6 address: {addr:?}"),
            )
        })?;
        if let IpAddr::V6(v6) = address {
            if !is_global_ipv6(v6) {
                return Err(self.err(
                    s.clone(),
                    key,
                    format!("{v6} is not a global unicast IPv6 address"),
                ));
            }
        }
        let host_len = if address.is_ipv4() { 32 } else { 128 };
        match len.map(str::parse::<u8>) {
            None => Ok((address, host_len)),
            Some(Ok(n)) if n == host_len => Ok((address, host_len)),
            Some(_) => Err(self.err(
                s.clone(),
                key,
                format!(
                    "only anycast host addresses are supported: /32 for IPv4, /128 for IPv6, \
                     not {text:?}"
                ),
            )),
        }
    }

    pub(super) fn ipv4(
        &self,
        s: &Range<usize>,
        key: &str,
        text: &str,
    ) -> Result<Ipv4Addr, ConfigError> {
        text.parse()
            .map_err(|_| self.err(s.clone(), key, format!("not an IPv4 address: {text:?}")))
    }
}

/// A global unicast IPv6 address: not unspecified, loopback, multicast, link-local (fe80::/10,
/// RFC 4291 §2.5.6), site-local (fec0::/10, deprecated by RFC 3879), or an IPv4 address
/// written as IPv6 (::ffff:0:0/96, ::/96; RFC 4291 §2.5.5). Unique local addresses (fc00::/7)
/// count: they are routed inside a site.
pub(super) fn is_global_ipv6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    let scoped = (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0;
    let embeds_ipv4 = a.to_ipv4().is_some();
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || scoped || embeds_ipv4)
}
