//! The series every check records, bound once, and the histograms recorded in runs
//! (`runs.rs`).

use std::sync::{OnceLock, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Histogram};

use super::Outcome;
use super::runs::Runs;

/// The series of one instrument for each value of one label from a closed set, each bound on
/// its first measurement: a bound series skips the SDK's per-measurement attribute sort, hash
/// and lookup. Bound lazily because a series bound before it is measured is exported at zero.
pub(super) struct Bound<B> {
    key: &'static str,
    values: Box<[&'static str]>,
    series: Box<[OnceLock<B>]>,
}

impl<B> Bound<B> {
    pub(super) fn new(key: &'static str, values: &[&'static str]) -> Self {
        Bound {
            key,
            values: values.into(),
            series: values.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// The series for `value`, bound by `bind` the first time; `None` for a value outside the set.
    pub(super) fn get(
        &self,
        value: &'static str,
        bind: impl FnOnce(&[KeyValue]) -> B,
    ) -> Option<&B> {
        let i = self.values.iter().position(|v| *v == value)?;
        self.at(i, value, bind)
    }

    /// [`Bound::get`] for a caller that knows `value`'s place in the set: one comparison
    /// instead of a search.
    pub(super) fn at(
        &self,
        i: usize,
        value: &'static str,
        bind: impl FnOnce(&[KeyValue]) -> B,
    ) -> Option<&B> {
        if self.values.get(i) != Some(&value) {
            return self.get(value, bind);
        }
        let series = self.series.get(i)?;
        Some(series.get_or_init(|| bind(&[KeyValue::new(self.key, value)])))
    }
}

/// See [`Bound`].
pub(super) struct BoundSeries {
    /// `stage_duration` by stage.
    pub(super) stages: Bound<BoundHistogram<f64>>,
    /// `check_duration` by decision.
    pub(super) checks: Bound<BoundHistogram<f64>>,
    /// `decisions{decision="allow", code="none"}` by policy.
    pub(super) allowed: RwLock<Vec<(Box<str>, BoundCounter<u64>)>>,
    /// `nonce_operations` by result, for the first store label recorded (one per server).
    pub(super) nonces: Bound<(&'static str, BoundCounter<u64>)>,
    /// `clock_skew`'s one series.
    pub(super) skew: OnceLock<BoundHistogram<f64>>,
    /// The histograms every check records, measured in runs.
    pub(super) durations: Durations,
    pub(super) runs: Runs<Measured>,
}

/// The histograms behind [`BoundSeries::runs`].
pub(super) struct Durations {
    pub(super) stage: Histogram<f64>,
    pub(super) check: Histogram<f64>,
    pub(super) skew: Histogram<f64>,
}

/// A value for one of the [`Durations`].
pub(super) enum Measured {
    /// A stage's label and its place among the `stage` labels, and its seconds.
    Stage(usize, &'static str, f64),
    Check(Outcome, f64),
    Skew(f64),
}

impl BoundSeries {
    pub(super) fn measure(&self, value: Measured) {
        self.runs.push(value, |v| self.record(v));
    }

    /// Records every value held (at collection, before any instrument is read).
    pub(super) fn take_in(&self) {
        self.runs.drain(|v| self.record(v));
    }

    fn record(&self, value: Measured) {
        let Durations { stage, check, skew } = &self.durations;
        match value {
            Measured::Stage(index, label, secs) => {
                match self.stages.at(index, label, |l| stage.bind(l)) {
                    Some(series) => series.record(secs),
                    None => stage.record(secs, &[KeyValue::new("stage", label)]),
                }
            }
            Measured::Check(outcome, secs) => {
                match self.checks.get(outcome.as_str(), |l| check.bind(l)) {
                    Some(series) => series.record(secs),
                    None => check.record(secs, &[KeyValue::new("decision", outcome.as_str())]),
                }
            }
            Measured::Skew(secs) => self.skew.get_or_init(|| skew.bind(&[])).record(secs),
        }
    }
}
