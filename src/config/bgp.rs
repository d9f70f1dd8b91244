//! `[bgp]`, `[[bgp.neighbors]]` and `[bfd]`: the BGP speaker that announces the same prefixes
//! as OSPF (either or both may be configured), and the BFD timers shared by every BFD session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::anycast::is_global_ipv6;
use super::community::{LargeCommunity, StandardCommunity, AS_TRANS};
use super::{split, ConfigError, Validator};

// ---------------------------------------------------------------------------------------------
// Raw (serde) layer

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    local_as: Option<i64>,
    router_id: Option<String>,
    hold_time: Option<i64>,
    connect_retry_ms: Option<i64>,
    connect_retry_max_ms: Option<i64>,
    graceful_shutdown_ms: Option<i64>,
    listen: Option<String>,
    #[serde(default)]
    neighbors: Vec<Spanned<RawNeighbor>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    address: Option<String>,
    remote_as: Option<i64>,
    port: Option<i64>,
    local_address: Option<String>,
    passive: Option<bool>,
    hold_time: Option<i64>,
    password: Option<String>,
    ttl_security: Option<bool>,
    next_hop: Option<String>,
    next_hop_ipv6: Option<String>,
    med: Option<i64>,
    local_pref: Option<i64>,
    #[serde(default)]
    communities: Vec<String>,
    #[serde(default)]
    large_communities: Vec<String>,
    bfd: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBfd {
    desired_min_tx_ms: Option<i64>,
    required_min_rx_ms: Option<i64>,
    detect_multiplier: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

/// The default cap of the connect-retry back-off.
const DEFAULT_CONNECT_RETRY_MAX: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where peers may connect to us; `None`: we only connect out.
    pub listen: Option<SocketAddr>,
    /// Drain: how long the routes carry GRACEFUL_SHUTDOWN (RFC 8326) before the withdrawal.
    pub graceful_shutdown: Duration,
    pub neighbors: Vec<BgpNeighborConfig>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct BgpNeighborConfig {
    pub address: Ipv4Addr,
    pub port: u16,
    pub remote_as: u32,
    pub local_address: Option<Ipv4Addr>,
    pub passive: bool,
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// The back-off cap of connection attempts (and of restarts after a failure): a router
    /// that restarted is reconnected to within this long of being ready.
    pub connect_retry_max: Duration,
    /// TCP-MD5 key (RFC 2385); never logged.
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255, accept only TTL 254 or more (one hop).
    pub ttl_security: bool,
    /// `None`: the local address of the session's TCP connection (NEXT_HOP self).
    pub next_hop: Option<Ipv4Addr>,
    /// The next hop of IPv6 prefixes (MP_REACH_NLRI, RFC 4760 over this IPv4 session): a
    /// global address of ours the peer reaches. Required when a prefix is IPv6.
    pub next_hop_ipv6: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: u32,
    pub communities: Vec<StandardCommunity>,
    pub large_communities: Vec<LargeCommunity>,
    pub bfd: bool,
}

impl std::fmt::Debug for BgpNeighborConfig {
    // The TCP-MD5 key never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpNeighborConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("remote_as", &self.remote_as)
            .field("local_address", &self.local_address)
            .field("passive", &self.passive)
            .field("hold_time", &self.hold_time)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ttl_security", &self.ttl_security)
            .field("next_hop", &self.next_hop)
            .field("next_hop_ipv6", &self.next_hop_ipv6)
            .field("med", &self.med)
            .field("bfd", &self.bfd)
            .finish_non_exhaustive()
    }
}

/// Timers of every BFD session (RFC 5880 §6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_multiplier: u8,
}

impl Validator<'_> {
    /// `[bgp]`; `ipv6_prefix`: the first IPv6 `[[prefix]]`, which every neighbor then needs
    /// a `next_hop_ipv6` for.
    pub(super) fn bgp(
        &self,
        raw: Option<Spanned<RawBgp>>,
        ospf_router_id: Option<Ipv4Addr>,
        ipv6_prefix: Option<IpAddr>,
    ) -> Result<Option<BgpConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let b = raw.into_inner();
        let local_as = self.asn(&span, "bgp.local_as", b.local_as)?;
        let router_id = match (b.router_id.as_deref(), ospf_router_id) {
            (Some(text), _) => self.ipv4(&span, "bgp.router_id", text)?,
            (None, Some(id)) => id,
            (None, None) => {
                return Err(self.err(
                    span,
                    "bgp.router_id",
                    "missing (an IPv4 address; it defaults to ospf.router_id only when [ospf] is configured)",
                ))
            }
        };
        if router_id.is_unspecified() {
            return Err(self.err(span, "bgp.router_id", "0.0.0.0 is not a BGP Identifier"));
        }
        let hold_time = self.hold_time(&span, "bgp.hold_time", b.hold_time, 90)?;
        let connect_retry =
            self.ms(&span, "bgp.connect_retry_ms", b.connect_retry_ms, 5000, 100)?;
        let connect_retry_max = self.connect_retry_max(&span, &b, connect_retry)?;
        let graceful_shutdown = self.ms(
            &span,
            "bgp.graceful_shutdown_ms",
            b.graceful_shutdown_ms,
            1000,
            0,
        )?;
        // The drain must end well within a service manager's stop timeout (systemd: 90 s).
        self.at_most(&span, "bgp.graceful_shutdown_ms", graceful_shutdown, 60_000)?;
        let listen = match b.listen.as_deref() {
            None => Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179))),
            Some("off") => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(a @ SocketAddr::V4(_)) => Some(a),
                Ok(_) => {
                    return Err(self.err(span, "bgp.listen", "IPv4 only, e.g. \"0.0.0.0:179\""))
                }
                Err(e) => {
                    return Err(self.err(
                        span,
                        "bgp.listen",
                        format!("not an IP:port or \"off\" ({e}): {text:?}"),
                    ))
                }
            },
        };
        if b.neighbors.is_empty() {
            return Err(self.err(
                span,
                "bgp.neighbors",
                "at least one [[bgp.neighbors]] entry is required",
            ));
        }
        let mut neighbors: Vec<BgpNeighborConfig> = Vec::new();
        for (i, item) in b.neighbors.into_iter().enumerate() {
            let s = item.span();
            let n = item.into_inner();
            let key = |k: &str| format!("bgp.neighbors[{i}].{k}");
            let address = self.ipv4(
                &s,
                &key("address"),
                n.address
                    .as_deref()
                    .ok_or_else(|| self.err(s.clone(), &key("address"), "missing"))?,
            )?;
            if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
                return Err(self.err(s, &key("address"), format!("{address} is not a peer")));
            }
            if neighbors.iter().any(|x| x.address == address) {
                return Err(self.err(s, &key("address"), format!("duplicate neighbor {address}")));
            }
            let passive = n.passive.unwrap_or(false);
            if passive && listen.is_none() {
                return Err(self.err(
                    s,
                    &key("passive"),
                    "a passive neighbor must connect to us, but bgp.listen is \"off\"",
                ));
            }
            // A next hop or source address must be one of ours: no wildcard, no group address.
            let opt_ipv4 = |k: &str, v: Option<&str>| -> Result<Option<Ipv4Addr>, ConfigError> {
                let Some(t) = v else { return Ok(None) };
                let a = self.ipv4(&s, &key(k), t)?;
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    return Err(self.err(s.clone(), &key(k), format!("{a} is not a host address")));
                }
                Ok(Some(a))
            };
            let password = match n.password {
                // Linux keeps at most TCP_MD5SIG_MAXKEYLEN (80) bytes.
                Some(p) if p.is_empty() || p.len() > 80 => {
                    return Err(self.err(s, &key("password"), "must be 1 to 80 bytes"))
                }
                other => other,
            };
            let med = match n.med {
                None => None,
                Some(v) => {
                    Some(self.count(&s, &key("med"), Some(v), 0, 0, u32::MAX as u64)? as u32)
                }
            };
            neighbors.push(BgpNeighborConfig {
                address,
                port: self.count(&s, &key("port"), n.port, 179, 1, 65535)? as u16,
                remote_as: self.asn(&s, &key("remote_as"), n.remote_as)?,
                local_address: opt_ipv4("local_address", n.local_address.as_deref())?,
                passive,
                hold_time: match n.hold_time {
                    None => hold_time,
                    Some(v) => self.hold_time(&s, &key("hold_time"), Some(v), 90)?,
                },
                connect_retry,
                connect_retry_max,
                password,
                ttl_security: n.ttl_security.unwrap_or(false),
                next_hop: opt_ipv4("next_hop", n.next_hop.as_deref())?,
                next_hop_ipv6: self.next_hop_ipv6(
                    &s,
                    &key("next_hop_ipv6"),
                    n.next_hop_ipv6.as_deref(),
                    ipv6_prefix,
                )?,
                med,
                local_pref: self.count(
                    &s,
                    &key("local_pref"),
                    n.local_pref,
                    100,
                    0,
                    u32::MAX as u64,
                )? as u32,
                communities: n
                    .communities
                    .iter()
                    .map(|c| self.community(&s, &key("communities"), c))
                    .collect::<Result<_, _>>()?,
                large_communities: n
                    .large_communities
                    .iter()
                    .map(|c| self.large_community(&s, &key("large_communities"), c))
                    .collect::<Result<_, _>>()?,
                bfd: n.bfd.unwrap_or(false),
            });
        }
        Ok(Some(BgpConfig {
            local_as,
            router_id,
            listen,
            graceful_shutdown,
            neighbors,
        }))
    }

    /// A neighbor's IPv6 next hop: a global unicast address (RFC 2545 §3), required when
    /// `ipv6_prefix` says a prefix is IPv6.
    fn next_hop_ipv6(
        &self,
        s: &Range<usize>,
        key: &str,
        text: Option<&str>,
        ipv6_prefix: Option<IpAddr>,
    ) -> Result<Option<Ipv6Addr>, ConfigError> {
        let Some(text) = text else {
            return match ipv6_prefix {
                None => Ok(None),
                Some(p) => Err(self.err(
                    s.clone(),
                    key,
                    format!("missing: the prefix {p} is IPv6, and its next hop must be given"),
                )),
            };
        };
        let a: Ipv6Addr = text
            .parse()
            .map_err(|_| self.err(s.clone(), key, format!("not an IPv6 address: {text:?}")))?;
        if !is_global_ipv6(a) {
            return Err(self.err(
                s.clone(),
                key,
                format!("{a} is not a global unicast address (RFC 2545 §3)"),
            ));
        }
        Ok(Some(a))
    }

    pub(super) fn bfd(&self, raw: Option<Spanned<RawBfd>>) -> Result<BfdConfig, ConfigError> {
        let (s, b) = split(raw);
        let desired_min_tx = self.ms(&s, "bfd.desired_min_tx_ms", b.desired_min_tx_ms, 300, 10)?;
        let required_min_rx =
            self.ms(&s, "bfd.required_min_rx_ms", b.required_min_rx_ms, 300, 10)?;
        // The packet carries microseconds in 32 bits (RFC 5880 section 4.1); a minute is
        // already far beyond any use of BFD.
        self.at_most(&s, "bfd.desired_min_tx_ms", desired_min_tx, 60_000)?;
        self.at_most(&s, "bfd.required_min_rx_ms", required_min_rx, 60_000)?;
        Ok(BfdConfig {
            desired_min_tx,
            required_min_rx,
            detect_multiplier: self.count(
                &s,
                "bfd.detect_multiplier",
                b.detect_multiplier,
                3,
                1,
                255,
            )? as u8,
        })
    }

    /// `bgp.connect_retry_max_ms`: by default 4 s (or `connect_retry_ms` when that is
    /// longer), so a restarted router is reconnected to within seconds of being ready; RFC
    /// 4271's doubling up to minutes left balancers out of a restarted router's ECMP set for
    /// 63–92 s in the lab.
    fn connect_retry_max(
        &self,
        span: &Range<usize>,
        b: &RawBgp,
        connect_retry: Duration,
    ) -> Result<Duration, ConfigError> {
        let key = "bgp.connect_retry_max_ms";
        let default = DEFAULT_CONNECT_RETRY_MAX.max(connect_retry);
        let max = self.ms(
            span,
            key,
            b.connect_retry_max_ms,
            default.as_millis() as u64,
            100,
        )?;
        if max < connect_retry {
            return Err(self.err(
                span.clone(),
                key,
                format!(
                    "must be at least bgp.connect_retry_ms ({} ms), got {}",
                    connect_retry.as_millis(),
                    max.as_millis()
                ),
            ));
        }
        self.at_most(span, key, max, 600_000)?;
        Ok(max)
    }

    fn at_most(
        &self,
        s: &Range<usize>,
        key: &str,
        value: Duration,
        max_ms: u64,
    ) -> Result<(), ConfigError> {
        if value > Duration::from_millis(max_ms) {
            return Err(self.err(
                s.clone(),
                key,
                format!("must be at most {max_ms} ms, got {}", value.as_millis()),
            ));
        }
        Ok(())
    }

    fn asn(&self, s: &Range<usize>, key: &str, v: Option<i64>) -> Result<u32, ConfigError> {
        let v = v.ok_or_else(|| self.err(s.clone(), key, "missing (an AS number)"))?;
        let asn = self.count(s, key, Some(v), 0, 1, u32::MAX as u64)? as u32;
        if asn == u32::from(AS_TRANS) {
            return Err(self.err(
                s.clone(),
                key,
                "23456 is AS_TRANS, reserved (RFC 6793 section 9)",
            ));
        }
        Ok(asn)
    }

    fn hold_time(
        &self,
        s: &Range<usize>,
        key: &str,
        v: Option<i64>,
        default: u64,
    ) -> Result<u16, ConfigError> {
        let h = self.count(s, key, v, default, 0, 65535)? as u16;
        // RFC 4271 section 4.2: zero or at least three seconds.
        if matches!(h, 1 | 2) {
            return Err(self.err(s.clone(), key, "must be 0 or at least 3 seconds"));
        }
        Ok(h)
    }

    fn community(
        &self,
        s: &Range<usize>,
        key: &str,
        text: &str,
    ) -> Result<StandardCommunity, ConfigError> {
        let bad = || {
            self.err(
                s.clone(),
                key,
                format!("{text:?} is not a community (ASN:VALUE, both 0..65535, or \"graceful-shutdown\"/\"no-export\"/\"no-advertise\")"),
            )
        };
        match text {
            "graceful-shutdown" => return Ok(StandardCommunity::GRACEFUL_SHUTDOWN),
            "no-export" => return Ok(StandardCommunity::NO_EXPORT),
            "no-advertise" => return Ok(StandardCommunity::NO_ADVERTISE),
            _ => {}
        }
        let (a, v) = text.split_once(':').ok_or_else(bad)?;
        let a: u16 = a.parse().map_err(|_| bad())?;
        let v: u16 = v.parse().map_err(|_| bad())?;
        Ok(StandardCommunity::new(a, v))
    }

    fn large_community(
        &self,
        s: &Range<usize>,
        key: &str,
        text: &str,
    ) -> Result<LargeCommunity, ConfigError> {
        let bad = || {
            self.err(
                s.clone(),
                key,
                format!(
                    "{text:?} is not a large community (GLOBAL:LOCAL1:LOCAL2, each 0..4294967295)"
                ),
            )
        };
        let parts: Vec<u32> = text
            .split(':')
            .map(|p| p.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [global_admin, local_data_1, local_data_2] => Ok(LargeCommunity {
                global_admin,
                local_data_1,
                local_data_2,
            }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use crate::config::tests::{assert_refused, parse, MINIMAL};

    const DUAL_STACK: &str = r#"
[bgp]
local_as = 65001
router_id = "198.18.1.94"

[[bgp.neighbors]]
address = "198.18.1.90"
remote_as = 65000
next_hop_ipv6 = "2001:db8:1::94"

[[prefix]]
address = "198.18.2.0/32"

[[prefix]]
address = "2001:db8:2::1"
"#;

    #[test]
    fn ipv6_prefixes_go_over_bgp_with_the_neighbors_ipv6_next_hop() {
        let c = parse(&format!("{MINIMAL}{DUAL_STACK}")).expect("valid");
        let v6: Ipv6Addr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(c.prefixes[1].address, IpAddr::V6(v6));
        assert_eq!(c.prefixes[1].prefix_len, 128);
        let n = &c.bgp.expect("bgp").neighbors[0];
        assert_eq!(n.next_hop_ipv6, Some("2001:db8:1::94".parse().unwrap()));
    }

    #[test]
    fn ipv6_prefix_errors_name_the_key() {
        let cases = [
            // No next hop for the IPv6 prefix.
            (
                "next_hop_ipv6 = \"2001:db8:1::94\"\n",
                "",
                "bgp.neighbors[0].next_hop_ipv6",
                "the prefix 2001:db8:2::1 is IPv6",
            ),
            (
                "\"2001:db8:1::94\"",
                "\"fe80::94\"",
                "bgp.neighbors[0].next_hop_ipv6",
                "not a global unicast address",
            ),
            (
                "\"2001:db8:1::94\"",
                "\"198.18.1.94\"",
                "bgp.neighbors[0].next_hop_ipv6",
                "not an IPv6 address",
            ),
            (
                "\"2001:db8:1::94\"",
                "\"::ffff:198.18.1.94\"",
                "bgp.neighbors[0].next_hop_ipv6",
                "not a global unicast address",
            ),
            (
                "\"2001:db8:2::1\"",
                "\"::ffff:198.18.2.0\"",
                "prefix.address",
                "not a global unicast IPv6 address",
            ),
            (
                "\"2001:db8:2::1\"",
                "\"fe80::1\"",
                "prefix.address",
                "not a global unicast IPv6 address",
            ),
            (
                "\"2001:db8:2::1\"",
                "\"2001:db8:2::/64\"",
                "prefix.address",
                "/128 for IPv6",
            ),
            (
                "\"198.18.2.0/32\"",
                "\"198.18.2.0/24\"",
                "prefix.address",
                "/32 for IPv4",
            ),
        ];
        assert_refused(DUAL_STACK, &cases);
    }

    #[test]
    fn an_ipv6_prefix_without_bgp_is_refused_ospf_carries_ipv4_only() {
        let text = format!("{MINIMAL}\n[[prefix]]\naddress = \"2001:db8:2::1/128\"\n");
        let e = parse(&text).expect_err("no [bgp]").to_string();
        assert!(e.contains("prefix.address"), "{e}");
        assert!(e.contains("announced over BGP only"), "{e}");
    }
}
