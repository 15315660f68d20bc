//! Server-provided DPoP nonces (RFC 9449 §8) without shared state: a nonce is the period it was
//! issued in and a MAC of that period under a key every replica holds, so any replica accepts
//! what any other issued, for the current period and the one before it.

use aws_lc_rs::hmac;

use crate::protocol::b64;

/// The MAC bytes a nonce carries (128 bits).
const TAG_LEN: usize = 16;

/// Issues and checks nonces for periods of `lifetime_secs`.
pub struct NonceKey {
    key: hmac::Key,
    lifetime_secs: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl NonceKey {
    pub fn new(secret: &[u8], lifetime_secs: u64) -> Self {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime_secs: lifetime_secs.max(1),
        }
    }

    /// A key of 32 random bytes: nonces then hold for this process only.
    pub fn random(lifetime_secs: u64) -> Self {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("the system random source works");
        NonceKey::new(&secret, lifetime_secs)
    }

    fn period(&self, now_secs: u64) -> u64 {
        now_secs / self.lifetime_secs
    }

    fn tag(&self, period: u64) -> [u8; TAG_LEN] {
        let mut input = *b"claw-authz dpop nonce 00000000";
        input[22..].copy_from_slice(&period.to_be_bytes());
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hmac::sign(&self.key, &input).as_ref()[..TAG_LEN]);
        tag
    }

    /// The nonce to hand out now.
    pub fn issue(&self, now_secs: u64) -> String {
        let period = self.period(now_secs);
        let mut bytes = [0u8; 8 + TAG_LEN];
        bytes[..8].copy_from_slice(&period.to_be_bytes());
        bytes[8..].copy_from_slice(&self.tag(period));
        b64::encode(&bytes)
    }

    /// Whether `nonce` was issued by this key in the current period, the one before, or the
    /// next (a replica whose clock runs a little ahead).
    pub fn accepts(&self, nonce: &str, now_secs: u64) -> bool {
        let Ok(bytes) = b64::decode_array::<{ 8 + TAG_LEN }>(nonce) else {
            return false;
        };
        let period = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let current = self.period(now_secs);
        let fresh = period.abs_diff(current) <= 1;
        // The tag is a MAC: compared in constant time.
        fresh
            && aws_lc_rs::constant_time::verify_slices_are_equal(&self.tag(period), &bytes[8..])
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_holds_for_its_period_and_the_next_and_on_every_replica() {
        let (a, b) = (NonceKey::new(b"shared", 300), NonceKey::new(b"shared", 300));
        let nonce = a.issue(1_000_000);
        assert!(b.accepts(&nonce, 1_000_000));
        assert!(b.accepts(&nonce, 1_000_000 + 299));
        // 1,000,000 is in period 3333 (999,900-1,000,199); 3335 starts at 1,000,500.
        assert!(!b.accepts(&nonce, 1_000_500));
        // From a replica whose clock is ahead: period 3334, issued by one at 3333.
        assert!(b.accepts(&a.issue(1_000_300), 1_000_000));
        assert!(!b.accepts(&a.issue(1_000_500), 1_000_000));
        assert!(!NonceKey::new(b"other", 300).accepts(&nonce, 1_000_000));
    }

    #[test]
    fn altered_or_foreign_nonces_are_refused() {
        let key = NonceKey::new(b"k", 60);
        let nonce = key.issue(600);
        let mut bytes = b64::decode(&nonce).unwrap();
        bytes[20] ^= 1;
        assert!(!key.accepts(&b64::encode(&bytes), 600));
        // Another period's tag under this period's number.
        let mut moved = b64::decode(&key.issue(660)).unwrap();
        moved[..8].copy_from_slice(&10u64.to_be_bytes());
        assert!(!key.accepts(&b64::encode(&moved), 600));
        for junk in ["", "abc", &"A".repeat(400), "not base64!"] {
            assert!(!key.accepts(junk, 600));
        }
    }
}
