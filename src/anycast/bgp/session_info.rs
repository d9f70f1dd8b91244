//! What a BGP session agreed with its peer, why it ended, and what it received: the
//! session's reports to its actor (`super::fsm`).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::collision::ConnectionOrigin;
use super::message::Capabilities;
use super::notification::Notification;

/// What was agreed with the peer when the OPENs crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    /// Negotiated hold time in seconds, the smaller of the two offers
    /// (RFC 4271 §4.2); 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    /// A third of the hold time (RFC 4271 §10).
    pub keepalive_interval: Duration,
    /// Both sides sent the 4-octet AS capability (RFC 6793 §3).
    pub four_octet_as: bool,
    /// The peer accepts ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// IPv4 unicast was negotiated, explicitly or by the peer advertising
    /// no Multiprotocol capability at all (RFC 4760 §8). Without it no IPv4
    /// prefix is announced.
    pub ipv4_unicast: bool,
    /// IPv6 unicast was negotiated: both sides advertised it (RFC 4760 §8; we do when the
    /// session has an IPv6 next hop). Without it no IPv6 prefix is announced.
    pub ipv6_unicast: bool,
    pub origin: ConnectionOrigin,
}

/// Why a connection attempt or session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    ManualStop,
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We found an error and sent this NOTIFICATION.
    NotificationSent(Notification),
    TcpConnectFailed,
    TcpClosed,
    CollisionDump,
    /// A message arrived while no BGP connection was open (Connect or
    /// Active state), which RFC 4271 §8.2.2 answers by dropping to Idle.
    UnexpectedInput,
}

/// Counts over the UPDATEs received; the routes themselves are not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceivedUpdates {
    pub messages: u64,
    pub announced_prefixes: u64,
    pub withdrawn_prefixes: u64,
    /// UPDATEs with an RFC 7606 treat-as-withdraw error.
    pub treat_as_withdraw: u64,
}

/// The address families a session carries (RFC 4760 §8: those both sides advertised).
/// `ours` is what we advertised, `theirs` the peer's OPEN.
pub fn negotiated_families(ours: &Capabilities, theirs: &Capabilities) -> (bool, bool) {
    // A peer without any Multiprotocol capability speaks IPv4 unicast (RFC 4760 §8).
    let peer_ipv4 = theirs.mp_ipv4_unicast || !(theirs.mp_ipv6_unicast || theirs.mp_other_families);
    (
        ours.mp_ipv4_unicast && peer_ipv4,
        ours.mp_ipv6_unicast && theirs.mp_ipv6_unicast,
    )
}
