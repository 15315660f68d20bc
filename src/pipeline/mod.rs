//! The pipeline, written down once: every profile meets the same stages in the same order.
//!
//! | # | stage | claw | bearer | httpsig | fails with |
//! |---|---|---|---|---|---|
//! | 0 | `policy` | the route's policy (`bypass` allows here) | the same | the same | 500 unknown policy, 400 bad path |
//! | 1 | `client_rate_limit` | where the route sets `client_rate_limit` | the same | the same | 429, 503 store down (fail-closed) |
//! | 2 | `token` | `Authorization: Claw <AIT>`, verified by the registry keys | `Authorization: Bearer <JWT>`, verified by its issuer's JWKS | `Signature-Input`: the signature the route requires, its configured key, its times and nonce | 401, 503 keys |
//! | 3 | `body` | always | when the token is bound to a key (`cnf`) | always (`content-digest` against the body) | 413 partial, 500 not forwarded, 401 |
//! | 4 | `proof` | always | when bound | always: the signature over the rebuilt base | 401 |
//! | 5 | `revocation` | pushed events, the trust store, then the CRL (refreshed in the background) | the `jti` in pushed events | nothing to look up (a key is withdrawn from the configuration) | 401, 403, 503 |
//! | 6 | `trust` | where the route sets `require_known_agent` | never | never | 403 |
//! | 7 | `replay` | always: record the nonce | when bound | when the signature has a nonce (required by default) | 401, 429 over the agent's nonce quota, 503 |
//! | 8 | `rate_limit` | where the route sets `rate_limit` (per agent); a refused request's nonce is dropped | the same (per issuer and subject) | the same (per key) | 429, 503 store down (fail-closed) |
//! | 9 | `access` | where the route sets `require_access_token` | never | never | 401, 503 |
//! | 10 | `authorization` | never | the route's roles, permissions and trust score | never | 403 |
//!
//! Order follows docs/protocol.md §7 with `docs/deviations.md` item 8. The nonce is recorded
//! only after the revocation and trust checks, so a revoked or unknown agent cannot burn nonces,
//! and given back when the agent's limit refuses the request; a replayed request is refused
//! before it can spend the agent's limit. The limits come before the registry's access-token
//! call. `shadow` runs everything and allows,
//! reporting the would-be denial. `credential.rs` holds what differs by profile; this file runs
//! the rows, and the test `every_profile_runs_the_rows_of_the_table` (`tests/bearer.rs`) checks
//! the stages a full check enters against this table.

mod credential;
mod observe;
mod record;
mod stage;

pub use stage::{Stage, Trail};

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::cache::access::AccessCache;
use crate::cache::ait::AitCache;
use crate::cache::bearer::{BearerCache, VerifiedBearer};
use crate::cache::crl::CrlCache;
use crate::cache::keys::KeyCache;
use crate::cache::trust::TrustCache;
use crate::clock::{Clock, Every};
use crate::denial::Denial;
use crate::metrics::{LimitKind, LimitResult, Metrics, NonceResult};
use crate::policy::{Mode, Policy, RoutePolicies, Selected};
use crate::protocol::ait::AitClaims;
use crate::ratelimit::{Limit, Limiter, Verdict};
use crate::request::RequestView;
use crate::response::SharedAnswers;
use crate::revocation::Events;
use crate::stage::bearer::IssuerKeys;
use crate::stage::{httpsig, pop, replay};
use crate::store::nonce::NonceStore;
use crate::store::nonce::record_expiry_ms;
use credential::Credential;
use record::Recorder;

/// Who the caller is, once authenticated, by profile.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// Built once per verified AIT (`VerifiedAit::identity`), shared by its checks.
    Claw(Arc<ClawIdentity>),
    /// The verified token itself, shared by its checks.
    Bearer(Arc<VerifiedBearer>),
    Signature(SignatureIdentity),
}

/// The key behind a verified HTTP Message Signature, and what the signature covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureIdentity {
    /// The key's configured name (its thumbprint when it has none).
    pub agent: String,
    pub keyid: String,
    /// The covered components' identifiers, space-separated, in the signature's order.
    pub components: String,
}

/// A Claw AIT's agent.
#[derive(Debug, PartialEq, Eq)]
pub struct ClawIdentity {
    pub agent_did: String,
    pub owner_did: String,
    pub(crate) ait_jti: String,
    pub issuer: String,
    /// `cnf.jwk.x` (for a P-256 key, `x.y`).
    pub(crate) public_key: String,
    /// The agent's encoded allow answers, by policy.
    pub(crate) answers: SharedAnswers,
}

impl Identity {
    /// Who, in one string: the agent DID, the bearer subject, or the signature's agent.
    pub fn agent(&self) -> &str {
        match self {
            Identity::Claw(c) => &c.agent_did,
            Identity::Bearer(b) => &b.claims.sub,
            Identity::Signature(s) => &s.agent,
        }
    }
}

impl ClawIdentity {
    pub(crate) fn from_claims(c: &AitClaims) -> Self {
        ClawIdentity {
            agent_did: c.sub.clone(),
            owner_did: c.owner_did.clone(),
            ait_jti: c.jti.clone(),
            issuer: c.iss.clone(),
            public_key: match &c.cnf.y {
                Some(y) => format!("{}.{y}", c.cnf.x),
                None => c.cnf.x.clone(),
            },
            answers: SharedAnswers::default(),
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

/// The stage a check failed at and the agent, once its credential was verified (for logs, never
/// for the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub agent_did: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    /// AITs and bearer tokens longer than this are refused unread (`limits.token_bytes`).
    pub token_bytes: usize,
    pub max_skew_secs: u64,
    /// Accepted requests skewed this much are logged and counted.
    pub(crate) skew_warning_secs: u64,
    pub(crate) nonce_margin_ms: u64,
    /// `memory`, `file` or `redis`, for metric labels.
    pub(crate) nonce_store: &'static str,
    /// A failing rate-limit store denies (503) instead of allowing.
    pub(crate) rate_limit_fail_closed: bool,
    /// The client address comes from the right-most value of this header, when set.
    pub(crate) client_header: Option<String>,
    pub policies: RoutePolicies,
    /// The `httpsig` profile's keys and rules.
    pub(crate) httpsig: crate::config::HttpSigConfig,
    /// DPoP proofs on the bearer profile.
    pub(crate) dpop: crate::config::DpopConfig,
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
    /// Bearer tokens verified before, until their `exp`.
    pub bearer_tokens: Arc<BearerCache>,
    /// Web Bot Auth agents and their key directories.
    pub(crate) agents: Vec<httpsig::AgentKeys>,
    pub(crate) limiter: Arc<dyn Limiter>,
    /// Token signature verifications attempted (a pre-authentication limit spares them).
    pub signature_checks: AtomicU64,
    pub metrics: Arc<Metrics>,
    pub nonces: Arc<dyn NonceStore>,
    /// The security detectors' intake (a bounded channel, never waited on).
    pub security: Arc<crate::security::Monitor>,
}

impl Pipeline {
    pub async fn check(&self, req: &RequestView) -> Decision {
        let decision = self.check_traced(req).await.0;
        self.report(req, &decision);
        decision
    }

    /// Like [`Pipeline::check`], with the stages the check entered.
    pub async fn check_traced(&self, req: &RequestView) -> (Decision, Trail) {
        let mut rec = Recorder::new(&self.metrics);
        rec.enter(Stage::Policy);
        let policy = match self.policy(req) {
            Ok(policy) => policy,
            Err(denial) => {
                let (at, trail) = rec.failed();
                let policy = None;
                return (Decision::Deny { denial, policy, at }, trail);
            }
        };
        if policy.mode == Mode::Bypass {
            let identity = None;
            return (Decision::Allow { identity, policy }, rec.passed());
        }
        match self.authenticate(req, &policy, &mut rec).await {
            Ok(identity) => {
                let identity = Some(identity);
                (Decision::Allow { identity, policy }, rec.passed())
            }
            Err(denial) => {
                let (at, trail) = rec.failed();
                let decision = match policy.mode {
                    Mode::Shadow => Decision::ShadowAllow { denial, policy, at },
                    Mode::Enforce | Mode::Bypass => Decision::Deny {
                        denial,
                        policy: Some(policy),
                        at,
                    },
                };
                (decision, trail)
            }
        }
    }

    /// The route's policy, chosen by its path or Envoy's `context_extensions`.
    fn policy(&self, req: &RequestView) -> Result<Policy, Denial> {
        let path = req.path.as_ref().ok_or(Denial::InvalidPath)?;
        let policies = &self.settings.policies;
        match policies.select(&path.route_path, &req.context_extensions) {
            Selected::Policy(p) => Ok(*p),
            Selected::UnknownName(name) => {
                tracing::error!(policy = %name, "route selects a policy that is not configured");
                Err(Denial::UnknownPolicy)
            }
        }
    }

    /// The rows of the table after the policy, for every profile.
    async fn authenticate(
        &self,
        req: &RequestView,
        policy: &Policy,
        rec: &mut Recorder<'_>,
    ) -> Result<Identity, Denial> {
        if let Some(limit) = &policy.client_rate_limit {
            rec.enter(Stage::ClientRateLimit);
            let client = self.client(req);
            self.limit(LimitKind::Client, client, limit, policy).await?;
        }
        rec.enter(Stage::Token);
        let credential = self.credential(req, policy).await?;
        rec.agent(credential.agent());
        let now_ms = self.clock.now_ms();
        // A DPoP proof's replay key is its `jti`; the other profiles' nonces are in the request.
        let mut dpop_jti = None;
        let proof = match (&credential, credential.proof_key()) {
            (Credential::Signature(signed), _) => self.prove_signature(req, signed, policy, rec)?,
            (Credential::Bearer(token), _) if token.claims.jkt.is_some() => {
                let (expires_ms, jti) = self.prove_dpop(req, &token.claims, policy, rec)?;
                dpop_jti = Some(jti);
                Some(expires_ms)
            }
            (_, Some(key)) => Some(self.prove(req, &credential, &key, now_ms, rec)?),
            (_, None) => None,
        };
        rec.enter(Stage::Revocation);
        self.revocation(&credential, now_ms).await?;
        if policy.require_known_agent {
            self.known(&credential, rec).await?;
        }
        let subject = credential.subject();
        // Replay before the limit, so a captured request sent again spends none of its agent's
        // budget; a request the limit then refuses gives its nonce back (it holds no capacity).
        let recorded = proof.is_some();
        if let Some(expires_ms) = proof {
            rec.enter(Stage::Replay);
            let nonce = dpop_jti.as_deref().unwrap_or_else(|| credential.nonce(req));
            self.replay(&subject, nonce, expires_ms, now_ms).await?;
        }
        if let Some(limit) = &policy.agent_rate_limit {
            rec.enter(Stage::RateLimit);
            let limited = self.limit(LimitKind::Agent, &subject, limit, policy).await;
            if limited.is_err() && recorded {
                let nonce = dpop_jti.as_deref().unwrap_or_else(|| credential.nonce(req));
                self.nonces.forget(&subject, nonce).await;
            }
            limited?;
        }
        drop(subject);
        self.grant(&credential, req, policy, rec).await?;
        Ok(credential.identity())
    }

    /// The `body` and `proof` stages: the request proves it holds `key`. Returns until when its
    /// nonce must be remembered.
    fn prove(
        &self,
        req: &RequestView,
        credential: &Credential,
        key: &crate::crypto::PublicKey,
        now_ms: u64,
        rec: &mut Recorder<'_>,
    ) -> Result<u64, Denial> {
        let s = &self.settings;
        rec.enter(Stage::Body);
        let body = req.full_body()?;
        rec.enter(Stage::Proof);
        let pwq = req.path.as_ref().map_or("", |p| p.path_with_query.as_str());
        let proof = pop::verify(req, pwq, body, key, now_ms, s.max_skew_secs)?;
        self.observe_skew(credential.agent(), proof.timestamp, now_ms);
        let (skew, margin) = (s.max_skew_secs, s.nonce_margin_ms);
        Ok(record_expiry_ms(proof.timestamp, now_ms, skew, margin))
    }

    /// The `proof` stage of a DPoP-bound token: the `DPoP` proof (RFC 9449). Returns until when
    /// its `jti` must be remembered (its `iat` stops being accepted then), and the `jti`.
    fn prove_dpop(
        &self,
        req: &RequestView,
        claims: &crate::protocol::bearer::BearerClaims,
        policy: &Policy,
        rec: &mut Recorder<'_>,
    ) -> Result<(u64, String), Denial> {
        let s = &self.settings;
        rec.enter(Stage::Proof);
        let (_, token) = crate::stage::bearer::token(req).ok_or(Denial::MissingToken)?;
        let jkt = claims.jkt.as_deref().unwrap_or_default();
        let now_secs = self.clock.now_secs();
        let resource = policy.resource.as_deref();
        let proof = crate::stage::bearer::prove(req, token, jkt, &s.dpop, resource, now_secs)?;
        self.observe_skew(&claims.sub, proof.iat, self.clock.now_ms());
        let until_secs = proof.iat.saturating_add(s.dpop.iat_window.as_secs());
        let expires_ms = until_secs.saturating_mul(1000) + s.nonce_margin_ms;
        Ok((expires_ms, proof.jti))
    }

    /// The `body` and `proof` stages of a message signature: `Content-Digest` against the exact
    /// body, then the signature. Returns until when its nonce must be remembered, when it has one.
    fn prove_signature(
        &self,
        req: &RequestView,
        signed: &httpsig::Signed,
        policy: &Policy,
        rec: &mut Recorder<'_>,
    ) -> Result<Option<u64>, Denial> {
        let s = &self.settings;
        rec.enter(Stage::Body);
        let body = match req.has_body() || signed.signature.covers("content-digest") {
            true => req.full_body()?,
            false => &[],
        };
        rec.enter(Stage::Proof);
        httpsig::verify(req, body, signed, policy, &s.httpsig)?;
        if let Some(created) = signed.signature.created.and_then(|c| u64::try_from(c).ok()) {
            self.observe_skew(&signed.name, created, self.clock.now_ms());
        }
        let expiry = signed.nonce_expiry_ms(&s.httpsig, s.max_skew_secs) + s.nonce_margin_ms;
        Ok(signed.signature.nonce.is_some().then_some(expiry))
    }

    /// Records `nonce` for `subject` until `expires_ms`.
    async fn replay(
        &self,
        subject: &str,
        nonce: &str,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), Denial> {
        let s = &self.settings;
        let recorded = replay::record(&*self.nonces, subject, nonce, expires_ms, now_ms).await;
        let result = match &recorded {
            Ok(()) => NonceResult::Fresh,
            Err(Denial::Replay) => NonceResult::Replay,
            Err(Denial::RateLimited { .. }) => NonceResult::OverQuota,
            Err(_) => NonceResult::Error,
        };
        self.metrics.nonce(s.nonce_store, result);
        recorded
    }

    /// The client address for the route's pre-authentication limit: the right-most value of
    /// `rate_limit.client_header` when set, else Envoy's source address.
    fn client<'r>(&self, req: &'r RequestView) -> &'r str {
        let from_header = self.settings.client_header.as_deref().and_then(|h| {
            let value = req.header(h)?;
            value.rsplit(',').next().map(str::trim)
        });
        from_header
            .or(req.source_address.as_deref())
            .unwrap_or("unknown")
    }

    /// One of the route's limits for `who` (a client address, or an authenticated subject):
    /// 429 past it; when the store fails, 503 under `fail-closed`, else allowed.
    async fn limit(
        &self,
        kind: LimitKind,
        who: &str,
        limit: &Limit,
        policy: &Policy,
    ) -> Result<(), Denial> {
        let key = format!("{}|{}|{who}", kind.as_str(), policy.name);
        match self.limiter.check(&key, limit, self.clock.now_ms()).await {
            Ok(Verdict::Allow) => Ok(()),
            Ok(Verdict::Limited { retry_after_ms }) => {
                self.metrics
                    .rate_limited(&policy.name, kind, LimitResult::Limited);
                let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
                Err(match kind {
                    LimitKind::Client => Denial::ClientRateLimited { retry_after_secs },
                    LimitKind::Agent | LimitKind::Access => {
                        Denial::RateLimited { retry_after_secs }
                    }
                })
            }
            Err(error) => {
                self.metrics
                    .rate_limited(&policy.name, kind, LimitResult::StoreError);
                let fail_closed = self.settings.rate_limit_fail_closed;
                static FAILED: Every = Every::new();
                if let Some(skipped) = FAILED.due(self.clock.now_ms()) {
                    tracing::warn!(%error, fail_closed, skipped, "rate-limit store failed");
                }
                match fail_closed {
                    true => Err(Denial::RateLimitUnavailable),
                    false => Ok(()),
                }
            }
        }
    }
}
