//! One circuit breaker per registry endpoint (`docs/deviations.md` item 5).
//!
//! Closed: calls go through and consecutive failures are counted; after `failures` of them the
//! breaker opens. Open: no call reaches the endpoint for `open_ms`; then the breaker turns
//! half-open and lets exactly one probe through. A successful probe closes it, a failed one opens
//! it for another `open_ms`.
//!
//! Counting and the transitions are `failsafe`'s state machine. Three things it lacks are added
//! here: a state that can be read at any time (kept from its `Instrument` hooks), a cooldown on
//! the injected [`Clock`] (failsafe's own runs on `std::time::Instant`, which tests cannot move;
//! it is given a zero backoff and this gate decides when the cooldown is over), and the limit of
//! one probe in flight while half-open (failsafe lets every call through).
//!
//! A failure is a call with no HTTP answer (refused, reset, timed out) or a 5xx answer; any
//! other status, a 429 (the registry throttling us), a 401 from the validate endpoint or a CRL
//! 404 included, is the registry working. A call the Check's own deadline cut short (under
//! 100 ms) is not judged at all (`guard.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Instrument, StateMachine};

use crate::clock::Clock;
use crate::metrics::Endpoint;

pub use crate::metrics::BreakerState as State;

fn state_from_u8(v: u8) -> State {
    match v {
        1 => State::Open,
        2 => State::HalfOpen,
        _ => State::Closed,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    pub(crate) open_ms: u64,
}

/// What the hooks record; shared between the breaker and failsafe's instrument.
struct Shared {
    endpoint: Endpoint,
    clock: Arc<dyn Clock>,
    state: AtomicU8,
    opened_at_ms: AtomicU64,
    transitions: AtomicU64,
    /// Transitions into each state, by `State as usize`.
    into: [AtomicU64; 3],
}

impl Shared {
    fn enter(&self, to: State) {
        if to == State::Open {
            self.opened_at_ms
                .store(self.clock.now_ms(), Ordering::SeqCst);
        }
        let from = state_from_u8(self.state.swap(to as u8, Ordering::SeqCst));
        if from == to {
            return;
        }
        self.transitions.fetch_add(1, Ordering::Relaxed);
        self.into[to as usize].fetch_add(1, Ordering::Relaxed);
        let endpoint = self.endpoint.as_str();
        match to {
            State::Open => tracing::warn!(
                endpoint,
                from = from.as_str(),
                "registry circuit breaker opened; calls to this endpoint are paused"
            ),
            State::HalfOpen => {
                tracing::info!(
                    endpoint,
                    "registry circuit breaker half-open; sending one probe"
                )
            }
            State::Closed => tracing::info!(endpoint, "registry circuit breaker closed"),
        }
    }
}

struct Hooks(Arc<Shared>);

impl Instrument for Hooks {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.0.enter(State::Open);
    }

    fn on_half_open(&self) {
        self.0.enter(State::HalfOpen);
    }

    fn on_closed(&self) {
        self.0.enter(State::Closed);
    }
}

pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<Constant>, Hooks>,
    shared: Arc<Shared>,
    open_ms: u64,
    probing: AtomicBool,
    rejected: AtomicU64,
}

impl Breaker {
    pub fn new(endpoint: Endpoint, settings: BreakerSettings, clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new(Shared {
            endpoint,
            clock,
            state: AtomicU8::new(State::Closed as u8),
            opened_at_ms: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            into: Default::default(),
        });
        let policy = failure_policy::consecutive_failures(
            settings.failures.max(1),
            backoff::constant(Duration::ZERO),
        );
        Breaker {
            machine: StateMachine::new(policy, Hooks(shared.clone())),
            shared,
            open_ms: settings.open_ms,
            probing: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.shared.endpoint
    }

    pub fn state(&self) -> State {
        state_from_u8(self.shared.state.load(Ordering::SeqCst))
    }

    /// Calls refused without reaching the endpoint.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// State changes so far (each also logged once).
    pub fn transitions(&self) -> u64 {
        self.shared.transitions.load(Ordering::Relaxed)
    }

    /// Transitions into `state` so far.
    pub(crate) fn transitions_to(&self, state: State) -> u64 {
        self.shared.into[state as usize].load(Ordering::Relaxed)
    }

    /// Asks to make one call: `None` while open (or while the half-open probe is out).
    pub(crate) fn permit(&self) -> Option<Permit<'_>> {
        let permit = match self.state() {
            State::Closed => self.machine.is_call_permitted().then_some(Permit {
                breaker: self,
                probe: false,
                done: false,
            }),
            State::Open if !self.cooled_down() => None,
            State::Open | State::HalfOpen => self.probe(),
        };
        if permit.is_none() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// The cooldown is over (a clock that stepped back counts as over, so a wall-clock
    /// correction cannot hold the breaker open).
    fn cooled_down(&self) -> bool {
        let now = self.shared.clock.now_ms();
        let opened = self.shared.opened_at_ms.load(Ordering::SeqCst);
        now < opened || now - opened >= self.open_ms
    }

    fn probe(&self) -> Option<Permit<'_>> {
        if self
            .probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return None;
        }
        // failsafe's own open period is zero, so this moves it to half-open.
        if !self.machine.is_call_permitted() {
            self.probing.store(false, Ordering::SeqCst);
            return None;
        }
        Some(Permit {
            breaker: self,
            probe: true,
            done: false,
        })
    }
}

/// Leave to make one call; report how it went with [`Permit::record`]. Dropped unreported (the
/// caller gave up), it frees the probe slot without judging the endpoint.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub(crate) fn record(mut self, ok: bool) {
        self.done = true;
        let machine = &self.breaker.machine;
        match ok {
            true => machine.on_success(),
            false => machine.on_error(),
        }
        if self.probe {
            self.breaker.probing.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.breaker.probing.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker() -> (Breaker, ManualClock) {
        let clock = ManualClock::at(1_000_000);
        let settings = BreakerSettings {
            failures: 3,
            open_ms: 30_000,
        };
        (
            Breaker::new(Endpoint::Keys, settings, Arc::new(clock.clone())),
            clock,
        )
    }

    fn fail(b: &Breaker, n: usize) {
        for _ in 0..n {
            b.permit().expect("permitted").record(false);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, _) = breaker();
        fail(&b, 2);
        b.permit().unwrap().record(true);
        fail(&b, 2);
        assert_eq!(b.state(), State::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), State::Open);
        assert!(b.permit().is_none());
        assert_eq!((b.rejected(), b.transitions()), (1, 1));
    }

    #[test]
    fn one_probe_per_cooldown_then_closes_on_success() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance_ms(29_999);
        assert!(b.permit().is_none());
        clock.advance_ms(1);
        let probe = b.permit().expect("the probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.permit().is_none(), "only one probe in flight");
        probe.record(false);
        assert_eq!(b.state(), State::Open);
        assert!(
            b.permit().is_none(),
            "a failed probe reopens for a full cooldown"
        );
        clock.advance_ms(30_000);
        b.permit().expect("the next probe").record(true);
        assert_eq!(b.state(), State::Closed);
        assert!(b.permit().is_some());
        // closed -> open -> half-open -> open -> half-open -> closed
        assert_eq!(b.transitions(), 5);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_without_a_verdict() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance_ms(30_000);
        drop(b.permit().expect("the probe"));
        assert_eq!(b.state(), State::HalfOpen);
        b.permit().expect("another probe").record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_clock_stepping_back_ends_the_cooldown() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.set_ms(1_000);
        assert!(b.permit().is_some());
    }
}
