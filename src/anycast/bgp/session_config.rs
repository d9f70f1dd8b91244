//! Configuration of one BGP session, checked before the session runs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::update::DEFAULT_LOCAL_PREF;
use super::AS_TRANS;

/// What one session is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    /// The AS the peer must present in its OPEN (RFC 4271 §6.2).
    pub remote_as: u32,
    /// Our BGP Identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we offer, in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// NEXT_HOP of the IPv4 prefixes we announce.
    pub next_hop: Ipv4Addr,
    /// The next hop of the IPv6 prefixes (MP_REACH_NLRI). With it the session advertises
    /// IPv6 unicast (RFC 4760) and announces IPv6 prefixes; without it, IPv4 only.
    pub next_hop_ipv6: Option<Ipv6Addr>,
    /// LOCAL_PREF sent to an iBGP peer.
    pub local_pref: u32,
    /// Wait for the peer to connect instead of connecting to it.
    pub passive: bool,
    /// First ConnectRetryTimer and restart delay.
    pub connect_retry_time: Duration,
    /// Ceiling of the exponential back-off.
    pub connect_retry_max: Duration,
}

impl SessionConfig {
    /// Defaults: hold time 90 s (RFC 4271 §10), LOCAL_PREF 100, active
    /// connect, retries from 5 s doubling up to 120 s. RFC 4271 suggests
    /// 120 s from the start; an anycast node wants its route back sooner
    /// after the router restarts, and the back-off still caps it there.
    pub fn new(local_as: u32, remote_as: u32, router_id: Ipv4Addr, next_hop: Ipv4Addr) -> Self {
        SessionConfig {
            local_as,
            remote_as,
            router_id,
            hold_time: 90,
            next_hop,
            next_hop_ipv6: None,
            local_pref: DEFAULT_LOCAL_PREF,
            passive: false,
            connect_retry_time: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
        }
    }

    /// The connect-retry / restart delay after `failures` consecutive failures.
    pub fn backoff(&self, failures: u32) -> Duration {
        super::damping::backoff(self.connect_retry_time, self.connect_retry_max, failures)
    }

    /// The peer is in our own AS.
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }

    /// Reject values the protocol does not allow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for asn in [self.local_as, self.remote_as] {
            if asn == 0 || asn == u32::from(AS_TRANS) {
                return Err(ConfigError::ReservedAsNumber { asn });
            }
        }
        if matches!(self.hold_time, 1 | 2) {
            return Err(ConfigError::InvalidHoldTime {
                hold_time: self.hold_time,
            });
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::UnspecifiedRouterId);
        }
        if self.connect_retry_time.is_zero() || self.connect_retry_max < self.connect_retry_time {
            return Err(ConfigError::InvalidConnectRetry);
        }
        Ok(())
    }
}

/// A configuration the session refuses to run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("AS number {asn} cannot be used: 0 and AS_TRANS are reserved (RFC 6793 §9)")]
    ReservedAsNumber { asn: u32 },
    #[error("hold time {hold_time} s is not allowed: use 0 or at least 3 (RFC 4271 §4.2)")]
    InvalidHoldTime { hold_time: u16 },
    #[error("router id 0.0.0.0 is not a valid BGP Identifier (RFC 6286 §2.1)")]
    UnspecifiedRouterId,
    #[error("connect retry time must be above zero and at most connect_retry_max")]
    InvalidConnectRetry,
}
