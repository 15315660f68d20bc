//! The memory budget's material: every structure that grows with what callers (or the registry)
//! send, built at a given capacity and filled with its largest realistic entries through its own
//! API, so a counting allocator can measure bytes per entry (`tests/memory.rs`). Nothing here is
//! on the request path.
//!
//! The sizes are the real ones: agent DIDs of the registry's form (61 bytes), ULID `jti`s,
//! 64-byte access tokens, AIT claims at their longest (name 64, framework 32, description 280).

use std::any::Any;
use std::sync::Arc;

use crate::cache::access::{AccessCache, AccessTiming, Subject};
use crate::cache::ait::{AitCache, VerifiedAit};
use crate::cache::bearer::{BearerCache, VerifiedBearer};
use crate::cache::trust::{TrustCache, TrustTiming};
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::crypto::{Ed25519Key, PublicKey};
use crate::protocol::ait::{AgentKey, AitClaims};
use crate::protocol::bearer::BearerClaims;
use crate::ratelimit::{Limit, Limiter, LocalLimiter};
use crate::registry::{BoxFuture, KeySource, Registry, Response, TransportError};
use crate::revocation::Events;
use crate::revocation::publisher::{revocation_envelope, token_revocation_envelope};
use crate::store::StoreError;
use crate::store::nonce::MemoryNonceStore;
use crate::store::trust::TrustStore;

/// The time every structure is filled at (2026-01-01).
const NOW_MS: u64 = 1_767_225_600_000;

/// A structure of the budget.
pub struct Structure {
    pub name: &'static str,
    /// The setting that bounds it.
    pub setting: &'static str,
    /// Its capacity under the configuration given to [`structures`].
    pub capacity: u64,
    /// What a full one does.
    pub when_full: &'static str,
    fill: fn(usize) -> Box<dyn Any>,
}

impl Structure {
    /// The structure at capacity `n`, holding `n` entries.
    pub fn fill(&self, n: usize) -> Box<dyn Any> {
        (self.fill)(n)
    }
}

/// Every structure callers can grow, with its capacity under `config`.
pub fn structures(config: &Config) -> Vec<Structure> {
    vec![
        Structure {
            name: "nonce records (memory and file stores)",
            setting: "nonce.capacity",
            capacity: config.nonce.capacity,
            when_full: "new nonces get 503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE, counted \
                        (claw_authz_nonce_store_full_total)",
            fill: nonces,
        },
        Structure {
            name: "rate-limit keys (local limiter)",
            setting: "rate_limit.capacity",
            capacity: config.rate_limit.capacity,
            when_full: "keys it does not track yet get 429 (retry-after: 1)",
            fill: limiter_keys,
        },
        Structure {
            name: "verified AITs",
            setting: "limits.ait_cache_capacity",
            capacity: config.limits.ait_cache_capacity,
            when_full: "evicts (TinyLFU); an evicted token is verified again",
            fill: aits,
        },
        Structure {
            name: "verified bearer tokens",
            setting: "limits.bearer_cache_capacity",
            capacity: config.limits.bearer_cache_capacity,
            when_full: "evicts (TinyLFU); an evicted token is verified again",
            fill: bearer_tokens,
        },
        Structure {
            name: "access answers, valid (+ the agent's budget)",
            setting: "access.capacity",
            capacity: config.access.capacity,
            when_full: "evicts; an evicted answer is asked again",
            fill: access_valid,
        },
        Structure {
            name: "access answers, refused",
            setting: "access.capacity",
            capacity: config.access.capacity,
            when_full: "evicts; never crowds out valid answers",
            fill: access_refused,
        },
        Structure {
            name: "trust answers (known + revoked, per agent)",
            setting: "trust.cache_capacity",
            capacity: config.trust.cache_capacity,
            when_full: "evicts; an evicted answer is asked again",
            fill: trust_answers,
        },
        Structure {
            name: "pushed revocations, an agent and a token id (+ envelope ids)",
            setting: "events.capacity",
            capacity: config.events.capacity,
            when_full: "new revocations refused (503 on POST, skipped on the stream), counted",
            fill: revocations,
        },
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// `did:cdi:<authority>:agent:<ULID>` for entry `i`, 61 bytes.
fn agent_did(i: usize) -> String {
    format!("did:cdi:registry.example.com:agent:01KDX{i:0>21}")
}

fn ulid(i: usize) -> String {
    format!("01KDX{i:0>21}")
}

fn nonces(n: usize) -> Box<dyn Any> {
    let store = MemoryNonceStore::new(n, n);
    for i in 0..n {
        let nonce = format!("{i:0>22}");
        // A thousand agents share the records.
        let agent = agent_did(i % 1_000);
        let outcome = store.check(&agent, &nonce, NOW_MS + 600_000, NOW_MS);
        assert!(outcome.is_ok(), "nonce {i} recorded");
    }
    Box::new(store)
}

fn limiter_keys(n: usize) -> Box<dyn Any> {
    let limiter = LocalLimiter::new(n);
    let limit = Limit {
        requests: 10,
        window_ms: 60_000,
        burst: 10,
    };
    let rt = runtime();
    for i in 0..n {
        let key = format!("client:2001:db8::{i:x}");
        let verdict = rt.block_on(limiter.check(&key, &limit, NOW_MS));
        assert!(verdict.is_ok(), "key {i} checked");
    }
    Box::new(limiter)
}

fn aits(n: usize) -> Box<dyn Any> {
    let key = || PublicKey::Ed25519(Ed25519Key::from_bytes(&REGISTRY_KEY).expect("a valid key"));
    let claims = |i: usize| AitClaims {
        iss: "https://registry.example.com".into(),
        sub: agent_did(i),
        owner_did: format!("did:cdi:registry.example.com:human:01KDX{i:0>21}"),
        name: "n".repeat(64),
        framework: "f".repeat(32),
        description: Some("d".repeat(280)),
        cnf: AgentKey {
            key: key(),
            x: "x".repeat(43),
            y: None,
        },
        iat: NOW_MS / 1000,
        nbf: NOW_MS / 1000,
        exp: NOW_MS / 1000 + 86_400,
        jti: ulid(i),
    };
    let cache = AitCache::new(n as u64);
    // Each agent has had a check allowed: its encoded answer is kept with it (one policy; the
    // default credential headers).
    let policy = crate::policy::Policy::default_enforce();
    let remove = crate::config::Defaults::REMOVE_HEADERS.map(String::from);
    for i in 0..n {
        let verified = VerifiedAit::new(claims(i), "reg-key-2026".into(), key());
        let allowed = crate::pipeline::Decision::Allow {
            identity: Some(crate::pipeline::Identity::Claw(verified.identity.clone())),
            policy: policy.clone(),
        };
        let answer = crate::response::encoded(&allowed, &remove, || crate::response::Particulars {
            request_id: "",
            server_time_secs: 0,
            scheme: None,
        });
        assert!(answer.is_ok() && matches!(answer, crate::server::Answer::Shared(_)));
        let digest = AitCache::digest(&format!("token {i}"));
        cache.insert(digest, verified, NOW_MS / 1000);
    }
    assert_eq!(cache.len(), n, "every token held");
    let shared = crate::response::shared_held();
    assert_eq!(
        shared,
        n.min(crate::response::SHARED_MAX),
        "encoded answers kept"
    );
    Box::new(cache)
}

/// Bearer tokens with generous grants: 4 roles, 8 permissions, 8 scopes, 2 audiences. Their
/// encoded answers share the process's 4,096 with the agents' and are counted in the AIT row.
fn bearer_tokens(n: usize) -> Box<dyn Any> {
    let jwk = crate::dev::sign::P256Signer::random().jwk();
    let coordinate = |c: &str| crate::protocol::b64::decode_array::<32>(jwk[c].as_str().unwrap());
    let (x, y) = (coordinate("x").unwrap(), coordinate("y").unwrap());
    let key = PublicKey::P256(crate::crypto::P256Key::from_coordinates(&x, &y).unwrap());
    let list = |prefix: &str, n: usize, len: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:0>len$}")).collect()
    };
    let claims = |i: usize| BearerClaims {
        sub: agent_did(i),
        iss: "https://auth.example.com/tenant-0001".into(),
        jti: ulid(i),
        iat: NOW_MS / 1000,
        exp: NOW_MS / 1000 + 3_600,
        nbf: Some(NOW_MS / 1000),
        audiences: list("https://api.example.com/service-", 2, 8),
        kid: "issuer-key-2026-01".into(),
        roles: list("role-", 4, 11),
        permissions: list("orders:", 8, 17),
        trust_score: Some(0.82),
        cnf: None,
        jkt: None,
        scopes: list("scope:", 8, 10),
    };
    let cache = BearerCache::new(n as u64);
    for i in 0..n {
        let verified = VerifiedBearer::new(claims(i), 0, key.clone());
        let digest = cache.digest(&format!("token {i}"));
        cache.insert(digest, verified, NOW_MS / 1000);
    }
    assert_eq!(cache.len(), n, "every token held");
    Box::new(cache)
}

/// An Ed25519 public key (RFC 8032 section 7.1, test 1).
const REGISTRY_KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

/// A registry answering every validation with `status`.
struct Answers(u16);

impl KeySource for Answers {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async { Err(TransportError::Failed) })
    }
}

impl Registry for Answers {
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async { Err(TransportError::Failed) })
    }

    fn validate_access<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        let status = self.0;
        Box::pin(async move { Ok(status) })
    }
}

fn access(n: usize, status: u16) -> Box<dyn Any> {
    let timing = AccessTiming {
        positive_ttl_ms: 60_000,
        negative_ttl_ms: 10_000,
        stale_if_error_ms: 600_000,
        calls_per_agent_per_minute: 30,
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(NOW_MS));
    let cache = Arc::new(AccessCache::new(
        Arc::new(Answers(status)),
        clock,
        timing,
        n as u64,
    ));
    let rt = runtime();
    for i in 0..n {
        let (token, agent, jti) = (format!("clw_agt_{i:0>56}"), agent_did(i), ulid(i));
        let subject = Subject {
            access_token: &token,
            agent_did: &agent,
            ait_jti: &jti,
            ait_exp_secs: NOW_MS / 1000 + 86_400,
        };
        let answer = rt.block_on(cache.validate(&subject));
        assert_eq!(answer.is_ok(), status == 204, "validation {i}");
    }
    rt.block_on(cache.flush());
    assert_eq!(cache.len(), n, "every answer held");
    Box::new(cache)
}

fn access_valid(n: usize) -> Box<dyn Any> {
    access(n, 204)
}

fn access_refused(n: usize) -> Box<dyn Any> {
    access(n, 401)
}

/// A trust store that knows every agent and revokes none.
struct Everyone;

impl TrustStore for Everyone {
    fn is_revoked<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(false) })
    }

    fn is_known<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }
}

fn trust_answers(n: usize) -> Box<dyn Any> {
    let timing = TrustTiming {
        ttl_ms: 120_000,
        stale_if_error_ms: 3_600_000,
        capacity: n as u64,
    };
    let cache = TrustCache::new(
        Arc::new(Everyone),
        Arc::new(ManualClock::at(NOW_MS)),
        timing,
    );
    let rt = runtime();
    for i in 0..n {
        let agent = agent_did(i);
        let known = rt.block_on(cache.is_known(&agent));
        let revoked = rt.block_on(cache.is_revoked(&agent, NOW_MS));
        assert_eq!((known, revoked), (Ok(true), Ok(false)), "agent {i}");
    }
    rt.block_on(cache.flush());
    assert_eq!(cache.len(), 2 * n, "both answers held for every agent");
    Box::new(cache)
}

/// Both kinds full: `n` revoked agents and `n` revoked token ids (ULIDs), each with its
/// envelope id.
fn revocations(n: usize) -> Box<dyn Any> {
    let events = Events::new(n);
    for i in 0..n {
        let agent = revocation_envelope(&agent_did(i), NOW_MS).expect("an agent DID");
        let token = token_revocation_envelope(&ulid(i), NOW_MS);
        for envelope in [agent, token] {
            events.apply(envelope.as_bytes(), NOW_MS, NOW_MS);
        }
    }
    assert_eq!(events.held(), 2 * n, "every revocation held");
    Box::new(events)
}
