//! Exporters and the log subscriber.
//!
//! The instruments (`crate::metrics`) live on an OpenTelemetry meter provider with two readers:
//! the Prometheus registry behind the admin listener's `/metrics`, always, and an OTLP/gRPC
//! exporter when `telemetry.otlp_endpoint` is set.
//!
//! Traces: [`init_tracing`] installs the `tracing` subscriber (JSON or text lines, and an
//! OpenTelemetry layer exporting over OTLP when configured). The server opens one span per Check
//! whose parent is the W3C `traceparent` Envoy sends in the gRPC metadata; registry calls are
//! child spans.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::config::{LogConfig, TelemetryConfig};
use crate::metrics::Metrics;

/// The meter provider of one app: Prometheus always, OTLP when configured.
pub struct Telemetry {
    provider: SdkMeterProvider,
    /// OTLP log records (security events), when an endpoint is set.
    logs: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
    registry: prometheus::Registry,
    meter: Meter,
    pub metrics: Arc<Metrics>,
    /// Which Checks get a span.
    pub(crate) spans: CheckSampling,
}

impl Telemetry {
    pub fn new(config: &TelemetryConfig) -> Result<Telemetry, String> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| format!("telemetry: {e}"))?;
        let mut builder = SdkMeterProvider::builder()
            .with_reader(prometheus)
            .with_resource(resource(config));
        if let Some(endpoint) = &config.otlp_endpoint {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(config.export_interval)
                .build();
            builder = builder.with_reader(reader);
        }
        let provider = builder.build();
        let logs = match &config.otlp_endpoint {
            None => None,
            Some(endpoint) => {
                use opentelemetry_otlp::WithExportConfig;
                let exporter = opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
                let logs = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(config))
                    .build();
                Some(logs)
            }
        };
        let meter = provider.meter("claw-authz");
        let stages = crate::pipeline::Stage::ALL.map(crate::pipeline::Stage::as_str);
        let metrics = Arc::new(Metrics::new(&meter, &stages));
        Ok(Telemetry {
            provider,
            logs,
            registry,
            meter,
            metrics,
            spans: CheckSampling::new(config),
        })
    }

    pub(crate) fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The logger security events are exported through as OTLP log records, when an endpoint
    /// is set.
    pub(crate) fn security_logger(&self) -> Option<opentelemetry_sdk::logs::SdkLogger> {
        use opentelemetry::logs::LoggerProvider as _;
        self.logs.as_ref().map(|p| p.logger("claw-authz.security"))
    }

    /// The Prometheus text exposition of every instrument.
    pub fn prometheus_text(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Pushes pending metrics to the OTLP endpoint now.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "metrics flush failed");
        }
        if let Some(Err(e)) = self.logs.as_ref().map(|l| l.force_flush()) {
            tracing::warn!(error = %e, "log records flush failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
        if let Some(logs) = &self.logs {
            let _ = logs.shutdown();
        }
    }
}

fn resource(config: &TelemetryConfig) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Installs the process's `tracing` subscriber: log lines in `log.format` at `log.level`
/// (`RUST_LOG` overrides), plus span export over OTLP when `telemetry.otlp_endpoint` is set.
/// Returns the tracer provider to flush at exit.
pub fn init_tracing(
    log: &LogConfig,
    config: &TelemetryConfig,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log.level.as_str()));
    // Log lines are events only: spans exist for OTLP traces, and the log layer formatting each
    // Check span's fields cost more than the rest of the logging path.
    let events = || tracing_subscriber::filter::filter_fn(|m| m.is_event());
    let (fmt_json, fmt_text) = if log.format == crate::config::LogFormat::Json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(events());
        (Some(layer), None)
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(events());
        (None, Some(layer))
    };
    let provider = tracer_provider(config)?;
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        span_layer(p.tracer("claw-authz"))
    });
    // The level filter goes on last, outermost, so a callsite it disables is disabled for good
    // (`Interest::never`). Under the span layer, the layer would still want every disabled
    // callsite and make it `sometimes`: each of h2's `trace!` events was then filtered again on
    // every call, about 1 us per Check.
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt_json)
        .with(fmt_text)
        .with(filter)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    Ok(provider)
}

/// The layer that makes OpenTelemetry spans of `tracing` spans. A span carries its name, kind
/// and fields only: the source location, thread, target and busy/idle times the layer adds by
/// default were the same on every Check span, and building and exporting them cost about
/// 8 us per span (issue 20). Nor does entering a span make it the current OpenTelemetry
/// context: nothing here reads that context (a child span's parent is the current `tracing`
/// span, and security events are logged from their own task), and it was set again on every
/// poll of a Check.
pub fn span_layer<S>(
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_tracer(tracer)
}

/// The OTLP span exporter with the configured sampling, when an endpoint is set; also installs
/// the W3C trace-context propagator.
pub fn tracer_provider(
    config: &TelemetryConfig,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::Sampler;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let ratio = config.trace_sample_percent as f64 / 100.0;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(CheckChosenFirst(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        ))))
        .with_resource(resource(config))
        .build();
    Ok(Some(provider))
}

/// The name of the span each Check opens (the server uses the literal: `tracing` wants one).
pub(crate) const CHECK_SPAN: &str = "check";

/// Whether a Check gets a span, decided before the span exists. tracing-opentelemetry builds
/// the whole span (its data, attributes and timings) and samples only when it ends, so a span
/// left unsampled cost almost what an exported one does; a Check that is not sampled now opens
/// no span at all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckSampling {
    /// `telemetry.trace_sample_percent`; `None` when no span is exported.
    percent: Option<u32>,
}

impl CheckSampling {
    fn new(config: &TelemetryConfig) -> CheckSampling {
        let percent = config.trace_sample_percent.min(100) as u32;
        CheckSampling {
            percent: config.otlp_endpoint.as_ref().map(|_| percent),
        }
    }

    /// Whether spans are exported at all (no trace context is read otherwise).
    pub(crate) fn enabled(&self) -> bool {
        self.percent.is_some()
    }

    /// The SDK's parent-based rule, taken early: a Check in a trace Envoy started follows that
    /// trace's sampled flag; one with no parent is sampled at the configured percentage.
    pub(crate) fn sampled(&self, parent: &opentelemetry::Context) -> bool {
        use opentelemetry::trace::TraceContextExt;
        let Some(percent) = self.percent else {
            return false;
        };
        let span = parent.span();
        let context = span.span_context();
        if context.is_valid() {
            return context.is_sampled();
        }
        percent >= 100 || (percent > 0 && rand::random_ratio(percent, 100))
    }
}

/// The SDK's sampler, but a Check's span is always recorded: it exists only because
/// [`CheckSampling`] already chose it. Other spans (registry calls outside a Check) follow
/// their parent, or the configured ratio when they have none.
#[derive(Debug, Clone)]
struct CheckChosenFirst(opentelemetry_sdk::trace::Sampler);

impl opentelemetry_sdk::trace::ShouldSample for CheckChosenFirst {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::TraceContextExt;
        if name != CHECK_SPAN {
            return self.0.should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            );
        }
        opentelemetry_sdk::trace::SamplingResult {
            decision: opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|c| c.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// Reads a W3C trace context from gRPC metadata.
pub(crate) struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

    use super::*;

    fn config(percent: u64, endpoint: bool) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.then(|| "http://127.0.0.1:4317".to_owned()),
            export_interval: Duration::from_secs(60),
            trace_sample_percent: percent,
            service_name: "test".into(),
        }
    }

    fn remote(sampled: bool) -> opentelemetry::Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let span = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    fn chosen(sampling: CheckSampling, parent: &opentelemetry::Context, n: usize) -> usize {
        (0..n).filter(|_| sampling.sampled(parent)).count()
    }

    #[test]
    fn no_endpoint_no_span() {
        let s = CheckSampling::new(&config(100, false));
        assert!(!s.enabled());
        assert_eq!(chosen(s, &remote(true), 10), 0);
    }

    #[test]
    fn a_remote_parent_decides_whatever_the_percentage() {
        for percent in [0, 10, 100] {
            let s = CheckSampling::new(&config(percent, true));
            assert_eq!(chosen(s, &remote(true), 100), 100, "{percent}");
            assert_eq!(chosen(s, &remote(false), 100), 0, "{percent}");
        }
    }

    #[test]
    fn a_root_check_is_sampled_at_the_percentage() {
        let root = opentelemetry::Context::new();
        assert_eq!(
            chosen(CheckSampling::new(&config(0, true)), &root, 1_000),
            0
        );
        assert_eq!(
            chosen(CheckSampling::new(&config(100, true)), &root, 1_000),
            1_000
        );
        // 10 % of 20,000: 2,000, with a standard deviation of about 42.
        let n = chosen(CheckSampling::new(&config(10, true)), &root, 20_000);
        assert!((1_700..=2_300).contains(&n), "{n}");
    }

    #[test]
    fn the_sdk_records_a_chosen_check_and_samples_other_roots_by_ratio() {
        let sampler = CheckChosenFirst(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.0,
        ))));
        let decide = |name: &str, parent: Option<&opentelemetry::Context>| {
            sampler
                .should_sample(
                    parent,
                    TraceId::from(3u128),
                    name,
                    &SpanKind::Internal,
                    &[],
                    &[],
                )
                .decision
        };
        assert_eq!(decide(CHECK_SPAN, None), SamplingDecision::RecordAndSample);
        assert_eq!(decide("registry", None), SamplingDecision::Drop);
        let parent = remote(true);
        assert_eq!(
            decide("registry", Some(&parent)),
            SamplingDecision::RecordAndSample
        );
    }
}
