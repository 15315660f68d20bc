//! Security events: detectors fed by every Check, and the events they make delivered to
//! signed webhooks, the Redis stream, the log and `claw-authz events tail`.
//!
//! The request path only offers an [`Observation`] to a bounded channel ([`Monitor::observe`]):
//! a full channel drops it and counts, so detection and delivery never add latency to a Check.
//! One task runs the detectors (`detect.rs`) and hands each event to the sinks, each with its
//! own bounded queue and worker (`deliver.rs`): a dead receiver costs its own worker only.

pub mod deliver;
pub mod detect;
pub mod event;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

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

/// The request path's handle, and the detectors' channel until [`Monitor::start`] takes it.
pub struct Monitor {
    tx: Option<mpsc::Sender<Observation>>,
    rx: Mutex<Option<mpsc::Receiver<Observation>>>,
    config: SecurityConfig,
    /// Every event as its CloudEvent text, for `GET /v1/security/events`.
    tail: broadcast::Sender<Arc<str>>,
    pub counters: Arc<Counters>,
}

impl Monitor {
    pub fn new(config: &SecurityConfig) -> Monitor {
        let (tx, rx) = match config.enabled {
            true => {
                let (tx, rx) = mpsc::channel(config.queue);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        Monitor {
            tx,
            rx: Mutex::new(rx),
            config: config.clone(),
            tail: broadcast::channel(256).0,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Whether observations are taken at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Offers `o` to the detectors without waiting.
    pub fn observe(&self, o: Observation) {
        if let Some(tx) = &self.tx
            && tx.try_send(o).is_err()
        {
            self.counters
                .observations_dropped
                .fetch_add(1, Ordering::Relaxed);
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
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let sinks = deliver::Sinks::start(&self.config, redis, self.counters.clone());
        let mut detectors = detect::Detectors::new(&self.config);
        let (tail, counters, poll) = (self.tail.clone(), self.counters.clone(), self.config.poll);
        let source = source();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let events = tokio::select! {
                    o = rx.recv() => match o {
                        Some(o) => detectors.observe(o).into_iter().collect(),
                        None => break,
                    },
                    _ = tick.tick() => detectors.poll(&read(), clock.now_ms()),
                };
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

    #[test]
    fn a_full_intake_drops_and_counts_without_waiting() {
        let yaml = "registry:\n  url: https://r.example\nsecurity_events:\n  queue: 16\n";
        let config = crate::config::Config::load(yaml, &Default::default()).unwrap();
        // No task drains it: the 17th observation on finds the queue full.
        let monitor = Monitor::new(&config.security);
        for i in 0..20 {
            monitor.observe(Observation::Allowed {
                agent: "did:a".into(),
                client: None,
                at_ms: i,
            });
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
        monitor.observe(Observation::Allowed {
            agent: "did:a".into(),
            client: None,
            at_ms: 0,
        });
        assert_eq!(
            monitor
                .counters
                .observations_dropped
                .load(Ordering::Relaxed),
            0
        );
    }
}
