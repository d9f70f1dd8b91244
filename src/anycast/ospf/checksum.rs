//! Checksums used by OSPFv2.
//!
//! * The LSA checksum is the Fletcher checksum of ISO 8473 / RFC 905 Annex B, computed over
//!   the whole LSA except the LS age (RFC 2328 §12.1.7), so that the age can be incremented in
//!   flight without touching the checksum.
//! * The packet checksum is the ordinary IP (RFC 1071) one's complement checksum (RFC 2328
//!   §A.3.1); with AuType 0 and 1 it covers the packet with the 64-bit authentication field
//!   excluded (App. D.4.1 / D.4.2).

/// Offset of the checksum field inside an LSA (RFC 2328 §A.4.1).
const LSA_CHECKSUM_OFFSET: usize = 16;
/// The LS age (the first two bytes) is not covered by the Fletcher checksum (§12.1.7).
const LSA_AGE_LEN: usize = 2;

/// Running Fletcher sums (C0, C1) mod 255 over `data`, as in RFC 905 Annex B.
///
/// `skip` is the index of a two-byte field in `data` that is treated as zero (the checksum
/// field itself when generating).
fn fletcher_sums(data: &[u8], skip: Option<usize>) -> (u32, u32) {
    let mut c0: u32 = 0;
    let mut c1: u32 = 0;
    for (i, &byte) in data.iter().enumerate() {
        let b = match skip {
            Some(s) if i == s || i == s + 1 => 0,
            _ => u32::from(byte),
        };
        // Reducing every step keeps both sums far below u32::MAX for any input length.
        c0 = (c0 + b) % 255;
        c1 = (c1 + c0) % 255;
    }
    (c0, c1)
}

/// Computes the Fletcher checksum to store in an LSA (RFC 2328 §12.1.7).
///
/// `lsa` is the whole LSA as on the wire (length = its LS length field); the LS age (bytes
/// 0..2) is excluded and the checksum field (bytes 16..18) is treated as zero, so the value
/// can be computed on a buffer whose checksum field is stale. Returns 0 for a buffer too short
/// to hold an LSA header's checksum field (never a valid checksum, so it will fail to verify).
pub fn fletcher_checksum(lsa: &[u8]) -> u16 {
    let Some(data) = lsa.get(LSA_AGE_LEN..) else {
        return 0;
    };
    // Position of the checksum inside the checksummed data (0-based).
    let pos = LSA_CHECKSUM_OFFSET - LSA_AGE_LEN;
    if data.len() < pos + 2 {
        return 0;
    }
    let (c0, c1) = fletcher_sums(data, Some(pos));
    // RFC 905 Annex B.2: with the checksum occupying octets n and n+1 (1-based) of an L-octet
    // message, X = ((L - n) * C0 - C1) mod 255 and Y = (C1 - (L - n + 1) * C0) mod 255,
    // which makes both running sums of the completed message zero.
    let l_minus_n = (data.len() - (pos + 1)) as i64;
    let (c0, c1) = (i64::from(c0), i64::from(c1));
    // Reduce the length mod 255 first so the products stay small for any buffer size.
    let mut x = ((l_minus_n % 255) * c0 - c1).rem_euclid(255);
    let mut y = (c1 - ((l_minus_n + 1) % 255) * c0).rem_euclid(255);
    // Zero is represented as 255 so that a computed checksum is never 0x0000 (which in ISO
    // 8473 means "not computed").
    if x == 0 {
        x = 255;
    }
    if y == 0 {
        y = 255;
    }
    ((x as u16) << 8) | (y as u16)
}

/// Verifies the Fletcher checksum of a whole LSA (RFC 2328 §12.1.7, §13 step 1).
///
/// Valid when both running sums over bytes 2.. (checksum included) are zero mod 255. A zero
/// checksum field is rejected: OSPF always computes it and a generated value is never 0.
pub fn fletcher_verify(lsa: &[u8]) -> bool {
    let Some(data) = lsa.get(LSA_AGE_LEN..) else {
        return false;
    };
    match lsa.get(LSA_CHECKSUM_OFFSET..LSA_CHECKSUM_OFFSET + 2) {
        Some([0, 0]) | None => return false,
        Some(_) => {}
    }
    fletcher_sums(data, None) == (0, 0)
}

/// Adds `data` into a 32-bit one's complement accumulator as big-endian 16-bit words; an odd
/// trailing byte is padded with zero (RFC 1071 §4.1). `data` must start at an even offset of
/// the checksummed message.
pub(crate) fn ones_complement_add(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        if let [hi, lo] = pair {
            acc += u32::from(u16::from_be_bytes([*hi, *lo]));
        }
        // Fold eagerly so that no input length can overflow the accumulator.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds the accumulator to 16 bits and returns its one's complement.
pub(crate) fn ones_complement_finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// RFC 1071 Internet checksum of `data`: the one's complement of the one's complement sum of
/// its 16-bit words. Storing the result in a zeroed checksum field makes the checksum of the
/// whole message 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    ones_complement_finish(ones_complement_add(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent, slow implementation of the ISO 8473 definition: C0 = sum of a_i and
    /// C1 = sum of (L - i + 1) * a_i over the 1-based octet positions, in wide integers.
    fn iso8473_sums(data: &[u8]) -> (u64, u64) {
        let l = data.len() as u64;
        let mut c0 = 0u64;
        let mut c1 = 0u64;
        for (i, &a) in data.iter().enumerate() {
            let pos = i as u64 + 1;
            c0 += u64::from(a);
            c1 += (l - pos + 1) * u64::from(a);
        }
        (c0 % 255, c1 % 255)
    }

    /// Brute force: the checksum bytes (X, Y) in 1..=255 that make both ISO 8473 sums zero.
    fn brute_force_checksum(lsa: &[u8]) -> u16 {
        let mut buf = lsa.to_vec();
        for x in 1..=255u8 {
            for y in 1..=255u8 {
                buf[16] = x;
                buf[17] = y;
                if iso8473_sums(&buf[2..]) == (0, 0) {
                    return u16::from_be_bytes([x, y]);
                }
            }
        }
        panic!("no checksum found");
    }

    /// A Router-LSA captured from a real router (a public OSPF sample capture): age 994,
    /// options E, router 192.168.170.8, seq 0x80000dc3, checksum 0x2506, one stub link
    /// 192.168.170.0/24 metric 10.
    const CAPTURED_ROUTER_LSA: [u8; 36] = [
        0x03, 0xe2, 0x02, 0x01, 0xc0, 0xa8, 0xaa, 0x08, 0xc0, 0xa8, 0xaa, 0x08, 0x80, 0x00, 0x0d,
        0xc3, 0x25, 0x06, 0x00, 0x24, 0x02, 0x00, 0x00, 0x01, 0xc0, 0xa8, 0xaa, 0x00, 0xff, 0xff,
        0xff, 0x00, 0x03, 0x00, 0x00, 0x0a,
    ];

    #[test]
    fn fletcher_matches_captured_lsa() {
        assert!(fletcher_verify(&CAPTURED_ROUTER_LSA));
        assert_eq!(fletcher_checksum(&CAPTURED_ROUTER_LSA), 0x2506);
        assert_eq!(iso8473_sums(&CAPTURED_ROUTER_LSA[2..]), (0, 0));
        // The stored checksum does not influence the computation.
        let mut stale = CAPTURED_ROUTER_LSA;
        stale[16] = 0xde;
        stale[17] = 0xad;
        assert!(!fletcher_verify(&stale));
        assert_eq!(fletcher_checksum(&stale), 0x2506);
        // The age is not covered.
        stale[0] = 0x0e;
        stale[1] = 0x10;
        stale[16] = 0x25;
        stale[17] = 0x06;
        assert!(fletcher_verify(&stale));
    }

    #[test]
    fn fletcher_matches_brute_force_reference() {
        // A constructed Network-LSA (type 2): 10.0.0.0/24, DR 10.0.0.1, attached 1.1.1.1, 2.2.2.2.
        let mut lsa = vec![
            0x00, 0x01, 0x02, 0x02, 10, 0, 0, 1, 1, 1, 1, 1, 0x80, 0x00, 0x00, 0x01, 0, 0, 0x00,
            0x20, 255, 255, 255, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        let c = fletcher_checksum(&lsa);
        assert_eq!(c, brute_force_checksum(&lsa));
        lsa[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(fletcher_verify(&lsa));
        assert_eq!(brute_force_checksum(&CAPTURED_ROUTER_LSA), 0x2506);
    }

    #[test]
    fn fletcher_generated_values_verify_for_many_lengths() {
        for len in 18..300usize {
            let mut lsa: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let c = fletcher_checksum(&lsa);
            lsa[16..18].copy_from_slice(&c.to_be_bytes());
            assert!(fletcher_verify(&lsa), "len {len}");
            assert_eq!(iso8473_sums(&lsa[2..]), (0, 0), "len {len}");
            assert!(c & 0xff != 0 && c >> 8 != 0);
        }
    }

    #[test]
    fn fletcher_short_inputs_do_not_panic() {
        for len in 0..18 {
            let buf = vec![0xffu8; len];
            assert_eq!(fletcher_checksum(&buf), 0);
            assert!(!fletcher_verify(&buf));
        }
    }

    #[test]
    fn fletcher_rejects_zero_checksum_field() {
        let lsa = [0u8; 20];
        // All-zero data has sums (0, 0) but a zero checksum means "not computed".
        assert!(!fletcher_verify(&lsa));
    }

    #[test]
    fn internet_checksum_rfc1071_example() {
        // RFC 1071 §3 example: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after folding);
        // the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(
            ones_complement_finish(ones_complement_add(0, &data)),
            !0xddf2
        );
        assert_eq!(internet_checksum(&data), 0x220d);
        // Appending the checksum makes the whole message sum to zero.
        let mut with = data.to_vec();
        with.extend_from_slice(&0x220du16.to_be_bytes());
        assert_eq!(internet_checksum(&with), 0);
    }

    #[test]
    fn internet_checksum_odd_length_pads_with_zero() {
        assert_eq!(internet_checksum(&[0x12]), internet_checksum(&[0x12, 0x00]));
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn internet_checksum_long_input_does_not_overflow() {
        let data = vec![0xffu8; 200_000];
        assert_eq!(internet_checksum(&data), 0);
    }
}
