//! What a check tells the rest of the service beside its decision: the skew of an accepted
//! request (a metric, a warning, a security observation) and the security detectors'
//! observation of the decision.

use super::{Decision, Pipeline};
use crate::denial::Denial;
use crate::request::RequestView;

impl Pipeline {
    /// Offers the detectors what this check showed: a denial they count, or an agent allowed
    /// from an address.
    pub(super) fn report(&self, req: &RequestView, decision: &Decision) {
        use crate::security::{Observation, detect};
        if !self.security.enabled() {
            return;
        }
        let at_ms = self.clock.now_ms();
        let client = || Some(self.client(req).to_owned()).filter(|c| c != "unknown");
        let observation = match decision {
            // A trust store that failed says nothing about the agent (it shares the code of an
            // unknown agent).
            Decision::Deny { denial, at, .. } | Decision::ShadowAllow { denial, at, .. }
                if detect::counts(denial.code())
                    && !matches!(denial, Denial::TrustUnconfirmed { .. }) =>
            {
                Observation::Denied {
                    code: denial.code(),
                    agent: at.agent_did.clone(),
                    client: client(),
                    at_ms,
                }
            }
            Decision::Allow {
                identity: Some(identity),
                ..
            } => Observation::Allowed {
                agent: identity.agent().to_owned(),
                client: client(),
                at_ms,
            },
            _ => return,
        };
        self.security.observe(observation);
    }

    /// Records how far the clock of an accepted request was from ours.
    pub(super) fn observe_skew(&self, agent: &str, timestamp_secs: u64, now_ms: u64) {
        let skew = (i128::from(timestamp_secs) * 1000 - i128::from(now_ms)).unsigned_abs() / 1000;
        let skew = u64::try_from(skew).unwrap_or(u64::MAX);
        let warned = skew >= self.settings.skew_warning_secs;
        self.metrics.skew(skew, warned);
        if warned {
            self.security.observe(crate::security::Observation::Skew {
                agent: agent.to_owned(),
                skew_secs: skew,
                max_skew_secs: self.settings.max_skew_secs,
                at_ms: now_ms,
            });
        }
        if warned {
            tracing::warn!(
                agent_did = %agent,
                skew_secs = skew,
                max_skew_secs = self.settings.max_skew_secs,
                "agent clock skew is close to the limit; its requests will fail past it"
            );
        }
    }
}
