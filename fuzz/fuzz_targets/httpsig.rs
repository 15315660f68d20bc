//! HTTP Message Signatures: `Signature-Input` and `Signature` parsing, the signature base over
//! a request built from the input, verification, and `Content-Digest`. Fields separated by 0xFF
//! are Signature-Input, Signature, method, target, authority, header lines (`name: value`
//! separated by newlines) and body.
#![no_main]

use std::sync::OnceLock;

use claw_authz::crypto::{Ed25519Key, PublicKey};
use claw_authz::httpsig::{self, Request};
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
    let (input, signature, method, target, authority, lines) =
        (next(), next(), next(), next(), next(), next());
    let body = fields.next().unwrap_or_default();
    let request = Request {
        method,
        scheme: "https".into(),
        authority,
        target,
        fields: lines
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
            .collect(),
    };
    let _ = httpsig::digest::check(&lines, body);
    let Ok(signatures) = httpsig::parse(&input, &signature) else {
        return;
    };
    for s in &signatures {
        let _ = s.covers("content-digest");
        if let Ok(base) = httpsig::base(&request, s) {
            let _ = httpsig::verify(key(), s, &base);
        }
    }
});
