//! The stages a check passes through, by name: the `stage` of timings, logs and failures.

/// One row of the table at the top of `pipeline/mod.rs`, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The route's policy (`bypass` allows here).
    Policy,
    /// The route's limit per client address, before any signature work.
    ClientRateLimit,
    /// The profile's credential: the Claw AIT or the bearer JWT, with its keys.
    Token,
    /// The whole body, for the proof.
    Body,
    /// Proof of possession over the exact request.
    Proof,
    Revocation,
    /// A known agent (the trust store), where the route asks.
    Trust,
    /// The nonce, recorded for the proof's whole window.
    Replay,
    /// The route's limit per authenticated agent.
    RateLimit,
    /// The registry's access-token validation, where the route asks.
    Access,
    /// The bearer route's roles, permissions and trust score.
    Authorization,
}

impl Stage {
    /// Every stage, in the order a check meets them.
    pub(crate) const ALL: [Stage; 11] = [
        Stage::Policy,
        Stage::ClientRateLimit,
        Stage::Token,
        Stage::Body,
        Stage::Proof,
        Stage::Revocation,
        Stage::Trust,
        Stage::Replay,
        Stage::RateLimit,
        Stage::Access,
        Stage::Authorization,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Policy => "policy",
            Stage::ClientRateLimit => "client_rate_limit",
            Stage::Token => "token",
            Stage::Body => "body",
            Stage::Proof => "proof",
            Stage::Revocation => "revocation",
            Stage::Trust => "trust",
            Stage::Replay => "replay",
            Stage::RateLimit => "rate_limit",
            Stage::Access => "access",
            Stage::Authorization => "authorization",
        }
    }
}

/// The stages one check entered, in order (each at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trail {
    stages: [Stage; Stage::ALL.len()],
    len: usize,
}

impl Default for Trail {
    fn default() -> Self {
        Trail {
            stages: [Stage::Policy; Stage::ALL.len()],
            len: 0,
        }
    }
}

impl Trail {
    pub(super) fn push(&mut self, stage: Stage) {
        if let Some(slot) = self.stages.get_mut(self.len) {
            *slot = stage;
            self.len += 1;
        }
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::Stage;

    /// A stage's number is its place in `Stage::ALL`, whose labels `Metrics` binds in that order
    /// (a stage out of place is still recorded, by a search for its label).
    #[test]
    fn every_stage_is_numbered_by_its_place_in_all() {
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage as usize, i, "{}", stage.as_str());
        }
    }
}
