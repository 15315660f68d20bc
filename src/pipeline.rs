//! The pipeline, written down once.
//!
//! Order (protocol.md §7 with `deviations.md` item 8):
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
use crate::events::Events;
use crate::policy::{Mode, Policy, RoutePolicies, Selected};
use crate::protocol::ait::AitClaims;
use crate::protocol::jws::Expectations;
use crate::registry::access::AccessCache;
use crate::registry::crl::CrlCache;
use crate::registry::keys::KeyCache;
use crate::request::RequestView;
use crate::stage::{access, pop, replay, revocation, token, trust};
use crate::store::nonce::NonceStore;
use crate::store::trust_cache::TrustCache;

/// Who the caller is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent_did: String,
    pub owner_did: String,
    pub ait_jti: String,
    pub issuer: String,
    /// `cnf.jwk.x` (for a P-256 key, `x.y`).
    pub public_key: String,
}

impl Identity {
    fn from_claims(c: &AitClaims) -> Self {
        Identity {
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
    },
    /// A `shadow` route that would have denied.
    ShadowAllow { denial: Denial, policy: Policy },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub max_skew_secs: u64,
    pub nonce_margin_ms: u64,
    pub policies: RoutePolicies,
}

pub struct Pipeline {
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub access: Arc<AccessCache>,
    pub keys: Arc<KeyCache>,
    pub crl: Arc<CrlCache>,
    pub trust: Arc<TrustCache>,
    /// Revocations pushed by registry events.
    pub events: Arc<Events>,
    pub nonces: Arc<dyn NonceStore>,
}

impl Pipeline {
    pub async fn check(&self, req: &RequestView) -> Decision {
        let Some(path) = &req.path else {
            return Decision::Deny {
                denial: Denial::InvalidPath,
                policy: None,
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
                };
            }
        };
        if policy.mode == Mode::Bypass {
            return Decision::Allow {
                identity: None,
                policy,
            };
        }
        match (
            self.authenticate(req, &path.path_with_query, &policy).await,
            policy.mode,
        ) {
            (Ok(identity), _) => Decision::Allow {
                identity: Some(identity),
                policy,
            },
            (Err(denial), Mode::Shadow) => Decision::ShadowAllow { denial, policy },
            (Err(denial), _) => Decision::Deny {
                denial,
                policy: Some(policy),
            },
        }
    }

    async fn authenticate(
        &self,
        req: &RequestView,
        path_with_query: &str,
        policy: &Policy,
    ) -> Result<Identity, Denial> {
        let s = &self.settings;
        let token = token::authorization(req)?;
        let expect = Expectations {
            issuer: Some(&s.issuer),
            now_secs: self.clock.now_secs(),
        };
        let claims = token::verify(token, &self.keys, expect).await?;
        let body = req.full_body()?;
        let now_ms = self.clock.now_ms();
        let proof = pop::verify(req, path_with_query, body, &claims, now_ms, s.max_skew_secs)?;
        revocation::check(&self.events, &self.trust, &self.crl, &claims, now_ms).await?;
        if policy.require_known_agent {
            trust::check_known(&self.trust, &claims).await?;
        }
        let nonce = req.header("x-claw-nonce").unwrap_or_default();
        let (skew, margin) = (s.max_skew_secs, s.nonce_margin_ms);
        replay::record(&*self.nonces, &claims, nonce, proof, now_ms, skew, margin).await?;
        if policy.require_access_token {
            access::validate(req, &self.access, &claims).await?;
        }
        Ok(Identity::from_claims(&claims))
    }
}
