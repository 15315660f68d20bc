//! Proof-of-possession header parsing and path normalization: fields separated by 0xFF are
//! method, raw `:path`, timestamp, nonce, body hash, proof and body.
#![no_main]

use std::sync::OnceLock;

use claw_authz::crypto::{Ed25519Key, PublicKey};
use claw_authz::protocol::path::normalize;
use claw_authz::protocol::pop::{ProofInput, verify_proof};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let vk = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        PublicKey::Ed25519(Ed25519Key::from_bytes(vk.as_bytes()).expect("fixed key"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(7, |&b| b == 0xff);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (method, target, ts, nonce, hash, proof) = (next(), next(), next(), next(), next(), next());
    let body = fields.next().unwrap_or_default();
    let path = match normalize(&target) {
        Ok(n) => n.path_with_query,
        Err(_) => return,
    };
    let input = ProofInput {
        method: &method,
        path_with_query: &path,
        timestamp: Some(&ts),
        nonce: Some(&nonce),
        body_sha256: Some(&hash),
        proof: Some(&proof),
        body,
    };
    let _ = verify_proof(&input, key(), 1_767_225_600_000, 300);
});
