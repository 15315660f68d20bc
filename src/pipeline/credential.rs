//! The profiles: what each one verifies, and what its credential means to the shared stages.
//!
//! Adding a profile is adding a [`Credential`] variant: every method here matches on it
//! exhaustively, so the compiler lists each place the new profile has to answer.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Identity, Pipeline, SignatureIdentity};
use crate::cache::ait::VerifiedAit;
use crate::cache::bearer::VerifiedBearer;
use crate::crypto::PublicKey;
use crate::denial::Denial;
use crate::metrics::{LimitKind, LimitResult};
use crate::policy::{Policy, Profile};
use crate::protocol::jws::Expectations;
use crate::request::RequestView;
use crate::stage::httpsig::Signed;
use crate::stage::{self, access, revocation, token, trust};

/// A verified credential, by profile.
pub(super) enum Credential {
    /// `Authorization: Claw <AIT>`, verified by the registry's keys.
    Claw(Arc<VerifiedAit>),
    /// `Authorization: Bearer <JWT>`, verified by its issuer's JWKS.
    Bearer(Arc<VerifiedBearer>),
    /// An HTTP Message Signature by a configured key: chosen and timed here, verified in the
    /// `proof` stage.
    Signature(Box<Signed>),
}

impl Pipeline {
    /// The route's profile picks the credential; it is verified here (the `token` stage).
    pub(super) async fn credential(
        &self,
        req: &RequestView,
        policy: &Policy,
    ) -> Result<Credential, Denial> {
        let s = &self.settings;
        match (policy.profile, stage::bearer::token(req)) {
            (Profile::Bearer | Profile::Any, Some((scheme, token))) => {
                self.signature_checks.fetch_add(1, Ordering::Relaxed);
                let now_secs = self.clock.now_secs();
                let resource = policy.resource.as_deref();
                let issuers = (&*self.bearer, &*self.bearer_tokens);
                let verified =
                    stage::bearer::verify(token, s.token_bytes, issuers, resource, now_secs)
                        .await?;
                stage::bearer::check_binding(scheme, &verified.claims, policy)?;
                Ok(Credential::Bearer(verified))
            }
            (Profile::HttpSig, _) | (Profile::Any, None) if stage::httpsig::present(req) => {
                self.signature(req, policy).await
            }
            (Profile::HttpSig, _) => self.signature(req, policy).await,
            (Profile::Bearer, None) => match req.header("authorization").unwrap_or("") {
                "" => Err(Denial::MissingToken),
                _ => Err(Denial::ProfileNotAllowed),
            },
            // Claw routes answer a Bearer header as the reference does (invalid scheme).
            (Profile::Claw | Profile::Any, _) => {
                let token = token::authorization(req)?;
                let expect = Expectations {
                    issuer: Some(&s.issuer),
                    now_secs: self.clock.now_secs(),
                };
                self.signature_checks.fetch_add(1, Ordering::Relaxed);
                let verified =
                    token::verify(token, s.token_bytes, &self.keys, &self.aits, expect).await?;
                Ok(Credential::Claw(verified))
            }
        }
    }

    /// The `httpsig` profile's `token` stage.
    async fn signature(&self, req: &RequestView, policy: &Policy) -> Result<Credential, Denial> {
        let s = &self.settings;
        let now_secs = self.clock.now_secs();
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let (config, agents, skew) = (&s.httpsig, &self.agents, s.max_skew_secs);
        let signed = stage::httpsig::select(req, policy, config, agents, now_secs, skew).await?;
        Ok(Credential::Signature(Box::new(signed)))
    }

    /// Revocation: the agent and its AIT (pushed events, the trust store, the CRL), or the
    /// bearer token's `jti` (pushed events).
    pub(super) async fn revocation(&self, c: &Credential, now_ms: u64) -> Result<(), Denial> {
        match c {
            Credential::Claw(ait) => {
                let claims = &ait.claims;
                revocation::check(&self.events, &self.trust, &self.crl, claims, now_ms).await
            }
            Credential::Bearer(token) => {
                match self.events.is_token_revoked(&token.claims.jti, now_ms) {
                    true => Err(Denial::TokenRevoked),
                    false => Ok(()),
                }
            }
            // A configured key is withdrawn by removing it from the configuration.
            Credential::Signature(_) => Ok(()),
        }
    }

    /// A known agent (the `trust` stage), for the profiles the trust store knows.
    pub(super) async fn known(
        &self,
        c: &Credential,
        rec: &mut super::Recorder<'_>,
    ) -> Result<(), Denial> {
        match c {
            Credential::Claw(ait) => {
                rec.enter(super::Stage::Trust);
                trust::check_known(&self.trust, &ait.claims).await
            }
            Credential::Bearer(_) | Credential::Signature(_) => Ok(()),
        }
    }

    /// The route's grant for this credential: the access token on Claw routes that require it,
    /// roles, permissions and trust score for bearer tokens.
    pub(super) async fn grant(
        &self,
        c: &Credential,
        req: &RequestView,
        policy: &Policy,
        rec: &mut super::Recorder<'_>,
    ) -> Result<(), Denial> {
        match c {
            Credential::Claw(_) if !policy.require_access_token => Ok(()),
            Credential::Claw(ait) => {
                rec.enter(super::Stage::Access);
                let validated = access::validate(req, &self.access, &ait.claims).await;
                if let Err(Denial::RateLimited { .. }) = validated {
                    let (kind, result) = (LimitKind::Access, LimitResult::Limited);
                    self.metrics.rate_limited(&policy.name, kind, result);
                }
                validated
            }
            Credential::Bearer(token) => {
                rec.enter(super::Stage::Authorization);
                stage::bearer::authorize(req, &token.claims, policy)
            }
            Credential::Signature(_) => Ok(()),
        }
    }
}

impl Credential {
    /// The agent, for logs.
    pub(super) fn agent(&self) -> &str {
        match self {
            Credential::Claw(ait) => &ait.claims.sub,
            Credential::Bearer(token) => &token.claims.sub,
            Credential::Signature(signed) => &signed.name,
        }
    }

    /// Whose nonces and whose rate limit: the agent DID, or the bearer issuer and subject.
    pub(super) fn subject(&self) -> Cow<'_, str> {
        match self {
            Credential::Claw(ait) => Cow::Borrowed(&ait.claims.sub),
            Credential::Bearer(token) => {
                Cow::Owned(format!("bearer|{}|{}", token.claims.iss, token.claims.sub))
            }
            Credential::Signature(signed) => Cow::Owned(signed.subject()),
        }
    }

    /// The nonce the replay stage records.
    pub(super) fn nonce<'a>(&'a self, req: &'a RequestView) -> &'a str {
        match self {
            Credential::Signature(signed) => signed.signature.nonce.as_deref().unwrap_or_default(),
            Credential::Claw(_) | Credential::Bearer(_) => {
                req.header("x-claw-nonce").unwrap_or_default()
            }
        }
    }

    /// The key the request must prove it holds: always for an AIT, for a bearer token when it
    /// is bound to one (`cnf`).
    pub(super) fn proof_key(&self) -> Option<Cow<'_, PublicKey>> {
        match self {
            Credential::Claw(ait) => Some(Cow::Borrowed(&ait.claims.cnf.key)),
            Credential::Bearer(token) => {
                let key = token.claims.cnf.as_ref()?;
                Some(Cow::Owned(PublicKey::P256(key.clone())))
            }
            // The signature is the proof (`Pipeline::prove_signature`).
            Credential::Signature(_) => None,
        }
    }

    pub(super) fn identity(self) -> Identity {
        match self {
            Credential::Claw(ait) => Identity::Claw(ait.identity.clone()),
            Credential::Bearer(token) => Identity::Bearer(token),
            Credential::Signature(signed) => Identity::Signature(SignatureIdentity {
                components: signed
                    .signature
                    .components
                    .iter()
                    .map(|c| c.identifier())
                    .collect::<Vec<_>>()
                    .join(" "),
                agent: signed.name,
                keyid: signed.keyid,
            }),
        }
    }
}
