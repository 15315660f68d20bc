//! Times each stage and remembers where a check is, so a failure is attributed to its stage.

use tokio::time::Instant;

use super::stage::{Stage, Trail};
use crate::metrics::Metrics;

/// Follows one check through its stages: [`Recorder::enter`] ends the running stage (recording
/// its duration) and starts the next. A stage that fails is not timed; it is the failure's stage.
pub(super) struct Recorder<'m> {
    metrics: &'m Metrics,
    running: Option<(Stage, Instant)>,
    trail: Trail,
    /// The agent, once its credential was verified (for logs, never for the caller).
    agent: Option<String>,
}

impl<'m> Recorder<'m> {
    pub(super) fn new(metrics: &'m Metrics) -> Self {
        Recorder {
            metrics,
            running: None,
            trail: Trail::default(),
            agent: None,
        }
    }

    pub(super) fn enter(&mut self, stage: Stage) {
        let now = Instant::now();
        self.close(now);
        self.running = Some((stage, now));
        self.trail.push(stage);
    }

    pub(super) fn agent(&mut self, agent: &str) {
        self.agent = Some(agent.to_owned());
    }

    fn close(&mut self, now: Instant) {
        if let Some((stage, started)) = self.running.take() {
            self.metrics
                .stage(stage as usize, stage.as_str(), now.duration_since(started));
        }
    }

    /// The check passed every stage.
    pub(super) fn passed(mut self) -> Trail {
        self.close(Instant::now());
        self.trail
    }

    /// The check failed in the running stage.
    pub(super) fn failed(self) -> (super::Failure, Trail) {
        let failure = super::Failure {
            stage: self.running.map_or(Stage::Policy, |(stage, _)| stage),
            agent_did: self.agent,
        };
        (failure, self.trail)
    }
}
