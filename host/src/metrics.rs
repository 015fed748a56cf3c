//! Prometheus metrics: one [`Metrics`] registry per host (never a process-global recorder, so
//! tests can run many hosts in one process), rendered by `GET /metrics` in the OpenMetrics text
//! format that Prometheus scrapes.
//!
//! The writer, the HTTP layer and the alert dispatcher update these families as things happen;
//! the few values that are cheaper to read than to track (queue depths) are set at scrape time.
//! This module owns names, labels and buckets; it never decides anything.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The stable problem code.
    pub reason: String,
}

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The matched route template (`/v1/servers/{id}`), or `unmatched`.
    pub route: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// `status` and `confidence` of a server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// `green`, `yellow` or `red`.
    pub confidence: String,
}

/// `digest` label of a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DigestLabel {
    /// `sha256:<hex>`.
    pub digest: String,
}

/// A failed evaluation's policy and kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyErrorLabels {
    /// `sha256:<hex>`.
    pub digest: String,
    /// `trap`, `out_of_fuel`, `invalid_output`, `guest_error`, ...
    pub kind: String,
}

/// The active policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyInfoLabels {
    /// From `describe()`.
    pub name: String,
    /// From `describe()`.
    pub version: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// An alert delivery's sink and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The sink's configured name.
    pub sink: String,
    /// `delivered`, `retry`, `failed`, `duplicate` or `muted`.
    pub outcome: String,
}

/// `kind` label of an alert.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `server_offline`, ...
    pub kind: String,
}

/// `queue` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// `writer` or `alert_outbox`.
    pub queue: String,
}

/// A writer phase (`fold` or `commit`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase.
    pub phase: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn evaluation_histogram() -> Histogram {
    // 5 µs … ~40 ms: a policy call is microseconds unless it misbehaves.
    Histogram::new(exponential_buckets(0.000_005, 2.0, 14))
}

/// Every metric of one host. Cheap to share behind an `Arc`; each family is internally
/// synchronised (atomics and a lock per family), so updates never need `&mut`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Heartbeats stored.
    pub heartbeats_accepted: Counter,
    /// Exact repeats acknowledged without storing.
    pub heartbeats_duplicate: Counter,
    /// Refused heartbeats by stable problem code.
    pub heartbeats_rejected: Family<ReasonLabel, Counter>,
    /// HTTP request latency.
    pub request_duration: Histograms<RequestLabels>,
    /// Events (heartbeats + rejections) per committed batch.
    pub batch_size: Histogram,
    /// Writer time per batch by phase: `fold` (checks, policy calls, building the batch) and
    /// `commit` (the database transaction, durable when it returns).
    pub batch_duration: Histograms<PhaseLabel>,
    /// Batches whose commit failed.
    pub batches_failed: Counter,
    /// Servers by derived status and confidence.
    pub servers: Family<StateLabels, Gauge>,
    /// Policy evaluations by policy digest.
    pub policy_evaluations: Family<DigestLabel, Counter>,
    /// Failed policy evaluations by digest and kind.
    pub policy_errors: Family<PolicyErrorLabels, Counter>,
    /// Duration of one policy evaluation.
    pub policy_duration: Histograms<DigestLabel>,
    /// The active policy (value 1).
    pub policy_active: Family<PolicyInfoLabels, Gauge>,
    /// Alerts raised (written to the outbox) by kind.
    pub alerts_raised: Family<KindLabel, Counter>,
    /// Alert deliveries by sink and outcome.
    pub alert_deliveries: Family<DeliveryLabels, Counter>,
    /// Items waiting in a queue.
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// Live-stream subscribers dropped because they fell behind.
    pub live_lagged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        let m = Self {
            heartbeats_accepted: Counter::default(),
            heartbeats_duplicate: Counter::default(),
            heartbeats_rejected: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batch_duration: Family::new_with_constructor(latency_histogram),
            batches_failed: Counter::default(),
            servers: Family::default(),
            policy_evaluations: Family::default(),
            policy_errors: Family::default(),
            policy_duration: Family::new_with_constructor(evaluation_histogram),
            policy_active: Family::default(),
            alerts_raised: Family::default(),
            alert_deliveries: Family::default(),
            queue_depth: Family::default(),
            live_lagged: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "heartbeats_accepted",
            "Heartbeats accepted and stored",
            m.heartbeats_accepted.clone(),
        );
        r.register(
            "heartbeats_duplicate",
            "Exact repeats of the last heartbeat, acknowledged and not stored again",
            m.heartbeats_duplicate.clone(),
        );
        r.register(
            "heartbeats_rejected",
            "Refused heartbeats by problem code",
            m.heartbeats_rejected.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            m.request_duration.clone(),
        );
        r.register(
            "batch_size_events",
            "Events per committed write batch (group commit)",
            m.batch_size.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Writer time per write batch, by phase (fold, commit)",
            m.batch_duration.clone(),
        );
        r.register(
            "batches_failed",
            "Write batches whose commit failed",
            m.batches_failed.clone(),
        );
        r.register(
            "servers",
            "Registered servers by derived status and confidence",
            m.servers.clone(),
        );
        r.register(
            "policy_evaluations",
            "Policy evaluations by policy digest",
            m.policy_evaluations.clone(),
        );
        r.register(
            "policy_errors",
            "Failed policy evaluations by policy digest and kind",
            m.policy_errors.clone(),
        );
        r.register(
            "policy_evaluation_duration_seconds",
            "Duration of one policy evaluation",
            m.policy_duration.clone(),
        );
        r.register(
            "policy_active",
            "The active policy (1) by name, version and digest",
            m.policy_active.clone(),
        );
        r.register(
            "alerts_raised",
            "Alerts written to the outbox by kind",
            m.alerts_raised.clone(),
        );
        r.register(
            "alert_deliveries",
            "Alert delivery attempts by sink and outcome",
            m.alert_deliveries.clone(),
        );
        r.register(
            "queue_depth",
            "Items waiting in a queue",
            m.queue_depth.clone(),
        );
        r.register(
            "live_subscribers_lagged",
            "Live-stream subscribers dropped for falling behind",
            m.live_lagged.clone(),
        );
        Self { registry, ..m }
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a server moving from one (status, confidence) to another.
    pub fn server_moved(&self, from: Option<(&str, &str)>, to: (&str, &str)) {
        if from == Some(to) {
            return;
        }
        if let Some((status, confidence)) = from {
            self.servers
                .get_or_create(&StateLabels {
                    status: status.into(),
                    confidence: confidence.into(),
                })
                .dec();
        }
        self.servers
            .get_or_create(&StateLabels {
                status: to.0.into(),
                confidence: to.1.into(),
            })
            .inc();
    }

    /// Counts a refused heartbeat.
    pub fn rejected(&self, reason: &str) {
        self.heartbeats_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Records one policy evaluation.
    pub fn evaluated(&self, digest: &str, took: Duration, error_kind: Option<&str>) {
        let label = DigestLabel {
            digest: digest.into(),
        };
        self.policy_evaluations.get_or_create(&label).inc();
        self.policy_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(kind) = error_kind {
            self.policy_errors
                .get_or_create(&PolicyErrorLabels {
                    digest: digest.into(),
                    kind: kind.into(),
                })
                .inc();
        }
    }

    /// Marks `active` as the one active policy.
    pub fn policy_activated(&self, active: PolicyInfoLabels) {
        self.policy_active.clear();
        self.policy_active.get_or_create(&active).set(1);
    }

    /// Counts an alert delivery outcome.
    pub fn delivery(&self, sink: &str, outcome: &str) {
        self.alert_deliveries
            .get_or_create(&DeliveryLabels {
                sink: sink.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets a queue's depth.
    pub fn set_queue_depth(&self, queue: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_prefix_and_eof() {
        let m = Metrics::new();
        m.heartbeats_accepted.inc();
        m.rejected("bad_signature");
        m.server_moved(None, ("online", "green"));
        m.server_moved(Some(("online", "green")), ("offline", "red"));
        let text = m.render();
        assert!(text.contains("vigil_heartbeats_accepted_total 1"), "{text}");
        assert!(
            text.contains("vigil_heartbeats_rejected_total{reason=\"bad_signature\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_servers{status=\"online\",confidence=\"green\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vigil_servers{status=\"offline\",confidence=\"red\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
