//! The prefixes pgcast announces over BGP. IPv4 ones go in the UPDATE's own NLRI and Withdrawn
//! Routes fields (RFC 4271 §4.3); IPv6 ones in MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760
//! §3, §4, with RFC 2545's IPv6 next hop).

use std::net::IpAddr;

use bgpkit_parser::models::NetworkPrefix;
use ipnet::IpNet;

/// An IPv4 or IPv6 prefix with its host bits cleared. Ordered IPv4 before IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix(IpNet);

impl Prefix {
    /// `None` when `length` is over 32 (IPv4) or 128 (IPv6). Host bits are cleared so that
    /// two spellings of one prefix compare equal.
    pub fn new(address: IpAddr, length: u8) -> Option<Self> {
        IpNet::new(address, length).ok().map(|n| Prefix(n.trunc()))
    }

    /// A single address, as pgcast announces its anycast /32 or /128.
    pub fn host(address: IpAddr) -> Self {
        Prefix(IpNet::from(address))
    }

    pub fn address(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn length(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn is_ipv6(&self) -> bool {
        matches!(self.0, IpNet::V6(_))
    }

    /// Octets this prefix takes in an NLRI field (RFC 4271 §4.3, RFC 4760 §5).
    pub(super) fn nlri_len(&self) -> usize {
        1 + usize::from(self.length()).div_ceil(8)
    }

    pub(super) fn to_wire(self) -> NetworkPrefix {
        NetworkPrefix::new(self.0, None)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address(), self.length())
    }
}
