//! Batch verification of Ed25519 signatures that answers exactly what `verify_strict` answers,
//! one signature at a time: the measurement behind `BENCHMARKS.md` "Batch verification".
//!
//! A batch checks one random linear combination of the verification equations,
//! `sum z_i (R_i + k_i A_i - s_i B) = 0`, with one multiscalar multiplication. Without the
//! cofactor, that combination also sees the small-order part of each `R_i`, but only modulo 8:
//! a signature whose `R` carries a torsion component (which `verify_strict` always refuses)
//! passes a batch with probability up to 1/2. So a signature enters the batch only when its `R`
//! is canonically encoded, not of small order and torsion-free (its keys are torsion-free from
//! parsing), and its `s` is canonical; every other one, and every one of a batch whose
//! combination is not the identity, is answered by `verify_strict` itself. With all points in
//! the prime-order subgroup, the combination is the identity for a batch holding a failing
//! signature with probability at most 2^-128.
//!
//! The torsion check is a scalar multiplication by the group order: it costs about what
//! batching saves, which is why the server verifies one by one (the figures are in
//! `BENCHMARKS.md`).

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use curve25519_dalek::{EdwardsPoint, Scalar};
use sha2::{Digest, Sha512};

use super::Ed25519Key;

/// One signature to verify.
pub struct Item<'a> {
    pub key: &'a Ed25519Key,
    pub message: &'a [u8],
    pub signature: &'a [u8],
}

/// One verdict per item, in order, each exactly `key.verify(message, signature)`.
pub fn verify(items: &[Item<'_>]) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    let mut batch = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match prepare(item) {
            Some(prepared) => batch.push((i, prepared)),
            // Outside the batch's guarantees: the strict verifier decides.
            None => verdicts[i] = strict(item),
        }
    }
    if batch.is_empty() {
        return verdicts;
    }
    if combination_holds(&batch) {
        for (i, _) in &batch {
            verdicts[*i] = true;
        }
    } else {
        for (i, _) in &batch {
            verdicts[*i] = strict(&items[*i]);
        }
    }
    verdicts
}

fn strict(item: &Item<'_>) -> bool {
    item.key.verify(item.message, item.signature)
}

/// A signature's points and scalars, when it meets every condition of the batch.
#[derive(Clone)]
struct Prepared {
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn prepare(item: &Item<'_>) -> Option<Prepared> {
    let signature = <&[u8; 64]>::try_from(item.signature).ok()?;
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    let s = Option::from(Scalar::from_canonical_bytes(s_bytes.try_into().ok()?))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let canonical = r.compress().to_bytes() == r_bytes;
    if !canonical || r.is_small_order() || !r.is_torsion_free() {
        return None;
    }
    let mut hash = Sha512::new();
    hash.update(r_bytes);
    hash.update(item.key.as_bytes());
    hash.update(item.message);
    let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    Some(Prepared {
        r,
        a: item.key.point(),
        s,
        k,
    })
}

/// `sum z_i R_i + sum (z_i k_i) A_i - (sum z_i s_i) B` is the identity, for random 128-bit
/// `z_i`.
fn combination_holds(batch: &[(usize, Prepared)]) -> bool {
    let mut random = vec![0u8; 16 * batch.len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    if aws_lc_rs::rand::SecureRandom::fill(&rng, &mut random).is_err() {
        return false;
    }
    let z: Vec<Scalar> = random
        .chunks_exact(16)
        .map(|c| {
            let mut wide = [0u8; 32];
            wide[..16].copy_from_slice(c);
            Scalar::from_bytes_mod_order(wide)
        })
        .collect();
    let b = -z
        .iter()
        .zip(batch)
        .map(|(z, (_, p))| z * p.s)
        .sum::<Scalar>();
    let scalars = z
        .iter()
        .copied()
        .chain(z.iter().zip(batch).map(|(z, (_, p))| z * p.k))
        .chain(std::iter::once(b));
    let points = batch
        .iter()
        .map(|(_, p)| p.r)
        .chain(batch.iter().map(|(_, p)| p.a))
        .chain(std::iter::once(ED25519_BASEPOINT_POINT));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;

    /// A signer whose nonce point can be chosen, so signatures `verify_strict` refuses can be
    /// made on purpose.
    struct Signer {
        secret: Scalar,
        key: Ed25519Key,
    }

    fn scalar(label: &str, i: usize) -> Scalar {
        let digest = Sha512::digest(format!("{label}-{i}").as_bytes());
        Scalar::from_bytes_mod_order_wide(&digest.into())
    }

    impl Signer {
        fn new(i: usize) -> Signer {
            let secret = scalar("secret", i);
            let point = ED25519_BASEPOINT_POINT * secret;
            let key = Ed25519Key::from_bytes(&point.compress().to_bytes()).unwrap();
            Signer { secret, key }
        }

        /// `R || s` with `R` the encoding `r_bytes` and `s = r + k a`, `r` the scalar whose
        /// multiple of the base point `R` was built from.
        fn sign_with(&self, r: Scalar, r_bytes: [u8; 32], message: &[u8]) -> Vec<u8> {
            let mut hash = Sha512::new();
            hash.update(r_bytes);
            hash.update(self.key.as_bytes());
            hash.update(message);
            let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
            let s = r + k * self.secret;
            [r_bytes, s.to_bytes()].concat()
        }

        fn sign(&self, i: usize, message: &[u8]) -> Vec<u8> {
            let r = scalar("nonce", i);
            let r_bytes = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
            self.sign_with(r, r_bytes, message)
        }
    }

    /// `s + l` in place of `s`: the same scalar, not canonically encoded.
    fn with_s_plus_order(signature: &[u8]) -> Vec<u8> {
        let order_minus_one = (Scalar::ZERO - Scalar::ONE).to_bytes();
        let mut out = signature.to_vec();
        let mut carry = 1u16; // l = (l - 1) + 1
        for (byte, l) in out[32..].iter_mut().zip(order_minus_one) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    /// Every way a signature can fail (or almost pass), each with a valid one beside it.
    fn corner_cases(signers: &[Signer], round: usize) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
        let mut cases = Vec::new();
        for (n, signer) in signers.iter().enumerate() {
            let message = format!("message {round} {n}").into_bytes();
            let i = round * 100 + n;
            let valid = signer.sign(i, &message);
            cases.push((n, message.clone(), valid.clone()));
            let r = scalar("nonce", i);
            let torsion = EIGHT_TORSION[1 + (i % 7)];
            let forged = match n % 6 {
                // Mixed order: R carries a torsion component, s is honest for that R.
                0 => {
                    let mixed = (ED25519_BASEPOINT_POINT * r + torsion)
                        .compress()
                        .to_bytes();
                    signer.sign_with(r, mixed, &message)
                }
                // Small order: R is a torsion point (or the identity).
                1 => signer.sign_with(r, EIGHT_TORSION[i % 8].compress().to_bytes(), &message),
                // Non-canonical s.
                2 => with_s_plus_order(&valid),
                // Another message.
                3 => signer.sign(i, b"another message"),
                // Non-canonical R: the identity with y = p + 1.
                4 => {
                    let mut y = [0xffu8; 32];
                    y[0] = 0xee;
                    y[31] = 0x7f;
                    signer.sign_with(Scalar::ZERO, y, &message)
                }
                // A flipped bit in s, and a truncated signature.
                _ => {
                    let mut bad = valid.clone();
                    bad[40] ^= 1;
                    cases.push((n, message.clone(), valid[..63].to_vec()));
                    bad
                }
            };
            cases.push((n, message, forged));
        }
        cases
    }

    #[test]
    fn batch_verdicts_are_exactly_the_strict_verdicts() {
        let signers: Vec<Signer> = (0..12).map(Signer::new).collect();
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..60 {
            let cases = corner_cases(&signers, round);
            let items: Vec<Item<'_>> = cases
                .iter()
                .map(|(n, message, signature)| Item {
                    key: &signers[*n].key,
                    message,
                    signature,
                })
                .collect();
            let verdicts = verify(&items);
            for (item, verdict) in items.iter().zip(&verdicts) {
                assert_eq!(*verdict, strict(item), "round {round}");
            }
            accepted += verdicts.iter().filter(|v| **v).count();
            refused += verdicts.iter().filter(|v| !**v).count();
        }
        // 12 valid signatures a round; everything else is refused.
        assert_eq!((accepted, refused), (60 * 12, 60 * 14));
    }

    /// ed25519-dalek's own strict verifier, the reference for `Ed25519Key::verify`.
    fn dalek_strict(key: &Ed25519Key, message: &[u8], signature: &[u8]) -> bool {
        let key = ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()).unwrap();
        <&[u8; 64]>::try_from(signature).is_ok_and(|bytes| {
            key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                .is_ok()
        })
    }

    /// Every encoding of a small-order point, 14 in all: the 8 canonical ones, the sign bit set
    /// on the two with `x = 0` (flipping it on the others gives their negations, also in the
    /// set), and `y + p`, either sign, for the two `y` below 19 (0 and 1).
    fn small_order_encodings() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for point in EIGHT_TORSION {
            let canonical = point.compress().to_bytes();
            let mut flipped = canonical;
            flipped[31] ^= 0x80;
            out.extend([canonical, flipped]);
            let y_is_small = canonical[1..31].iter().all(|b| *b == 0) && canonical[0] < 19;
            if y_is_small && canonical[31] & 0x7f == 0 {
                // y + p, p = 2^255 - 19, with either sign bit
                let mut plus_p = [0xffu8; 32];
                plus_p[0] = 0xed + canonical[0];
                plus_p[31] = 0x7f | (canonical[31] & 0x80);
                let mut other_sign = plus_p;
                other_sign[31] ^= 0x80;
                out.extend([plus_p, other_sign]);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_verifier_answers_exactly_what_verify_strict_answers() {
        let signers: Vec<Signer> = (0..12).map(Signer::new).collect();
        let mut tally = [0usize; 2];
        let mut check = |key: &Ed25519Key, message: &[u8], signature: &[u8], what: &str| {
            let verdict = key.verify(message, signature);
            assert_eq!(verdict, dalek_strict(key, message, signature), "{what}");
            tally[usize::from(verdict)] += 1;
        };
        for round in 0..20 {
            for (n, message, signature) in corner_cases(&signers, round) {
                check(&signers[n].key, &message, &signature, "corner case");
            }
            for (what, forged) in refused_but_balanced(&signers[0], round, b"m") {
                check(&signers[0].key, b"m", &forged, what);
            }
        }
        // R any small-order encoding, with the s that balances the equation for R = the
        // identity and for R = that point.
        let encodings = small_order_encodings();
        for (i, r_bytes) in encodings.iter().enumerate() {
            let signer = &signers[i % signers.len()];
            for r in [Scalar::ZERO, scalar("nonce", i)] {
                let signature = signer.sign_with(r, *r_bytes, b"small order");
                check(&signer.key, b"small order", &signature, "small-order R");
            }
        }
        // 12 valid signatures in each round's corner cases; nothing else passes.
        assert_eq!(tally, [20 * (14 + 4) + 2 * encodings.len(), 20 * 12]);
        assert_eq!(encodings.len(), 14);
    }

    /// Signatures whose equation holds but which `verify_strict` refuses: only the batch's own
    /// conditions keep them out, so each is tried alone among valid ones (a failed combination
    /// would otherwise hand every verdict to `verify_strict`).
    fn refused_but_balanced(
        signer: &Signer,
        i: usize,
        message: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        let r = scalar("nonce", i);
        let identity = EdwardsPoint::default().compress().to_bytes();
        let mut y_plus_p = [0xffu8; 32]; // the identity again, y = p + 1
        y_plus_p[0] = 0xee;
        y_plus_p[31] = 0x7f;
        let order_two = EIGHT_TORSION[4];
        let mixed = (ED25519_BASEPOINT_POINT * r + order_two)
            .compress()
            .to_bytes();
        vec![
            // R the identity and s = k a: R = sB - kA holds.
            (
                "small-order R",
                signer.sign_with(Scalar::ZERO, identity, message),
            ),
            (
                "non-canonical R",
                signer.sign_with(Scalar::ZERO, y_plus_p, message),
            ),
            (
                "non-canonical s",
                with_s_plus_order(&signer.sign(i, message)),
            ),
            ("mixed-order R", signer.sign_with(r, mixed, message)),
        ]
    }

    #[test]
    fn each_condition_of_the_batch_keeps_out_what_verify_strict_refuses() {
        let signers: Vec<Signer> = (0..8).map(Signer::new).collect();
        let messages: Vec<Vec<u8>> = (0..8).map(|i| format!("m{i}").into_bytes()).collect();
        let valid: Vec<Vec<u8>> = (0..8).map(|i| signers[i].sign(i, &messages[i])).collect();
        for round in 0..40 {
            for (what, forged) in refused_but_balanced(&signers[0], round, &messages[0]) {
                let forged_item = Item {
                    key: &signers[0].key,
                    message: &messages[0],
                    signature: &forged,
                };
                assert!(!strict(&forged_item), "{what}");
                assert!(prepare(&forged_item).is_none(), "{what} enters the batch");
                let items: Vec<Item<'_>> = std::iter::once(forged_item)
                    .chain((1..8).map(|i| Item {
                        key: &signers[i].key,
                        message: &messages[i],
                        signature: &valid[i],
                    }))
                    .collect();
                let verdicts = verify(&items);
                let expected: Vec<bool> = (0..8).map(|i| i != 0).collect();
                assert_eq!(verdicts, expected, "{what}, round {round}");
            }
        }
    }

    #[test]
    fn a_batch_of_valid_signatures_is_accepted_and_one_bad_signature_is_found() {
        let signers: Vec<Signer> = (0..32).map(Signer::new).collect();
        let messages: Vec<Vec<u8>> = (0..32).map(|i| format!("m{i}").into_bytes()).collect();
        let mut signatures: Vec<Vec<u8>> = signers
            .iter()
            .zip(&messages)
            .enumerate()
            .map(|(i, (s, m))| s.sign(i, m))
            .collect();
        let items = |signatures: &[Vec<u8>]| -> Vec<bool> {
            let items: Vec<Item<'_>> = (0..32)
                .map(|i| Item {
                    key: &signers[i].key,
                    message: &messages[i],
                    signature: &signatures[i],
                })
                .collect();
            verify(&items)
        };
        assert!(items(&signatures).iter().all(|v| *v));
        signatures[17][5] ^= 0x40;
        let verdicts = items(&signatures);
        let refused: Vec<usize> = (0..32).filter(|i| !verdicts[*i]).collect();
        assert_eq!(refused, [17]);
    }

    /// Without the torsion check a mixed-order R would pass about half the batches it is alone
    /// in: the check is what makes the verdicts exact.
    #[test]
    fn a_mixed_order_r_passes_a_batch_without_the_torsion_check() {
        let signer = Signer::new(0);
        let message = b"mixed";
        let r = scalar("nonce", 7);
        let order_two = EIGHT_TORSION[4];
        let mixed = (ED25519_BASEPOINT_POINT * r + order_two)
            .compress()
            .to_bytes();
        let signature = signer.sign_with(r, mixed, message);
        let item = Item {
            key: &signer.key,
            message,
            signature: &signature,
        };
        assert!(!strict(&item));
        let unchecked = Prepared {
            r: CompressedEdwardsY(mixed).decompress().unwrap(),
            a: signer.key.point(),
            s: Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap(),
            k: {
                let mut hash = Sha512::new();
                hash.update(mixed);
                hash.update(signer.key.as_bytes());
                hash.update(message);
                Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
            },
        };
        let passes = (0..200)
            .filter(|_| combination_holds(&[(0, unchecked.clone())]))
            .count();
        assert!((40..160).contains(&passes), "{passes} of 200");
        assert!(prepare(&item).is_none());
        assert_eq!(verify(&[item]), [false]);
    }
}
