//! How a session backs off after a failure, and what it accepts meanwhile (RFC 4271 §8.1.1,
//! DampPeerOscillations and its IdleHoldTimer). Pure functions; the FSM keeps the state.

use std::time::Duration;

use super::fsm::DownReason;
use super::notification::code::CEASE;

/// `first` doubled per consecutive failure, capped at `max` (`bgp.connect_retry_max_ms`): a
/// restarted router gets us back within `max` of being ready, not RFC 4271's minutes.
pub fn backoff(first: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

/// Whether a session that went down for `reason` was cut by an outage rather than an error.
///
/// The IdleHoldTimer damps a peer whose sessions keep failing. After an outage — our connects
/// refused or timed out, the connection closed, the hold timer expired, or the peer's Cease
/// (RFC 4486: it went down on purpose) — nothing oscillates: the peer was away, and its
/// connecting proves it is back. A session waiting to restart after an outage therefore
/// behaves as after AutomaticStart_with_PassiveTcpEstablishment (RFC 4271 §8.1.2, Event 5):
/// it accepts the peer's connection while its own retry waits, so whichever side is up first
/// wins. (Issue 14: a restarted FRR that connected at once was refused until our next retry,
/// up to `connect_retry_max` later.) Errors, found by us or by the peer, keep the damping.
pub fn is_outage(reason: &DownReason) -> bool {
    match reason {
        DownReason::TcpConnectFailed | DownReason::TcpClosed | DownReason::HoldTimerExpired => true,
        DownReason::NotificationReceived(n) => n.code == CEASE,
        DownReason::ManualStop
        | DownReason::NotificationSent(_)
        | DownReason::CollisionDump
        | DownReason::UnexpectedInput => false,
    }
}
