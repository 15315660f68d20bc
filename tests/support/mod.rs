//! Shared test helpers: the reference vectors (`tests/vectors/`), fixture keys, and token/proof
//! signing.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use claw_authz::crypto::{Ed25519Key, PublicKey};
use claw_authz::protocol::keys::{KeySet, parse_keys_document};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

pub const NOW: u64 = 1_767_225_600;
pub const ISSUER: &str = "https://registry.example.com";

pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/clawdentity")
}

pub fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

pub fn fixtures() -> Value {
    load("fixtures.json")
}

/// The key set of `fixtures.keysDoc` (reg-key-a active).
pub fn fixture_keys() -> KeySet {
    let doc = fixtures()["keysDoc"].to_string();
    parse_keys_document(doc.as_bytes()).unwrap()
}

pub fn rotated_keys() -> KeySet {
    let doc = fixtures()["keysDocRotated"].to_string();
    parse_keys_document(doc.as_bytes()).unwrap()
}

pub fn seed(hex_seed: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_seed[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The signing key of a fixture registry key (`reg-key-a`, ...).
pub fn registry_signer(kid: &str) -> SigningKey {
    let hex = fixtures()["registryKeys"][kid]["secretKeySeedHex"]
        .as_str()
        .unwrap()
        .to_owned();
    SigningKey::from_bytes(&seed(&hex))
}

pub fn agent_signer(name: &str) -> SigningKey {
    let hex = fixtures()["agentKeys"][name]["secretKeySeedHex"]
        .as_str()
        .unwrap()
        .to_owned();
    SigningKey::from_bytes(&seed(&hex))
}

pub fn ed_public(signer: &SigningKey) -> PublicKey {
    PublicKey::Ed25519(Ed25519Key::from_bytes(signer.verifying_key().as_bytes()).unwrap())
}

/// A deterministic P-256 key from a label.
pub fn p256_signer(label: &str) -> p256::ecdsa::SigningKey {
    use sha2::Digest;
    let scalar = sha2::Sha256::digest(label.as_bytes());
    p256::ecdsa::SigningKey::from_slice(&scalar).unwrap()
}

pub fn p256_xy(signer: &p256::ecdsa::SigningKey) -> (String, String) {
    let point = signer.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    (b64(&bytes[1..33]), b64(&bytes[33..65]))
}

/// Signs `header.payload` (raw JSON texts) with Ed25519.
pub fn sign_jws_ed(header: &str, payload: &str, signer: &SigningKey) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// Signs `header.payload` with ES256 (64-byte r||s).
pub fn sign_jws_es(header: &str, payload: &str, signer: &p256::ecdsa::SigningKey) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig: p256::ecdsa::Signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// The claims of the fixture AIT for agent A, as a JSON value to modify.
pub fn agent_a_claims() -> Value {
    let vectors = load("ait.json");
    vectors["vectors"][0]["decodedPayload"].clone()
}

pub const AIT_HEADER: &str = r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a"}"#;

pub mod certs;
pub mod conformance;
pub mod logs;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod registry;
pub mod server;
pub mod world;
