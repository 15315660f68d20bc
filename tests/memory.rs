//! The memory budget (issue 18): every structure callers can grow, filled to its default capacity
//! with its largest realistic entries, all at once in this process, together with a CRL at
//! `limits.crl_bytes` being refreshed. A counting allocator gives the bytes each holds, which must
//! stay within 60 % of the Helm chart's default memory limit, the rest being headroom for the
//! server itself and the checks in flight; the process's resident set (`/proc/self/status`),
//! which adds the allocator's own overhead, must grow by at most 70 %.
//!
//! Prints the table of the README and the closing note (`-- --nocapture`).

use std::alloc::System;
use std::collections::HashMap;

use cap::Cap;
use claw_authz::config::Config;
use claw_authz::dev::memory::structures;
use claw_authz::dev::sign::{Ed25519Signer, RegistrySigner, random_ulid};
use claw_authz::protocol::b64;
use claw_authz::protocol::crl::{crl_token_from_body, verify_crl_index};
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::parse_keys_document;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const MIB: f64 = 1024.0 * 1024.0;
const ISSUER: &str = "https://registry.example.com";
const NOW_SECS: u64 = 1_767_225_600;
/// The registry's signing key.
const SEED: [u8; 32] = [1; 32];

/// Share of the chart's memory limit the structures may take (allocated bytes), the rest being
/// the server itself and the checks in flight.
const BUDGET_SHARE: f64 = 0.6;

/// Share of the limit the resident set may grow by with everything full: the allocator's own
/// overhead comes on top of the bytes allocated, and varies from run to run.
const RESIDENT_SHARE: f64 = 0.7;

/// `resources.limits.memory` of the Helm chart's values, in bytes.
fn chart_limit() -> u64 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/helm/claw-authz/values.yaml"
    );
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let limit = values["resources"]["limits"]["memory"].as_str().unwrap();
    let mebibytes: u64 = limit.strip_suffix("Mi").unwrap().parse().unwrap();
    mebibytes << 20
}

/// This process's resident set (`VmRSS`), in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A signed `/v1/crl` body of at most `max` bytes with as many revocations as fit, and how
/// many. Written out by hand, so that making it costs less memory than the refresh measured.
fn crl_body(registry: &RegistrySigner, max: usize) -> (String, usize) {
    let key = Ed25519Signer::from_seed(SEED);
    // `{"jti":"<ULID>","agentDid":"did:cdi:registry.example.com:agent:<ULID>","revokedAt":<s>}`
    let entry = |i: usize| {
        let ulid = random_ulid(1_767_225_600_000 - i as u64);
        let agent = registry.agent_did(&random_ulid(1_767_225_600_000 - i as u64 * 1000));
        format!(r#"{{"jti":"{ulid}","agentDid":"{agent}","revokedAt":{NOW_SECS}}}"#)
    };
    let per_entry = entry(0).len() + 1;
    // base64url grows the payload by 4/3; the header, signature and wrapper take the rest.
    let n = (max - 512) * 3 / 4 / per_entry;
    let mut payload = String::with_capacity(n * per_entry + 256);
    payload.push_str(&format!(
        r#"{{"iss":"{ISSUER}","jti":"{}","iat":{},"exp":{},"revocations":["#,
        random_ulid(0),
        NOW_SECS - 10,
        NOW_SECS + 380
    ));
    for i in 0..n {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(&entry(i));
    }
    payload.push_str("]}");
    let header = format!(r#"{{"alg":"EdDSA","typ":"CRL","kid":"{}"}}"#, registry.kid);
    let input = format!(
        "{}.{}",
        b64::encode(header.as_bytes()),
        b64::encode(payload.as_bytes())
    );
    drop(payload);
    let signature = b64::encode(&key.sign(input.as_bytes()));
    let body = format!(r#"{{"crl":"{input}.{signature}"}}"#);
    assert!(body.len() <= max, "{} bytes", body.len());
    (body, n)
}

/// A keys document of at most `max` bytes with as many active Ed25519 keys as fit, and how
/// many.
fn keys_document(max: usize) -> (String, usize) {
    let entry = |i: usize| {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let x = Ed25519Signer::from_seed(seed).public_b64();
        format!(
            r#"{{"kid":"reg-key-{i:06}","alg":"EdDSA","crv":"Ed25519","x":"{x}","status":"active"}}"#
        )
    };
    let n = (max - 16) / (entry(0).len() + 1);
    let entries: Vec<String> = (0..n).map(entry).collect();
    let document = format!(r#"{{"keys":[{}]}}"#, entries.join(","));
    assert!(document.len() <= max, "{} bytes", document.len());
    (document, n)
}

/// One CRL refresh's work on `body`: the token out of the body, its signature and claims
/// checked, the lookup set built. Returns the set (what the cache keeps).
fn refresh(registry: &RegistrySigner, body: &[u8]) -> std::collections::HashSet<String> {
    let keys = parse_keys_document(registry.keys_document().as_bytes()).unwrap();
    let expect = Expectations {
        issuer: Some(ISSUER),
        now_secs: NOW_SECS,
    };
    let token = crl_token_from_body(body).unwrap();
    verify_crl_index(&token, &keys, expect).unwrap().0
}

struct Row {
    name: String,
    setting: &'static str,
    capacity: u64,
    allocated: u64,
    resident: u64,
    when_full: &'static str,
}

#[test]
fn the_default_capacities_fit_the_charts_memory_limit() {
    let yaml = format!("registry:\n  url: {ISSUER}\n");
    let config = Config::load(&yaml, &HashMap::new()).unwrap();
    let limit = chart_limit();
    let start = (ALLOCATOR.allocated() as u64, resident());
    let mut rows = Vec::new();
    let mut held = Vec::new();

    // The keys document first, then the CRL: each parse's peak is read from the allocator's
    // high-water mark, which only a larger peak can move.
    let max = usize::try_from(config.limits.keys_bytes).unwrap();
    let (document, listed) = keys_document(max);
    let before = ALLOCATOR.allocated() as u64;
    let keys = parse_keys_document(document.as_bytes()).unwrap();
    let keys_peak = ALLOCATOR.max_allocated() as u64 - before;
    let document_size = document.capacity() as u64;
    drop(document);
    rows.push(Row {
        name: format!("registry keys ({listed} keys in {max} bytes)"),
        setting: "limits.keys_bytes",
        capacity: listed as u64,
        allocated: ALLOCATOR.allocated() as u64 - (before - document_size),
        resident: 0,
        when_full: "a larger document is a failed refresh (the keys held keep serving)",
    });
    held.push(Box::new(keys) as Box<dyn std::any::Any>);

    // The CRL: its refresh's peak is read from the allocator's high-water mark.
    let registry = RegistrySigner::new("k1", ISSUER, Ed25519Signer::from_seed(SEED));
    let max = usize::try_from(config.limits.crl_bytes).unwrap();
    let (body, listed) = crl_body(&registry, max);
    let before = (ALLOCATOR.allocated() as u64, resident());
    let set = refresh(&registry, body.as_bytes());
    assert_eq!(set.len(), listed);
    let crl_peak = ALLOCATOR.max_allocated() as u64 - before.0;
    let body_len = body.capacity() as u64;
    drop(body);
    rows.push(Row {
        name: format!("CRL lookup set ({listed} revocations in {max} bytes)"),
        setting: "limits.crl_bytes",
        capacity: listed as u64,
        allocated: ALLOCATOR.allocated() as u64 - (before.0 - body_len),
        resident: resident().saturating_sub(before.1),
        when_full: "a larger CRL is a failed refresh (stale policy)",
    });
    held.push(Box::new(set) as Box<dyn std::any::Any>);

    for s in structures(&config) {
        let before = (ALLOCATOR.allocated() as u64, resident());
        held.push(s.fill(usize::try_from(s.capacity).unwrap()));
        rows.push(Row {
            name: s.name.to_owned(),
            setting: s.setting,
            capacity: s.capacity,
            allocated: ALLOCATOR.allocated() as u64 - before.0,
            resident: resident().saturating_sub(before.1),
            when_full: s.when_full,
        });
    }

    // Everything full at once, and a CRL refresh on top (the old set stays until the new one
    // replaces it).
    let (body, _) = crl_body(&registry, max);
    let full = ALLOCATOR.allocated() as u64;
    let again = refresh(&registry, body.as_bytes());
    let peak = ALLOCATOR.max_allocated() as u64 - start.0;
    drop((body, again));
    let resident_total = resident().saturating_sub(start.1);
    let budget = (limit as f64 * BUDGET_SHARE) as u64;

    println!("| structure | setting | capacity | bytes/entry (allocated) | total | when full |");
    println!("|---|---|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | `{}` | {} | {} | {:.1} MiB | {} |",
            r.name,
            r.setting,
            r.capacity,
            r.allocated / r.capacity.max(1),
            r.allocated as f64 / MIB,
            r.when_full
        );
    }
    for r in &rows {
        println!(
            "figure: {}: {:.0} bytes/entry resident",
            r.name,
            r.resident as f64 / r.capacity.max(1) as f64
        );
    }
    println!(
        "figure: all full: {:.1} MiB allocated; peak with a CRL refresh {:.1} MiB (the refresh \
         alone {:.1} MiB, a keys document's parse {:.1} MiB); resident growth {:.1} MiB; budget \
         {:.1} MiB = {:.0} % of the chart's {:.0} MiB",
        (full - start.0) as f64 / MIB,
        peak as f64 / MIB,
        crl_peak as f64 / MIB,
        keys_peak as f64 / MIB,
        resident_total as f64 / MIB,
        budget as f64 / MIB,
        BUDGET_SHARE * 100.0,
        limit as f64 / MIB,
    );
    assert!(
        peak <= budget,
        "peak {:.1} MiB over the budget {:.1} MiB",
        peak as f64 / MIB,
        budget as f64 / MIB
    );
    let resident_budget = (limit as f64 * RESIDENT_SHARE) as u64;
    assert!(
        resident_total <= resident_budget,
        "resident growth {:.1} MiB over {:.1} MiB",
        resident_total as f64 / MIB,
        resident_budget as f64 / MIB
    );
    drop(held);
}
