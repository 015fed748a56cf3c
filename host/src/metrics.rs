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

/// `vigil_build_info` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version (`CARGO_PKG_VERSION`).
    pub version: String,
}

/// `server` label of the per-server series (`[metrics] per_server`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// The server's id.
    pub server: String,
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
    /// Always 1, labelled with the build.
    pub build_info: Family<BuildLabels, Gauge>,
    /// 1 when the last configuration reload (file edit or SIGHUP) was put in force, 0 when it
    /// was refused. Set at scrape time from the config handle.
    pub config_reload_ok: Gauge,
    /// Unix seconds of the last configuration put in force (start-up counts). Set at scrape time.
    pub config_reload_success_time: Gauge,
    /// Per server (`[metrics] per_server`): 1 online, 0 otherwise. Rebuilt at each scrape.
    pub server_up: Family<ServerLabel, Gauge>,
    /// Per server: confidence as 2 green, 1 yellow, 0 red. Rebuilt at each scrape.
    pub server_confidence: Family<ServerLabel, Gauge>,
    /// Per server: uptime as a ratio (0 to 1). Rebuilt at each scrape.
    pub server_uptime: Family<ServerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Per server: seconds since the last accepted heartbeat (absent before the first).
    pub server_last_seen_age: Family<ServerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// What one server contributes to the per-server series.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSample<'a> {
    /// The server's id.
    pub server: &'a str,
    /// Derived status (`online`, `offline`, `unknown`).
    pub status: &'a str,
    /// Derived confidence (`green`, `yellow`, `red`).
    pub confidence: &'a str,
    /// Uptime in percent.
    pub uptime_percent: f64,
    /// Seconds since the last accepted heartbeat, if any.
    pub last_seen_age_seconds: Option<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
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
            build_info: Family::default(),
            config_reload_ok: Gauge::default(),
            config_reload_success_time: Gauge::default(),
            server_up: Family::default(),
            server_confidence: Family::default(),
            server_uptime: Family::default(),
            server_last_seen_age: Family::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        m.config_reload_ok.set(1);
        // The process metrics keep their conventional unprefixed names.
        registry.register_collector(Box::new(ProcessCollector::default()));
        let r = registry.sub_registry_with_prefix("vigil");
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
        r.register(
            "build_info",
            "Always 1; the labels name the build",
            m.build_info.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "1 if the last configuration reload was put in force, 0 if it was refused",
            m.config_reload_ok.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration put in force",
            m.config_reload_success_time.clone(),
        );
        r.register(
            "server_up",
            "Per server ([metrics] per_server): 1 online, 0 otherwise",
            m.server_up.clone(),
        );
        r.register(
            "server_confidence",
            "Per server ([metrics] per_server): 2 green, 1 yellow, 0 red",
            m.server_confidence.clone(),
        );
        r.register(
            "server_uptime_ratio",
            "Per server ([metrics] per_server): uptime from 0 to 1",
            m.server_uptime.clone(),
        );
        r.register(
            "server_last_seen_age_seconds",
            "Per server ([metrics] per_server): seconds since the last accepted heartbeat",
            m.server_last_seen_age.clone(),
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
        // Every error kind starts at 0 for the new digest, so `rate()` sees the first error.
        for kind in crate::policy::PolicyError::KINDS {
            drop(self.policy_errors.get_or_create(&PolicyErrorLabels {
                digest: active.digest.clone(),
                kind: kind.into(),
            }));
        }
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

    /// Records the configuration reload state (read from the config handle at scrape time).
    pub fn set_config_reload(&self, ok: bool, last_success_unix_seconds: i64) {
        self.config_reload_ok.set(i64::from(ok));
        self.config_reload_success_time
            .set(last_success_unix_seconds);
    }

    /// Replaces the per-server series with `servers` (an empty iterator clears them, as when
    /// `[metrics] per_server` is switched off).
    pub fn set_servers<'a>(&self, servers: impl IntoIterator<Item = ServerSample<'a>>) {
        self.server_up.clear();
        self.server_confidence.clear();
        self.server_uptime.clear();
        self.server_last_seen_age.clear();
        for s in servers {
            let label = ServerLabel {
                server: s.server.into(),
            };
            self.server_up
                .get_or_create(&label)
                .set(i64::from(s.status == "online"));
            let confidence = match s.confidence {
                "green" => 2,
                "yellow" => 1,
                _ => 0,
            };
            self.server_confidence.get_or_create(&label).set(confidence);
            self.server_uptime
                .get_or_create(&label)
                .set((s.uptime_percent / 100.0).clamp(0.0, 1.0));
            if let Some(age) = s.last_seen_age_seconds {
                self.server_last_seen_age
                    .get_or_create(&label)
                    .set(age.max(0.0));
            }
        }
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

/// `process_*` metrics of this process, read at each scrape (sysinfo, Linux `/proc`): resident
/// and virtual memory, CPU seconds, open file descriptors and start time.
#[derive(Debug)]
struct ProcessCollector {
    // None where sysinfo cannot read this system: then no process metrics are shown.
    system: std::sync::Mutex<Option<sysinfo::System>>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self {
            system: std::sync::Mutex::new(sysinfo::System::new().ok()),
        }
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate};

        let Ok(pid) = sysinfo::get_current_pid() else {
            return Ok(());
        };
        // A poisoned lock only means an earlier scrape panicked mid-refresh: the data is
        // refreshed again below either way.
        let mut system = self
            .system
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(system) = system.as_mut() else {
            return Ok(());
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let Some(process) = system.process(pid) else {
            return Ok(());
        };
        let gauges: [(&str, &str, i64); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                i64::try_from(process.memory()).unwrap_or(i64::MAX),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                i64::try_from(process.virtual_memory()).unwrap_or(i64::MAX),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                i64::try_from(process.start_time()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(open) = process.open_files() {
            let gauge = ConstGauge::new(i64::try_from(open).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        // Accumulated CPU time is in milliseconds.
        let cpu = ConstCounter::new(process.accumulated_cpu_time() as f64 / 1000.0);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        Ok(())
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

    #[test]
    fn build_info_process_metrics_and_per_server_series_render() {
        let m = Metrics::new();
        m.set_config_reload(false, 1_700_000_000);
        m.set_servers([ServerSample {
            server: "a",
            status: "online",
            confidence: "yellow",
            uptime_percent: 50.0,
            last_seen_age_seconds: Some(3.0),
        }]);
        let text = m.render();
        assert!(
            text.contains(&format!(
                "vigil_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("vigil_config_last_reload_successful 0"),
            "{text}"
        );
        assert!(text.contains("vigil_server_up{server=\"a\"} 1"), "{text}");
        assert!(
            text.contains("vigil_server_confidence{server=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_server_uptime_ratio{server=\"a\"} 0.5"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("vigil_process"), "{text}");
        m.set_servers([]);
        assert!(!m.render().contains("vigil_server_up{"));
    }
}
