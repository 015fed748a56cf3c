//! What the writer tells the rest of the host: metrics as it folds, alerts into the batch it
//! commits, and — only after a successful commit — live events and a wake-up for the alert
//! dispatcher. Nothing here can block or slow the writer: the live bus drops lagging
//! subscribers, the wake-up is a `try_send` into a one-slot channel.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::fold::FoldEffects;
use crate::live::{AssessmentView, LiveEvent, LiveHub};
use crate::metrics::Metrics;
use crate::store::{CommitReceipt, ServerRecord, Snapshot, WriteBatch};

/// The writer's observers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Observers {
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// The live bus.
    pub live: LiveHub,
    /// Wakes the alert dispatcher (capacity 1: one pending wake-up is enough). Dropping the
    /// last sender stops the dispatcher.
    pub alerts_wake: mpsc::Sender<()>,
}

impl Observers {
    /// Observers for a host without an alert dispatcher (e.g. replay tools): the wake-up goes
    /// nowhere.
    pub fn detached(metrics: Arc<Metrics>, live: LiveHub) -> Self {
        let (alerts_wake, _) = mpsc::channel(1);
        Self {
            metrics,
            live,
            alerts_wake,
        }
    }

    /// Counts the evaluations of one fold and turns its transitions and signals into alerts.
    pub(super) fn folded(
        &self,
        server: Option<&ServerRecord>,
        policy_digest: &str,
        effects: &FoldEffects,
        batch: &mut WriteBatch,
    ) {
        for took in &effects.durations {
            self.metrics.evaluated(policy_digest, *took, None);
        }
        for error in &effects.errors {
            self.metrics
                .policy_errors
                .get_or_create(&crate::metrics::PolicyErrorLabels {
                    digest: policy_digest.to_owned(),
                    kind: error.kind().to_owned(),
                })
                .inc();
        }
        let Some(server) = server else { return };
        if server.admin.is_quiet() {
            // Paused or retired: the operator asked for silence.
            return;
        }
        let at_ms = server
            .snapshot
            .evaluated_at_ms
            .unwrap_or_else(crate::clock::now_ms);
        let alerts = crate::alerts::plan(
            server,
            &effects.transitions,
            &effects.signals,
            at_ms,
            policy_digest,
        );
        for alert in &alerts {
            self.metrics
                .alerts_raised
                .get_or_create(&crate::metrics::KindLabel {
                    kind: alert.kind.clone(),
                })
                .inc();
        }
        batch.alerts.extend(alerts);
    }

    /// The live event of an accepted heartbeat, when anyone listens.
    pub(super) fn heartbeat_event(
        &self,
        server: &ServerRecord,
        body: &str,
        received_at_ms: i64,
    ) -> Option<LiveEvent> {
        if !self.live.has_subscribers() {
            return None;
        }
        let s = &server.snapshot;
        Some(LiveEvent::Heartbeat {
            server_id: server.server_id.clone(),
            cluster_id: server.cluster_id.clone(),
            seq: s.event_seq,
            received_at_ms,
            heartbeat: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
            assessment: AssessmentView {
                status: s.status.clone(),
                confidence: s.confidence.clone(),
                uptime_percent: s.uptime_percent,
                quality_score: s.quality_score,
                badges: s.badges.clone(),
                policy_digest: s
                    .policy
                    .as_ref()
                    .map(|p| p.digest.clone())
                    .unwrap_or_default(),
            },
        })
    }

    /// After a successful commit: metrics, live events (transitions carry their log ids), and
    /// a wake-up for the dispatcher when alerts were written.
    pub(super) fn committed(
        &self,
        batch: &WriteBatch,
        receipt: &CommitReceipt,
        (accepted, duplicates): (u64, u64),
        live: Vec<LiveEvent>,
        before: &HashMap<String, Snapshot>,
        servers: &HashMap<String, Box<ServerRecord>>,
    ) {
        let events = batch.heartbeats.len() + batch.rejections.len();
        if events > 0 {
            self.metrics.batch_size.observe(events as f64);
        }
        self.metrics.heartbeats_accepted.inc_by(accepted);
        self.metrics.heartbeats_duplicate.inc_by(duplicates);
        for rejection in &batch.rejections {
            self.metrics.rejected(&rejection.code);
        }
        // The batch's own result (the writer may already have folded the next batch).
        for row in &batch.snapshots {
            if let Some(old) = before.get(&row.server_id) {
                let now = &row.snapshot;
                self.metrics.server_moved(
                    Some((&old.status, &old.confidence)),
                    (&now.status, &now.confidence),
                );
            }
        }
        for (transition, id) in batch.transitions.iter().zip(&receipt.transition_ids) {
            self.live.publish(LiveEvent::Transition {
                id: *id,
                cluster_id: servers
                    .get(&transition.server_id)
                    .and_then(|s| s.cluster_id.clone()),
                transition: transition.clone(),
            });
        }
        for event in live {
            self.live.publish(event);
        }
        if !batch.alerts.is_empty() {
            // Full means a wake-up is already pending; closed means no dispatcher runs.
            let _ = self.alerts_wake.try_send(());
        }
    }
}
