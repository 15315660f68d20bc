//! Security events: detectors fed by every Check, and the events they make delivered to
//! signed webhooks, the Redis stream, the log and `claw-authz events tail`.
//!
//! The request path only pushes an [`Observation`] onto a bounded queue ([`Monitor::observe`]),
//! waking no one: a full queue drops it and counts, so detection and delivery never add latency
//! to a Check. One task drains the queue every [`DRAIN`] (at once when it is half full), runs the
//! detectors (`detect.rs`) and hands each event to the sinks, each with its
//! own bounded queue and worker (`deliver.rs`): a dead receiver costs its own worker only.

pub mod deliver;
pub mod detect;
pub mod event;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

pub use detect::{Observation, Reading};
pub use event::{Kind, SecurityEvent};

use crate::clock::Clock;
use crate::config::SecurityConfig;
use crate::store::redis::Redis;

/// Counts of what happened to observations and events.
#[derive(Debug, Default)]
pub struct Counters {
    /// Observations dropped because the detectors' queue was full.
    pub observations_dropped: AtomicU64,
    /// Events made, by `Kind::ALL` index.
    pub events: [AtomicU64; 8],
    /// Events a sink's queue had no room for.
    pub events_dropped: AtomicU64,
    pub delivered: AtomicU64,
    /// Delivery attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Events added to the Redis stream.
    pub streamed: AtomicU64,
}

impl Counters {
    pub fn events_of(&self, kind: Kind) -> u64 {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.events[i].load(Ordering::Relaxed)
    }
}

/// How long an observation may wait in the intake. Detector windows are seconds long; waking
/// the detectors' task per Check instead cost a worker thread's futex wake and park per Check
/// at low rates.
pub const DRAIN: Duration = Duration::from_millis(50);

/// Observations waiting for the detectors, at most `capacity`.
struct Intake {
    queue: Mutex<VecDeque<Observation>>,
    capacity: usize,
    /// Signalled when the queue reaches half its capacity, so a burst is drained before it fills.
    half_full: Notify,
}

impl Intake {
    fn take(&self) -> VecDeque<Observation> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *queue)
    }
}

/// The request path's handle, and the detectors' intake.
pub struct Monitor {
    intake: Option<Arc<Intake>>,
    /// Whether [`Monitor::start`] ran.
    started: Mutex<bool>,
    config: SecurityConfig,
    /// Every event as its CloudEvent text, for `GET /v1/security/events`.
    tail: broadcast::Sender<Arc<str>>,
    pub counters: Arc<Counters>,
}

impl Monitor {
    pub fn new(config: &SecurityConfig) -> Monitor {
        let intake = config.enabled.then(|| {
            Arc::new(Intake {
                queue: Mutex::new(VecDeque::new()),
                capacity: config.queue,
                half_full: Notify::new(),
            })
        });
        Monitor {
            intake,
            started: Mutex::new(false),
            config: config.clone(),
            tail: broadcast::channel(256).0,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Whether observations are taken at all.
    pub fn enabled(&self) -> bool {
        self.intake.is_some()
    }

    /// Offers `o` to the detectors, without waiting or waking anyone (unless the queue just
    /// reached half full).
    pub fn observe(&self, o: Observation) {
        let Some(intake) = &self.intake else { return };
        let mut queue = intake.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= intake.capacity {
            drop(queue);
            self.counters
                .observations_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back(o);
        let half_full = queue.len() == intake.capacity.div_ceil(2);
        drop(queue);
        if half_full {
            intake.half_full.notify_one();
        }
    }

    /// Events as they are made (their CloudEvent text).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tail.subscribe()
    }

    /// Readers of [`Monitor::subscribe`] now (`events tail` sessions).
    pub fn subscribers(&self) -> usize {
        self.tail.receiver_count()
    }

    /// Starts the detectors' task and the sinks' workers; `read` gives the breakers and data
    /// ages every `poll_ms`. Only the first call starts anything.
    pub fn start(
        &self,
        clock: Arc<dyn Clock>,
        read: Box<dyn Fn() -> Reading + Send>,
        redis: Option<Redis>,
        logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    ) {
        let Some(intake) = &self.intake else { return };
        {
            let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
            if *started {
                return;
            }
            *started = true;
        }
        // The task ends once the monitor (the intake's owner) is gone.
        let intake: Weak<Intake> = Arc::downgrade(intake);
        let sinks = deliver::Sinks::start(&self.config, redis, self.counters.clone());
        let mut detectors = detect::Detectors::new(&self.config);
        let (tail, counters, poll) = (self.tail.clone(), self.counters.clone(), self.config.poll);
        let source = source();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut drain = tokio::time::interval(DRAIN);
            drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while let Some(held) = intake.upgrade() {
                let mut events = Vec::new();
                tokio::select! {
                    _ = held.half_full.notified() => {}
                    _ = drain.tick() => {}
                    _ = tick.tick() => events = detectors.poll(&read(), clock.now_ms()),
                }
                for o in held.take() {
                    events.extend(detectors.observe(o));
                }
                drop(held);
                for e in events {
                    let i = Kind::ALL.iter().position(|k| *k == e.kind).unwrap_or(0);
                    counters.events[i].fetch_add(1, Ordering::Relaxed);
                    let id = uuid::Uuid::new_v4().to_string();
                    let text: Arc<str> = e.to_cloudevent(&id, &source).to_string().into();
                    tracing::warn!(
                        target: "claw_authz::security",
                        event = e.kind.as_str(),
                        id = %id,
                        agent = e.agent.as_deref().unwrap_or("-"),
                        client = e.client.as_deref().unwrap_or("-"),
                        count = e.count,
                        window_secs = e.window_secs,
                        risk = e.risk,
                        "security event"
                    );
                    if let Some(logger) = &logger {
                        log_record(logger, &e, &id, &text);
                    }
                    let _ = tail.send(text.clone());
                    sinks.offer(&deliver::Delivery {
                        id,
                        kind: e.kind,
                        body: text,
                    });
                }
            }
        });
    }
}

/// The event as an OpenTelemetry log record: severity WARN, event name its type, the CloudEvent
/// as the body, and the agent, client and risk as attributes.
fn log_record(
    logger: &opentelemetry_sdk::logs::SdkLogger,
    e: &SecurityEvent,
    id: &str,
    text: &str,
) {
    use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
    let mut record = logger.create_log_record();
    record.set_event_name(e.kind.as_str());
    record.set_severity_number(Severity::Warn);
    record.set_severity_text("WARN");
    record.set_body(AnyValue::from(text.to_owned()));
    record.add_attribute("event.id", id.to_owned());
    record.add_attribute("claw.security.type", e.kind.as_str());
    if let Some(agent) = &e.agent {
        record.add_attribute("claw.agent", agent.clone());
    }
    if let Some(client) = &e.client {
        record.add_attribute("client.address", client.clone());
    }
    record.add_attribute("claw.security.risk", e.risk as i64);
    logger.emit(record);
}

/// The CloudEvents `source`: this replica (`HOSTNAME` is the pod's name in Kubernetes).
fn source() -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() && host.len() <= 253 => format!("claw-authz/{host}"),
        _ => "claw-authz".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(at_ms: u64) -> Observation {
        Observation::Allowed {
            agent: "did:a".into(),
            client: None,
            at_ms,
        }
    }

    fn waiting(monitor: &Monitor) -> usize {
        let intake = monitor.intake.as_ref().expect("enabled");
        intake.queue.lock().unwrap().len()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Observations wait for the drain (no wake per check) until the queue is half full, which
    /// drains it at once; otherwise the next drain tick takes them.
    #[tokio::test(start_paused = true)]
    async fn the_intake_is_drained_every_tick_and_at_once_when_half_full() {
        let yaml = "registry:\n  url: https://r.example\nsecurity_events:\n  queue: 16\n";
        let config = crate::config::Config::load(yaml, &Default::default()).unwrap();
        let monitor = Monitor::new(&config.security);
        let clock = Arc::new(crate::clock::ManualClock::at(0));
        let read = Box::new(|| Reading {
            breakers: Vec::new(),
            stale_for_ms: Vec::new(),
        });
        monitor.start(clock, read, None, None);
        settle().await;
        for i in 0..7 {
            monitor.observe(allowed(i));
        }
        settle().await;
        assert_eq!(waiting(&monitor), 7, "below half: no wake");
        monitor.observe(allowed(7));
        settle().await;
        assert_eq!(waiting(&monitor), 0, "half full: drained at once");
        for i in 0..3 {
            monitor.observe(allowed(i));
        }
        settle().await;
        assert_eq!(waiting(&monitor), 3);
        tokio::time::advance(DRAIN).await;
        settle().await;
        assert_eq!(waiting(&monitor), 0, "drained by the tick");
    }

    #[test]
    fn a_full_intake_drops_and_counts_without_waiting() {
        let yaml = "registry:\n  url: https://r.example\nsecurity_events:\n  queue: 16\n";
        let config = crate::config::Config::load(yaml, &Default::default()).unwrap();
        // No task drains it: the 17th observation on finds the queue full.
        let monitor = Monitor::new(&config.security);
        for i in 0..20 {
            monitor.observe(allowed(i));
        }
        let dropped = monitor
            .counters
            .observations_dropped
            .load(Ordering::Relaxed);
        assert_eq!(dropped, 4);
        let off = "registry:\n  url: https://r.example\nsecurity_events:\n  enabled: false\n";
        let config = crate::config::Config::load(off, &Default::default()).unwrap();
        let monitor = Monitor::new(&config.security);
        assert!(!monitor.enabled());
        monitor.observe(allowed(0));
        assert_eq!(
            monitor
                .counters
                .observations_dropped
                .load(Ordering::Relaxed),
            0
        );
    }
}
