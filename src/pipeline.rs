//! The pipeline, written down once.
//!
//! Order (docs/protocol.md §7 with `docs/deviations.md` item 8):
//!
//! | # | stage | fails with |
//! |---|---|---|
//! | 0 | route policy (`bypass` allows here) | 500 unknown policy, 400 bad path |
//! | 1 | `Authorization: Claw <AIT>` | 401 |
//! | 2 | registry keys, then the AIT | 503 keys, 401 AIT |
//! | 3 | the whole body | 413 partial, 500 not forwarded |
//! | 4 | proof of possession | 401 |
//! | 5 | revocation: pushed events, the trust store, then the CRL (refreshed in the background) | 401, 403, 503 |
//! | 6 | known agent (unless the route exempts it) | 403 |
//! | 7 | replay: record the nonce | 401, 503 |
//! | 8 | access token (where the route requires it) | 401, 503 |
//!
//! The nonce is recorded only after the revocation and trust checks, so a revoked or unknown
//! agent cannot burn nonces. `shadow` runs everything and allows, reporting the would-be denial.

use std::sync::Arc;

use crate::clock::Clock;
use crate::denial::Denial;
use crate::policy::{Mode, Policy, Profile, RoutePolicies, Selected};
use crate::protocol::ait::AitClaims;
use crate::protocol::jws::Expectations;
use crate::ratelimit::{Limit, Limiter, Verdict};
use crate::registry::access::AccessCache;
use crate::registry::crl::CrlCache;
use crate::registry::keys::KeyCache;
use crate::request::RequestView;
use crate::revocation::Events;
use crate::stage::ait_cache::AitCache;
use crate::stage::bearer::IssuerKeys;
use crate::stage::{self, access, pop, replay, revocation, token, trust};
use crate::store::nonce::NonceStore;
use crate::store::trust_cache::TrustCache;
use crate::telemetry::Metrics;
use opentelemetry::KeyValue;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who the caller is, once authenticated, by profile.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Claw(ClawIdentity),
    Bearer(BearerIdentity),
}

/// A bearer JWT's subject and grants.
#[derive(Debug, Clone, PartialEq)]
pub struct BearerIdentity {
    pub sub: String,
    pub issuer: String,
    pub jti: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub trust_score: Option<f64>,
}

/// A Claw AIT's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClawIdentity {
    pub agent_did: String,
    pub owner_did: String,
    pub ait_jti: String,
    pub issuer: String,
    /// `cnf.jwk.x` (for a P-256 key, `x.y`).
    pub public_key: String,
}

impl ClawIdentity {
    fn from_claims(c: &AitClaims) -> Self {
        ClawIdentity {
            agent_did: c.sub.clone(),
            owner_did: c.owner_did.clone(),
            ait_jti: c.jti.clone(),
            issuer: c.iss.clone(),
            public_key: match &c.cnf.y {
                Some(y) => format!("{}.{y}", c.cnf.x),
                None => c.cnf.x.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed; `identity` is `None` on `bypass` routes.
    Allow {
        identity: Option<Identity>,
        policy: Policy,
    },
    Deny {
        denial: Denial,
        policy: Option<Policy>,
        /// Where it was denied, and who the caller was if that was known by then.
        at: Failure,
    },
    /// A `shadow` route that would have denied.
    ShadowAllow {
        denial: Denial,
        policy: Policy,
        at: Failure,
    },
}

/// The stage a check failed at and the agent, once its AIT was verified (for logs, never for
/// the caller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    pub stage: &'static str,
    pub agent_did: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    /// AITs and bearer tokens longer than this are refused unread (`limits.token_bytes`).
    pub token_bytes: usize,
    pub max_skew_secs: u64,
    /// Accepted requests skewed this much are logged and counted.
    pub skew_warning_secs: u64,
    pub nonce_margin_ms: u64,
    /// `memory`, `file` or `redis`, for metric labels.
    pub nonce_store: &'static str,
    /// A failing rate-limit store denies (503) instead of allowing.
    pub rate_limit_fail_closed: bool,
    /// The client address comes from the right-most value of this header, when set.
    pub client_header: Option<String>,
    pub policies: RoutePolicies,
}

pub struct Pipeline {
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub access: Arc<AccessCache>,
    pub keys: Arc<KeyCache>,
    /// AITs verified before, until their `exp`.
    pub aits: Arc<AitCache>,
    pub crl: Arc<CrlCache>,
    pub trust: Arc<TrustCache>,
    /// Revocations pushed by registry events.
    pub events: Arc<Events>,
    /// Issuers of the bearer profile.
    pub bearer: Vec<IssuerKeys>,
    pub limiter: Arc<dyn Limiter>,
    /// Token signature verifications attempted (a pre-authentication limit spares them).
    pub signature_checks: AtomicU64,
    pub metrics: Arc<Metrics>,
    pub nonces: Arc<dyn NonceStore>,
}

impl Pipeline {
    pub async fn check(&self, req: &RequestView) -> Decision {
        let Some(path) = &req.path else {
            return Decision::Deny {
                denial: Denial::InvalidPath,
                policy: None,
                at: Failure {
                    stage: "policy",
                    agent_did: None,
                },
            };
        };
        let policy = match self
            .settings
            .policies
            .select(&path.route_path, &req.context_extensions)
        {
            Selected::Policy(p) => p,
            Selected::UnknownName(name) => {
                tracing::error!(policy = %name, "route selects a policy that is not configured");
                return Decision::Deny {
                    denial: Denial::UnknownPolicy,
                    policy: None,
                    at: Failure {
                        stage: "policy",
                        agent_did: None,
                    },
                };
            }
        };
        if policy.mode == Mode::Bypass {
            return Decision::Allow {
                identity: None,
                policy,
            };
        }
        let mut at = Failure::default();
        let pwq = &path.path_with_query;
        let authenticated = match self.client_limit(req, &policy, &mut at).await {
            Err(denial) => Err(denial),
            Ok(()) => self.authenticate_profile(req, pwq, &policy, &mut at).await,
        };
        match (authenticated, policy.mode) {
            (Ok(identity), _) => Decision::Allow {
                identity: Some(identity),
                policy,
            },
            (Err(denial), Mode::Shadow) => Decision::ShadowAllow { denial, policy, at },
            (Err(denial), _) => Decision::Deny {
                denial,
                policy: Some(policy),
                at,
            },
        }
    }

    async fn authenticate_profile(
        &self,
        req: &RequestView,
        pwq: &str,
        policy: &Policy,
        at: &mut Failure,
    ) -> Result<Identity, Denial> {
        match (policy.profile, stage::bearer::token(req)) {
            (Profile::Bearer | Profile::Any, Some(token)) => {
                self.authenticate_bearer(req, pwq, policy, token, at).await
            }
            (Profile::Bearer, None) => {
                at.stage = "token";
                match req.header("authorization").unwrap_or("").is_empty() {
                    true => Err(Denial::MissingToken),
                    false => Err(Denial::ProfileNotAllowed),
                }
            }
            // Claw routes answer a Bearer header as the reference does (invalid scheme).
            _ => self
                .authenticate(req, pwq, policy, at)
                .await
                .map(Identity::Claw),
        }
    }

    /// The route's pre-authentication limit, by client address: before any signature work.
    async fn client_limit(
        &self,
        req: &RequestView,
        policy: &Policy,
        at: &mut Failure,
    ) -> Result<(), Denial> {
        let Some(limit) = &policy.client_rate_limit else {
            return Ok(());
        };
        let from_header = self.settings.client_header.as_deref().and_then(|h| {
            let value = req.header(h)?;
            value.rsplit(',').next().map(str::trim)
        });
        let client = from_header
            .or(req.source_address.as_deref())
            .unwrap_or("unknown");
        let key = format!("client|{}|{client}", policy.name);
        at.stage = "client_rate_limit";
        self.limit(&key, limit, policy, "client")
            .await
            .map_err(|retry| match retry {
                Some(retry_after_secs) => Denial::ClientRateLimited { retry_after_secs },
                None => Denial::RateLimitUnavailable,
            })
    }

    /// The route's per-agent limit (after authentication, before the access-token call).
    async fn agent_limit(&self, agent: &str, policy: &Policy) -> Result<(), Denial> {
        let Some(limit) = &policy.agent_rate_limit else {
            return Ok(());
        };
        let key = format!("agent|{}|{agent}", policy.name);
        self.limit(&key, limit, policy, "agent")
            .await
            .map_err(|retry| match retry {
                Some(retry_after_secs) => Denial::RateLimited { retry_after_secs },
                None => Denial::RateLimitUnavailable,
            })
    }

    /// `Err(Some(retry_after_secs))` when limited, `Err(None)` when the store failed closed.
    async fn limit(
        &self,
        key: &str,
        limit: &Limit,
        policy: &Policy,
        kind: &'static str,
    ) -> Result<(), Option<u64>> {
        let labels = |result: &'static str| {
            [
                KeyValue::new("policy", policy.name.clone()),
                KeyValue::new("kind", kind),
                KeyValue::new("result", result),
            ]
        };
        match self.limiter.check(key, limit, self.clock.now_ms()).await {
            Ok(Verdict::Allow) => Ok(()),
            Ok(Verdict::Limited { retry_after_ms }) => {
                self.metrics.rate_limited.add(1, &labels("limited"));
                Err(Some(retry_after_ms.div_ceil(1000).max(1)))
            }
            Err(error) => {
                self.metrics.rate_limited.add(1, &labels("store_error"));
                tracing::warn!(%error, fail_closed = self.settings.rate_limit_fail_closed, "rate-limit store failed");
                match self.settings.rate_limit_fail_closed {
                    true => Err(None),
                    false => Ok(()),
                }
            }
        }
    }

    /// Times one stage; `at.stage` names the stage running, so a failure is attributed to it.
    fn lap(&self, at: &mut Failure, next: &'static str, started: &mut tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        if !at.stage.is_empty() {
            let labels = [KeyValue::new("stage", at.stage)];
            let spent = now.duration_since(*started).as_secs_f64();
            self.metrics.stage_duration.record(spent, &labels);
        }
        *started = now;
        at.stage = next;
    }

    /// Records how far the clock of an accepted request was from ours.
    fn observe_skew(&self, claims: &AitClaims, timestamp_secs: u64, now_ms: u64) {
        let skew = (i128::from(timestamp_secs) * 1000 - i128::from(now_ms)).unsigned_abs() / 1000;
        let skew = u64::try_from(skew).unwrap_or(u64::MAX);
        self.metrics.clock_skew.record(skew as f64, &[]);
        if skew >= self.settings.skew_warning_secs {
            self.metrics.clock_skew_warnings.add(1, &[]);
            tracing::warn!(
                agent_did = %claims.sub,
                skew_secs = skew,
                max_skew_secs = self.settings.max_skew_secs,
                "agent clock skew is close to the limit; its requests will fail past it"
            );
        }
    }

    async fn authenticate(
        &self,
        req: &RequestView,
        path_with_query: &str,
        policy: &Policy,
        at: &mut Failure,
    ) -> Result<ClawIdentity, Denial> {
        let s = &self.settings;
        let mut t = tokio::time::Instant::now();
        self.lap(at, "token", &mut t);
        let token = token::authorization(req)?;
        let expect = Expectations {
            issuer: Some(&s.issuer),
            now_secs: self.clock.now_secs(),
        };
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let max_len = s.token_bytes;
        let verified = token::verify(token, max_len, &self.keys, &self.aits, expect).await?;
        let claims = &verified.claims;
        at.agent_did = Some(claims.sub.clone());
        self.lap(at, "body", &mut t);
        let body = req.full_body()?;
        let now_ms = self.clock.now_ms();
        self.lap(at, "proof", &mut t);
        let key = &claims.cnf.key;
        let proof = pop::verify(req, path_with_query, body, key, now_ms, s.max_skew_secs)?;
        self.observe_skew(claims, proof.timestamp, now_ms);
        self.lap(at, "revocation", &mut t);
        revocation::check(&self.events, &self.trust, &self.crl, claims, now_ms).await?;
        if policy.require_known_agent {
            self.lap(at, "trust", &mut t);
            trust::check_known(&self.trust, claims).await?;
        }
        self.lap(at, "replay", &mut t);
        let nonce = req.header("x-claw-nonce").unwrap_or_default();
        let (skew, margin) = (s.max_skew_secs, s.nonce_margin_ms);
        let recorded = replay::record(
            &*self.nonces,
            &claims.sub,
            nonce,
            proof,
            now_ms,
            skew,
            margin,
        )
        .await;
        let result = match &recorded {
            Ok(()) => "fresh",
            Err(Denial::Replay) => "replay",
            Err(_) => "error",
        };
        let labels = [
            KeyValue::new("store", s.nonce_store),
            KeyValue::new("result", result),
        ];
        self.metrics.nonce_operations.add(1, &labels);
        recorded?;
        self.agent_limit(&claims.sub, policy).await?;
        if policy.require_access_token {
            self.lap(at, "access", &mut t);
            access::validate(req, &self.access, claims).await?;
        }
        self.lap(at, "", &mut t);
        Ok(ClawIdentity::from_claims(claims))
    }

    /// The bearer profile: the JWT, revocation of its `jti`, the proof and replay when it is
    /// bound to a key (`cnf`), then the route's roles, permissions and trust score.
    async fn authenticate_bearer(
        &self,
        req: &RequestView,
        path_with_query: &str,
        policy: &Policy,
        token: &str,
        at: &mut Failure,
    ) -> Result<Identity, Denial> {
        let s = &self.settings;
        let mut t = tokio::time::Instant::now();
        self.lap(at, "token", &mut t);
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let (max_len, now_secs) = (self.settings.token_bytes, self.clock.now_secs());
        let claims = stage::bearer::verify(token, max_len, &self.bearer, now_secs).await?;
        at.agent_did = Some(claims.sub.clone());
        let now_ms = self.clock.now_ms();
        self.lap(at, "revocation", &mut t);
        if self.events.is_token_revoked(&claims.jti, now_ms) {
            return Err(Denial::TokenRevoked);
        }
        if let Some(key) = &claims.cnf {
            self.lap(at, "body", &mut t);
            let body = req.full_body()?;
            self.lap(at, "proof", &mut t);
            let key = crate::crypto::PublicKey::P256(key.clone());
            let proof = pop::verify(req, path_with_query, body, &key, now_ms, s.max_skew_secs)?;
            self.lap(at, "replay", &mut t);
            let nonce = req.header("x-claw-nonce").unwrap_or_default();
            let agent = format!("bearer|{}|{}", claims.iss, claims.sub);
            let (skew, margin) = (s.max_skew_secs, s.nonce_margin_ms);
            replay::record(&*self.nonces, &agent, nonce, proof, now_ms, skew, margin).await?;
        }
        self.lap(at, "rate_limit", &mut t);
        self.agent_limit(&format!("bearer|{}|{}", claims.iss, claims.sub), policy)
            .await?;
        self.lap(at, "authorization", &mut t);
        stage::bearer::authorize(&claims, policy)?;
        self.lap(at, "", &mut t);
        Ok(Identity::Bearer(BearerIdentity {
            sub: claims.sub,
            issuer: claims.iss,
            jti: claims.jti,
            roles: claims.roles,
            permissions: claims.permissions,
            trust_score: claims.trust_score,
        }))
    }
}
