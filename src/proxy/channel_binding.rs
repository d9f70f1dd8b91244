//! The `tls-server-end-point` channel binding (RFC 5929 §4.1) that SCRAM-SHA-256-PLUS binds a
//! login to (RFC 5802 §6): the hash of the server certificate the client saw, so a man in the
//! middle who terminates TLS with another certificate cannot relay the exchange.
//!
//! The hash function is the certificate signature's own, except that MD5 and SHA-1 are
//! replaced by SHA-256 (§4.1); for RSASSA-PSS it is the hash its parameters name (RFC 4055
//! §3.1), as OpenSSL, and so PostgreSQL and libpq, take it. A signature without a hash of its
//! own (Ed25519) has no end-point data; PostgreSQL then offers no channel binding either, and
//! neither do we.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The channel-binding data for a DER certificate; `None` if its signature algorithm has no
/// hash RFC 5929 can use, or the DER does not parse.
pub fn end_point_data(cert_der: &[u8]) -> Option<Vec<u8>> {
    let hash = signature_hash(cert_der)?;
    Some(match hash {
        Hash::Sha256 => Sha256::digest(cert_der).to_vec(),
        Hash::Sha384 => Sha384::digest(cert_der).to_vec(),
        Hash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// OID bodies (DER, without tag and length) of signature algorithms and their hash.
const SIGNATURE_HASHES: &[(&[u8], Hash)] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption: SHA-256 instead (RFC 5929 §4.1).
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
        Hash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        Hash::Sha256,
    ),
    // sha256/384/512WithRSAEncryption (RFC 4055).
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        Hash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        Hash::Sha384,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        Hash::Sha512,
    ),
    // ecdsa-with-SHA1, -SHA256, -SHA384, -SHA512 (RFC 5758).
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], Hash::Sha256),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        Hash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        Hash::Sha384,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        Hash::Sha512,
    ),
];

/// id-RSASSA-PSS (1.2.840.113549.1.1.10, RFC 4055 §3.1): the hash is in its parameters.
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

/// OID bodies of the hash functions RSASSA-PSS parameters may name (RFC 4055 §2.1), and what
/// channel binding uses for each (SHA-1 becomes SHA-256, RFC 5929 §4.1).
const PSS_HASHES: &[(&[u8], Hash)] = &[
    (&[0x2b, 0x0e, 0x03, 0x02, 0x1a], Hash::Sha256),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        Hash::Sha256,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
        Hash::Sha384,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        Hash::Sha512,
    ),
];

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, .. }
/// and AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters } (RFC
/// 5280 §4.1).
fn signature_hash(der: &[u8]) -> Option<Hash> {
    let (certificate, _) = element(der, 0x30)?;
    let (_tbs, rest) = element(certificate, 0x30)?;
    let (algorithm, _) = element(rest, 0x30)?;
    let (oid, parameters) = element(algorithm, 0x06)?;
    if oid == RSASSA_PSS {
        return pss_hash(parameters);
    }
    lookup(SIGNATURE_HASHES, oid)
}

/// RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] HashAlgorithm DEFAULT sha1, .. }
/// (RFC 4055 §3.1), HashAlgorithm an AlgorithmIdentifier.
fn pss_hash(parameters: &[u8]) -> Option<Hash> {
    let (params, _) = element(parameters, 0x30)?;
    if params.first() != Some(&0xa0) {
        // hashAlgorithm absent: SHA-1, for which channel binding takes SHA-256.
        return Some(Hash::Sha256);
    }
    let (explicit, _) = element(params, 0xa0)?;
    let (hash_algorithm, _) = element(explicit, 0x30)?;
    let (oid, _) = element(hash_algorithm, 0x06)?;
    lookup(PSS_HASHES, oid)
}

fn lookup(table: &[(&[u8], Hash)], oid: &[u8]) -> Option<Hash> {
    table
        .iter()
        .find(|(known, _)| *known == oid)
        .map(|(_, h)| *h)
}

/// One DER element with tag `tag` at the start of `der`: (its contents, what follows it).
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        // Long form: the low bits say how many length bytes follow (at most 4 here).
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER TLV.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if body.len() < 0x80 {
            v.push(body.len() as u8);
        } else {
            v.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        v.extend_from_slice(body);
        v
    }

    /// A certificate shape with `oid` as its signature algorithm (the rest is filler).
    fn cert(oid: &[u8], tbs_len: usize) -> Vec<u8> {
        let tbs = tlv(0x30, &vec![0x05; tbs_len]);
        let alg = tlv(0x30, &[tlv(0x06, oid), vec![0x05, 0x00]].concat());
        let sig = tlv(0x03, &[0x00, 0x01, 0x02]);
        tlv(0x30, &[tbs, alg, sig].concat())
    }

    #[test]
    fn hash_follows_the_signature_algorithm_and_rfc5929_upgrades_sha1() {
        let cases: [(&[u8], Option<usize>); 5] = [
            (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02], Some(32)),
            (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03], Some(48)),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
                Some(64),
            ),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
                Some(32),
            ),
            // Ed25519 (1.3.101.112): no hash of its own, no channel binding.
            (&[0x2b, 0x65, 0x70], None),
        ];
        for (oid, len) in cases {
            for tbs_len in [10, 300] {
                let c = cert(oid, tbs_len);
                let data = end_point_data(&c);
                assert_eq!(data.as_ref().map(Vec::len), len, "{oid:02x?}");
                if len == Some(32) {
                    assert_eq!(data.unwrap(), Sha256::digest(&c).to_vec());
                }
            }
        }
    }

    /// RSASSA-PSS parameters with `hash` as hashAlgorithm (`None`: the field left out, SHA-1
    /// by default), and a mask generation function naming the same hash, as openssl writes.
    fn pss_parameters(hash: Option<&[u8]>) -> Vec<u8> {
        let mut fields = Vec::new();
        if let Some(h) = hash {
            let alg = tlv(0x30, &[tlv(0x06, h), vec![0x05, 0x00]].concat());
            fields.extend(tlv(0xa0, &alg));
            let mgf1 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
            let mgf = tlv(0x30, &[tlv(0x06, &mgf1), alg].concat());
            fields.extend(tlv(0xa1, &mgf));
        }
        fields.extend(tlv(0xa2, &tlv(0x02, &[0x20])));
        tlv(0x30, &fields)
    }

    fn pss_cert(hash: Option<&[u8]>) -> Vec<u8> {
        let tbs = tlv(0x30, &[0x05; 40]);
        let alg = tlv(
            0x30,
            &[tlv(0x06, RSASSA_PSS), pss_parameters(hash)].concat(),
        );
        let sig = tlv(0x03, &[0x00, 0x01, 0x02]);
        tlv(0x30, &[tbs, alg, sig].concat())
    }

    #[test]
    fn rsassa_pss_binds_with_the_hash_its_parameters_name() {
        let sha = |n: u8| [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, n];
        let md5 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];
        let cases: [(Option<&[u8]>, Option<usize>); 6] = [
            (Some(&sha(1)), Some(32)),
            (Some(&sha(2)), Some(48)),
            (Some(&sha(3)), Some(64)),
            // SHA-1, named or by default: SHA-256 instead (RFC 5929 §4.1).
            (Some(&[0x2b, 0x0e, 0x03, 0x02, 0x1a]), Some(32)),
            (None, Some(32)),
            // A hash PSS does not allow: no binding rather than a wrong one.
            (Some(&md5), None),
        ];
        for (hash, len) in cases {
            let c = pss_cert(hash);
            let data = end_point_data(&c);
            assert_eq!(data.as_ref().map(Vec::len), len, "{hash:02x?}");
            if len == Some(48) {
                assert_eq!(data.unwrap(), Sha384::digest(&c).to_vec());
            }
        }
        // Parameters missing or cut short: nothing.
        let bare = tlv(
            0x30,
            &[tlv(0x30, &[0x05; 8]), tlv(0x30, &tlv(0x06, RSASSA_PSS))].concat(),
        );
        assert_eq!(end_point_data(&bare), None);
    }

    #[test]
    fn truncated_or_foreign_bytes_give_nothing() {
        let c = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02], 300);
        for cut in [0, 1, 2, 5, 40, 310, c.len() - 8] {
            assert_eq!(end_point_data(&c[..cut]), None, "cut at {cut}");
        }
        assert_eq!(end_point_data(b"not DER at all"), None);
        assert_eq!(end_point_data(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
    }

    /// One SCRAM exchange between postgres-protocol's client and our server; Ok(true) when
    /// both sides accepted it.
    fn login(
        offered: Option<Vec<u8>>,
        mechanism: &str,
        cb: postgres_protocol::authentication::sasl::ChannelBinding,
    ) -> Result<bool, crate::proxy::auth::AuthError> {
        use crate::proxy::auth::{ScramServer, ScramVerifier};
        use postgres_protocol::authentication::sasl::ScramSha256;
        let mut server = ScramServer::with_random_nonce(ScramVerifier::generate("pw"))
            .with_channel_binding(offered);
        let mut client = ScramSha256::new(b"pw", cb);
        let first = server.client_first_for(mechanism, client.message())?;
        client.update(&first).expect("server-first");
        let fin = server.client_final(client.message())?;
        Ok(client.finish(&fin).is_ok())
    }

    #[test]
    fn scram_plus_binds_to_the_end_point_and_refuses_a_downgrade() {
        use crate::proxy::auth::{SCRAM, SCRAM_PLUS};
        use postgres_protocol::authentication::sasl::ChannelBinding;
        let ours = vec![7u8; 32];
        let end_point = |d: &[u8]| ChannelBinding::tls_server_end_point(d.to_vec());
        let on_tls = || Some(ours.clone());
        // (offered, mechanism, client's binding, accepted)
        let cases = [
            (on_tls(), SCRAM_PLUS, end_point(&ours), true),
            (on_tls(), SCRAM_PLUS, end_point(&[8u8; 32]), false),
            (on_tls(), SCRAM, ChannelBinding::unsupported(), true),
            // 'y': the client could bind and thinks we cannot, yet PLUS was offered.
            (on_tls(), SCRAM, ChannelBinding::unrequested(), false),
            (on_tls(), SCRAM, end_point(&ours), false),
            (None, SCRAM, ChannelBinding::unrequested(), true),
            (None, SCRAM_PLUS, end_point(&ours), false),
        ];
        for (i, (offered, mechanism, cb, accepted)) in cases.into_iter().enumerate() {
            let got = login(offered, mechanism, cb).unwrap_or(false);
            assert_eq!(got, accepted, "case {i}: {mechanism}");
        }
    }
}
