//! Codec tests: exact bytes both ways and every §6.8.6 codec rejection (the properties are
//! in `proptests`).

use super::super::packet::{ControlPacket, DecodeError, Diag, Flags, State};
use super::{encoded, sample};

const SAMPLE_BYTES: [u8; 24] = [
    0x23, 0xe0, 3, 24, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x04,
    0x93, 0xe0, 0, 0, 0, 0,
];

#[test]
fn encodes_to_known_bytes_and_back() {
    assert_eq!(encoded(&sample()), SAMPLE_BYTES);
    assert_eq!(ControlPacket::decode(&SAMPLE_BYTES), Ok(sample()));
}

#[test]
fn every_state_and_flag_lands_in_its_bit() {
    let cases = [
        (State::AdminDown, 0x00),
        (State::Down, 0x40),
        (State::Init, 0x80),
        (State::Up, 0xc0),
    ];
    for (state, bits) in cases {
        let p = ControlPacket {
            state,
            flags: Flags::default(),
            ..sample()
        };
        assert_eq!(encoded(&p)[1], bits, "{state:?}");
    }
    let all = Flags {
        poll: true,
        final_: true,
        control_plane_independent: true,
        demand: true,
        ..Flags::default()
    };
    let p = ControlPacket {
        flags: all,
        state: State::AdminDown,
        ..sample()
    };
    assert_eq!(encoded(&p)[1], 0x3a);
    assert_eq!(
        ControlPacket::decode(&encoded(&p)).map(|d| d.flags),
        Ok(all)
    );
}

#[test]
fn diag_codes_map_both_ways() {
    for code in 0..32u8 {
        assert_eq!(Diag::from_code(code).code(), code);
    }
    assert_eq!(Diag::from_code(1), Diag::ControlDetectionTimeExpired);
    assert_eq!(Diag::from_code(3), Diag::NeighborSignaledSessionDown);
    assert_eq!(Diag::from_code(7), Diag::AdministrativelyDown);
    assert_eq!(Diag::from_code(8), Diag::ReverseConcatenatedPathDown);
    assert_eq!(Diag::from_code(9), Diag::Reserved(9));
    // A reserved diag is carried, not refused.
    let mut b = SAMPLE_BYTES;
    b[0] = 0x20 | 31;
    assert_eq!(
        ControlPacket::decode(&b).map(|p| p.diag),
        Ok(Diag::Reserved(31))
    );
}

fn with(f: impl FnOnce(&mut Vec<u8>)) -> Result<ControlPacket, DecodeError> {
    let mut b = SAMPLE_BYTES.to_vec();
    f(&mut b);
    ControlPacket::decode(&b)
}

#[test]
fn rejects_what_rfc5880_6_8_6_discards() {
    assert_eq!(
        ControlPacket::decode(&SAMPLE_BYTES[..23]),
        Err(DecodeError::Truncated(23))
    );
    assert_eq!(ControlPacket::decode(&[]), Err(DecodeError::Truncated(0)));
    assert_eq!(with(|b| b[0] = 0x03), Err(DecodeError::BadVersion(0)));
    assert_eq!(with(|b| b[0] = 0x43), Err(DecodeError::BadVersion(2)));
    assert_eq!(
        with(|b| b[3] = 23),
        Err(DecodeError::LengthTooSmall {
            length: 23,
            minimum: 24
        })
    );
    assert_eq!(
        with(|b| b[3] = 25),
        Err(DecodeError::LengthExceedsDatagram {
            length: 25,
            datagram: 24
        })
    );
    assert_eq!(with(|b| b[2] = 0), Err(DecodeError::ZeroDetectMult));
    assert_eq!(with(|b| b[1] |= 0x01), Err(DecodeError::Multipoint));
    assert_eq!(
        with(|b| b[4..8].fill(0)),
        Err(DecodeError::ZeroMyDiscriminator)
    );
}

#[test]
fn authentication_is_refused_with_its_own_error() {
    // With the A bit the minimum length is 26 (mandatory section + auth type + auth len).
    assert_eq!(
        with(|b| b[1] |= 0x04),
        Err(DecodeError::LengthTooSmall {
            length: 24,
            minimum: 26
        })
    );
    // A well-formed Simple Password section (type 1, len 7, key id 1, "abcd").
    let r = with(|b| {
        b[1] |= 0x04;
        b[3] = 31;
        b.extend([1, 7, 1, b'a', b'b', b'c', b'd']);
    });
    assert_eq!(r, Err(DecodeError::AuthenticationPresent));
    assert_eq!(
        DecodeError::AuthenticationPresent.reason(),
        "authentication_present"
    );
}

#[test]
fn bytes_after_the_length_are_ignored() {
    let r = with(|b| b.extend([0xde, 0xad]));
    assert_eq!(r, Ok(sample()));
}
