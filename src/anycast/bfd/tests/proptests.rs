//! Property tests of the codec: decoding never panics, valid packets round-trip.

use bytes::BytesMut;
use proptest::prelude::*;

use super::super::packet::{ControlPacket, State};
use super::{encoded, sample};

fn any_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::AdminDown),
        Just(State::Down),
        Just(State::Init),
        Just(State::Up)
    ]
}

proptest! {
    #[test]
    fn decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = ControlPacket::decode(&d);
    }

    /// Mostly-valid headers reach the deeper checks, which random bytes rarely do.
    #[test]
    fn decode_never_panics_near_valid(mut d in proptest::collection::vec(any::<u8>(), 24..40),
                                      len in any::<u8>(), flags in any::<u8>()) {
        d[0] = 0x20 | (d[0] & 0x1f);
        d[1] = flags;
        d[3] = len;
        if let Ok(p) = ControlPacket::decode(&d) {
            prop_assert!(usize::from(len) <= d.len());
            prop_assert!(p.my_discr != 0 && p.detect_mult != 0);
            prop_assert!(!p.flags.authentication && !p.flags.multipoint);
        }
    }

    #[test]
    fn valid_packets_round_trip(diag in 0u8..32, state in any_state(), flags in 0u8..64,
                                mult in 1u8.., my in 1u32.., your in any::<u32>(),
                                tx in any::<u32>(), rx in any::<u32>(), echo in any::<u32>()) {
        let mut b = vec![0x20 | diag, 0, mult, 24];
        // State bits from the strategy; A and M cleared: they are refused.
        let mut probe = BytesMut::new();
        ControlPacket { state, ..sample() }.encode(&mut probe);
        b[1] = (probe[1] & 0xc0) | (flags & 0x3a);
        for v in [my, your, tx, rx, echo] {
            b.extend(v.to_be_bytes());
        }
        let p = ControlPacket::decode(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.state, state);
        prop_assert_eq!(encoded(&p), b);
    }
}
