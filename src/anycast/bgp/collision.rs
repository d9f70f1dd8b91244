//! Connection collision resolution (RFC 4271 §6.8, RFC 6286 §2.3).
//!
//! When we connect to the peer while it connects to us, two BGP
//! connections exist for one session. Each gets its own [`Session`]; once
//! the peer's BGP Identifier is known on the second one (it reached
//! OpenConfirm, see `Session::peer_router_id`), the actor asks
//! [`resolve_collision`] which connection stays and steps
//! `Input::CollisionDump` into the other, which sends Cease / Connection
//! Collision Resolution and closes it.
//!
//! [`Session`]: super::fsm::Session

use std::net::Ipv4Addr;

/// Who opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionOrigin {
    /// We connected to the peer.
    Local,
    /// The peer connected to us.
    Remote,
}

/// What collision resolution needs to know about one speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerIdentity {
    pub router_id: Ipv4Addr,
    pub asn: u32,
}

/// The connection to keep when both speakers opened one.
///
/// RFC 4271 §6.8: the connection opened by the speaker with the higher BGP
/// Identifier survives, comparing identifiers as unsigned 32-bit numbers in
/// host order. RFC 6286 §2.3: with equal identifiers (allowed between
/// different ASes) the speaker with the larger AS number wins instead.
pub fn resolve_collision(local: SpeakerIdentity, remote: SpeakerIdentity) -> ConnectionOrigin {
    let local_key = (u32::from(local.router_id), local.asn);
    let remote_key = (u32::from(remote.router_id), remote.asn);
    // Equal on both counts cannot pass the OPEN checks (RFC 6286 §2.2
    // rejects an iBGP peer with our identifier); keeping ours is arbitrary
    // but at least both ends of a misconfiguration agree to disagree.
    if local_key >= remote_key {
        ConnectionOrigin::Local
    } else {
        ConnectionOrigin::Remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(router_id: [u8; 4], asn: u32) -> SpeakerIdentity {
        SpeakerIdentity {
            router_id: Ipv4Addr::from(router_id),
            asn,
        }
    }

    #[test]
    fn higher_router_id_keeps_its_own_connection() {
        let low = speaker([10, 0, 0, 1], 65001);
        let high = speaker([10, 0, 0, 2], 65000);
        assert_eq!(resolve_collision(high, low), ConnectionOrigin::Local);
        assert_eq!(resolve_collision(low, high), ConnectionOrigin::Remote);
    }

    #[test]
    fn router_ids_compare_as_unsigned_integers_not_strings() {
        // 9.0.0.0 < 10.0.0.0 numerically though "9" > "1" as text, and
        // 200.0.0.0 is above 2^31, where a signed comparison would flip.
        let nine = speaker([9, 0, 0, 0], 65000);
        let ten = speaker([10, 0, 0, 0], 65000);
        let high_bit = speaker([200, 0, 0, 0], 65000);
        assert_eq!(resolve_collision(nine, ten), ConnectionOrigin::Remote);
        assert_eq!(resolve_collision(high_bit, ten), ConnectionOrigin::Local);
    }

    #[test]
    fn equal_router_ids_fall_back_to_the_larger_as() {
        let small_as = speaker([192, 0, 2, 1], 64512);
        let large_as = speaker([192, 0, 2, 1], 4_200_000_000);
        assert_eq!(
            resolve_collision(small_as, large_as),
            ConnectionOrigin::Remote
        );
        assert_eq!(
            resolve_collision(large_as, small_as),
            ConnectionOrigin::Local
        );
    }
}
