//! Signature verification with the strict rules of `docs/deviations.md` item 7.
//!
//! Keys are validated once, when they are parsed (registry documents, AIT `cnf` keys), and the
//! parsed form is what callers cache; nothing here decodes a key per request. Ed25519 uses
//! `verify_strict`'s rules (its verdicts, computed a little cheaper: [`Ed25519Key::verify`]) and refuses small-order, mixed-order and non-canonical public keys, which
//! closes the universal-forgery key `0100..00` that ZIP-215 verifiers accept. ES256 signatures
//! must be the 64-byte `r||s` form; DER and padded variants are refused by length.
//!
//! P-256 verification uses aws-lc-rs with a pre-parsed key: the benchmark (`benches/protocol.rs`)
//! measured it about 5x faster than the pure-Rust `p256` crate on this machine (51 vs 285 us per
//! verify in one run), and aws-lc-rs
//! is already the TLS crypto provider, so it adds no second implementation to the tree.

pub mod batch;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

/// The signature algorithms the verifier knows. There is deliberately no `none` and no HMAC arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    EdDSA,
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
        }
    }
}

/// Why key bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not a point on the curve, or not its canonical encoding.
    Invalid,
    /// An Ed25519 point of small or mixed order (a forgery risk, never a real key).
    Weak,
}

/// A verified-on-load Ed25519 public key: its encoding and its negated point, kept for
/// [`Ed25519Key::verify`].
#[derive(Debug, Clone)]
pub struct Ed25519Key {
    bytes: [u8; 32],
    minus_point: EdwardsPoint,
}

impl Ed25519Key {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::Invalid)?;
        let point = key.to_edwards();
        if point.compress().to_bytes() != *bytes {
            return Err(KeyError::Invalid);
        }
        // is_weak catches the 8 small-order points; the torsion check also drops mixed-order keys.
        if key.is_weak() || !point.is_torsion_free() {
            return Err(KeyError::Weak);
        }
        Ok(Ed25519Key {
            bytes: *bytes,
            minus_point: -point,
        })
    }

    /// Exactly `VerifyingKey::verify_strict`'s verdict, one field exponentiation cheaper.
    ///
    /// `verify_strict` decompresses `R` (a square root), refuses it when it has small order,
    /// computes `R' = [s]B - [k]A` and compares `R'`'s encoding with `R`'s bytes. Here `R` is
    /// not decompressed: `R'` is computed and encoded first, and its bytes must equal `R`'s.
    /// Then `R` is a canonical encoding of `R'` itself, so it decompresses, to `R'`, and
    /// refusing a small-order `R'` refuses a small-order `R` (three doublings instead of the
    /// square root). Every other step is `verify_strict`'s: `s` must be canonical (below the
    /// group order), `k = SHA-512(R || A || M) mod l`, and `A`'s small order is refused when
    /// the key is parsed. The tests hold the verdicts to `verify_strict`'s on the corner cases
    /// (small-order, mixed-order and non-canonical `R`, non-canonical `s`) and on RFC 8032's
    /// vectors. About 3 us per verify of the 22 measured here (`BENCHMARKS.md`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (r_bytes, s_bytes) = signature.split_at(32);
        let Ok(s_bytes) = <[u8; 32]>::try_from(s_bytes) else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(self.bytes);
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_point, &s);
        expected.compress().as_bytes() == r_bytes && !expected.is_small_order()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key's curve point (torsion-free: checked when the key was parsed).
    pub(crate) fn point(&self) -> EdwardsPoint {
        -self.minus_point
    }
}

/// A verified-on-load P-256 public key, kept parsed for aws-lc-rs.
#[derive(Clone)]
pub struct P256Key {
    parsed: ParsedPublicKey,
    sec1: [u8; 65],
}

impl std::fmt::Debug for P256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P256Key").finish_non_exhaustive()
    }
}

impl P256Key {
    /// From the JWK affine coordinates; refuses points off the curve.
    pub fn from_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Result<Self, KeyError> {
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        let parsed =
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, sec1).map_err(|_| KeyError::Invalid)?;
        Ok(P256Key { parsed, sec1 })
    }

    /// ES256 over `message`; only the 64-byte `r||s` form is accepted.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == 64 && self.parsed.verify_sig(message, signature).is_ok()
    }

    pub(crate) fn sec1_uncompressed(&self) -> &[u8; 65] {
        &self.sec1
    }
}

/// An RSA public key of 2048 to 8192 bits and the one algorithm it is used with (`RS256` or
/// `PS256`: the JWK's `alg`, or the header of a proof that carries its own key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaKey {
    /// The modulus, big-endian, without leading zeros.
    n: Vec<u8>,
    /// The public exponent, big-endian, without leading zeros.
    e: Vec<u8>,
    alg: Alg,
}

impl RsaKey {
    /// From the JWK's `n` and `e`; refuses moduli outside 2048-8192 bits, non-minimal
    /// encodings, and exponents that are even, below 3 or above 2^32 (as aws-lc-rs does at
    /// verification, refused here once).
    pub fn from_components(n: &[u8], e: &[u8], alg: Alg) -> Result<Self, KeyError> {
        let minimal = |b: &[u8]| b.first().is_some_and(|first| *first != 0);
        if !matches!(alg, Alg::RS256 | Alg::PS256) || !minimal(n) || !minimal(e) {
            return Err(KeyError::Invalid);
        }
        let bits = n.len() * 8 - n[0].leading_zeros() as usize;
        let exponent = e.iter().try_fold(0u64, |acc, b| {
            acc.checked_mul(256).map(|a| a + u64::from(*b))
        });
        let exponent_ok = exponent.is_some_and(|x| x >= 3 && x % 2 == 1 && x <= 1 << 32);
        if !(2048..=8192).contains(&bits) || !exponent_ok {
            return Err(KeyError::Invalid);
        }
        Ok(RsaKey {
            n: n.to_vec(),
            e: e.to_vec(),
            alg,
        })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{
            RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, RsaPublicKeyComponents,
        };
        let params = match self.alg {
            Alg::RS256 => &RSA_PKCS1_2048_8192_SHA256,
            Alg::PS256 => &RSA_PSS_2048_8192_SHA256,
            Alg::EdDSA | Alg::ES256 => return false,
        };
        // The signature is exactly the modulus' length (RFC 8017 §8.1.2 and §8.2.2 step 1).
        if signature.len() != self.n.len() {
            return false;
        }
        let key = RsaPublicKeyComponents {
            n: &self.n[..],
            e: &self.e[..],
        };
        key.verify(params, message, signature).is_ok()
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn modulus(&self) -> &[u8] {
        &self.n
    }

    pub(crate) fn exponent(&self) -> &[u8] {
        &self.e
    }
}

/// A public key and, through its type, the one algorithm it may be used with.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Ed25519(Ed25519Key),
    P256(P256Key),
    Rsa(RsaKey),
}

impl PublicKey {
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::Ed25519(_) => Alg::EdDSA,
            PublicKey::P256(_) => Alg::ES256,
            PublicKey::Rsa(k) => k.alg,
        }
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(k) => k.verify(message, signature),
            PublicKey::P256(k) => k.verify(message, signature),
            PublicKey::Rsa(k) => k.verify(message, signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn identity_key_and_universal_forgery_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519Key::from_bytes(&identity).unwrap_err(),
            KeyError::Weak
        );
        // Even if a caller bypassed the key check, verify_strict refuses R = identity, S = 0.
        let key = VerifyingKey::from_bytes(&identity).unwrap();
        let mut sig = [0u8; 64];
        sig[0] = 1;
        assert!(
            key.verify_strict(b"any message", &Signature::from_bytes(&sig))
                .is_err()
        );
        // ...while the lenient verify accepts it, which is why it is never called.
        assert!(
            key.verify(b"any message", &Signature::from_bytes(&sig))
                .is_ok()
        );
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_refused() {
        for hex in [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ] {
            assert!(Ed25519Key::from_bytes(&hex32(hex)).is_err(), "{hex}");
        }
    }

    #[test]
    fn p256_off_curve_is_refused() {
        assert_eq!(
            P256Key::from_coordinates(&[1; 32], &[2; 32]).unwrap_err(),
            KeyError::Invalid
        );
    }
}
