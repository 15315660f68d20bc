//! Protocol-core costs, measured in one run: raw Ed25519 verify, AIT verify, PoP verify, path
//! normalization, and P-256 verify by aws-lc-rs (used) and by the `p256` crate (compared).
//!
//! `cargo bench --bench protocol` ends with a table of ns/op and the ratio the issue tracks:
//! PoP verify / raw Ed25519 verify (goal: within 1.1). Issue 20: the exact batch verification
//! (`crypto::batch`) per signature at 8 and 32 signatures a batch, and the torsion check each
//! signature in a batch needs, beside `verify_strict` alone; and claw-authz's own verifier
//! (`Ed25519Key::verify`: `verify_strict`'s verdicts without decompressing `R`) beside it.

use std::hint::black_box;
use std::path::PathBuf;

use claw_authz::crypto::batch::{self, Item};
use claw_authz::crypto::{Ed25519Key, P256Key, PublicKey};
use claw_authz::protocol::ait::verify_ait;
use claw_authz::protocol::b64;
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::parse_keys_document;
use claw_authz::protocol::path::normalize;
use claw_authz::protocol::pop::{ProofInput, body_sha256, canonical_string, verify_proof};
use criterion::Criterion;
use ed25519_dalek::{Signer, SigningKey};
use p256::ecdsa::signature::Verifier as _;
use serde_json::Value;

const NOW: u64 = 1_767_225_600;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/clawdentity")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion")
}

fn benches(c: &mut Criterion) {
    let fixtures = vectors("fixtures.json");
    let keys = parse_keys_document(fixtures["keysDoc"].to_string().as_bytes()).unwrap();
    let token = fixtures["aits"]["agentA"].as_str().unwrap().to_owned();
    let expect = Expectations {
        issuer: Some("https://registry.example.com"),
        now_secs: NOW,
    };

    let seed: [u8; 32] = b64::decode_array(
        fixtures["agentKeys"]["agentA"]["secretKeySeedB64u"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let signer = SigningKey::from_bytes(&seed);
    let body = br#"{"message":"hello from the benchmark"}"#;
    let hash = body_sha256(body);
    let ts = NOW.to_string();
    let nonce = "bm9uY2UtMDAwMDAwMDAwMQ";
    let canonical = canonical_string("POST", "/hooks/message", &ts, nonce, &hash);
    let sig = signer.sign(canonical.as_bytes());
    let proof = b64::encode(&sig.to_bytes());
    let agent_key =
        PublicKey::Ed25519(Ed25519Key::from_bytes(signer.verifying_key().as_bytes()).unwrap());
    let dalek_key = signer.verifying_key();

    let mut g = c.benchmark_group("protocol");
    g.bench_function("ed25519_verify_strict_raw", |b| {
        b.iter(|| {
            dalek_key
                .verify_strict(black_box(canonical.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
    // The same verdicts without decompressing R (`Ed25519Key::verify`).
    let claw_key = Ed25519Key::from_bytes(signer.verifying_key().as_bytes()).unwrap();
    let sig_bytes = sig.to_bytes();
    g.bench_function("ed25519_verify_claw_authz", |b| {
        b.iter(|| assert!(claw_key.verify(black_box(canonical.as_bytes()), black_box(&sig_bytes))))
    });
    // 32 agents' signatures over their own messages, for the batch verifier.
    let batch_keys: Vec<(Ed25519Key, Vec<u8>, Vec<u8>)> = (0..32u8)
        .map(|i| {
            let signer = SigningKey::from_bytes(&[i + 1; 32]);
            let message = format!("batch message {i}").into_bytes();
            let signature = signer.sign(&message).to_bytes().to_vec();
            let key = Ed25519Key::from_bytes(signer.verifying_key().as_bytes()).unwrap();
            (key, message, signature)
        })
        .collect();
    for n in [8usize, 32] {
        let items: Vec<Item<'_>> = batch_keys[..n]
            .iter()
            .map(|(key, message, signature)| Item {
                key,
                message,
                signature,
            })
            .collect();
        g.bench_function(format!("ed25519_batch_exact_{n}"), |b| {
            b.iter(|| assert!(batch::verify(black_box(&items)).iter().all(|v| *v)))
        });
    }
    let r = curve25519_dalek::edwards::CompressedEdwardsY(sig.to_bytes()[..32].try_into().unwrap())
        .decompress()
        .unwrap();
    g.bench_function("ed25519_r_torsion_check", |b| {
        b.iter(|| assert!(black_box(r).is_torsion_free()))
    });
    g.bench_function("ait_verify", |b| {
        b.iter(|| verify_ait(black_box(&token), &keys, expect).unwrap())
    });
    g.bench_function("pop_verify", |b| {
        b.iter(|| {
            let input = ProofInput {
                method: "POST",
                path_with_query: "/hooks/message",
                timestamp: Some(&ts),
                nonce: Some(nonce),
                body_sha256: Some(&hash),
                proof: Some(&proof),
                body: black_box(body),
            };
            verify_proof(&input, &agent_key, NOW * 1000, 300).unwrap()
        })
    });
    g.bench_function("path_normalize", |b| {
        b.iter(|| normalize(black_box("/hooks/./message?b=2&a=1&q=hello world")).unwrap())
    });

    // P-256: the same key and signature through both implementations.
    let p_signer = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let p_sig: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&p_signer, canonical.as_bytes());
    let p_sig_bytes = p_sig.to_bytes();
    let point = p_signer.verifying_key().to_sec1_point(false);
    let xy = point.as_bytes();
    let lc_key = P256Key::from_coordinates(
        xy[1..33].try_into().unwrap(),
        xy[33..65].try_into().unwrap(),
    )
    .unwrap();
    let rc_key = *p_signer.verifying_key();
    g.bench_function("p256_verify_aws_lc_rs", |b| {
        b.iter(|| assert!(lc_key.verify(black_box(canonical.as_bytes()), black_box(&p_sig_bytes))))
    });
    g.bench_function("p256_verify_p256_crate", |b| {
        b.iter(|| {
            rc_key
                .verify(black_box(canonical.as_bytes()), black_box(&p_sig))
                .unwrap()
        })
    });
    g.finish();
}

fn mean_ns(id: &str) -> Option<f64> {
    let path = output_dir()
        .join("protocol")
        .join(id)
        .join("new/estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .configure_from_args();
    benches(&mut c);
    c.final_summary();

    let ids = [
        "ed25519_verify_strict_raw",
        "ed25519_verify_claw_authz",
        "ed25519_batch_exact_8",
        "ed25519_batch_exact_32",
        "ed25519_r_torsion_check",
        "ait_verify",
        "pop_verify",
        "path_normalize",
        "p256_verify_aws_lc_rs",
        "p256_verify_p256_crate",
    ];
    println!("\n| operation | mean ns/op |\n|---|---:|");
    for id in ids {
        if let Some(ns) = mean_ns(id) {
            println!("| {id} | {ns:.0} |");
        }
    }
    if let (Some(pop), Some(raw)) = (mean_ns("pop_verify"), mean_ns("ed25519_verify_strict_raw")) {
        println!(
            "\nratio pop_verify / ed25519_verify_strict_raw = {:.3}",
            pop / raw
        );
    }
    if let (Some(ours), Some(raw)) = (
        mean_ns("ed25519_verify_claw_authz"),
        mean_ns("ed25519_verify_strict_raw"),
    ) {
        println!(
            "ratio ed25519_verify_claw_authz / ed25519_verify_strict_raw = {:.3}",
            ours / raw
        );
    }
    if let Some(raw) = mean_ns("ed25519_verify_strict_raw") {
        for n in [8.0, 32.0] {
            if let Some(batch) = mean_ns(&format!("ed25519_batch_exact_{n}")) {
                println!(
                    "exact batch of {n}: {:.0} ns per signature, {:.2} x verify_strict",
                    batch / n,
                    batch / n / raw
                );
            }
        }
        if let Some(torsion) = mean_ns("ed25519_r_torsion_check") {
            println!("torsion check of R: {:.2} x verify_strict", torsion / raw);
        }
    }
    if let (Some(lc), Some(rc)) = (
        mean_ns("p256_verify_aws_lc_rs"),
        mean_ns("p256_verify_p256_crate"),
    ) {
        println!("ratio p256 crate / aws-lc-rs = {:.2}", rc / lc);
    }
}
