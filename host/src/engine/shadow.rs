//! Shadow evaluation: a candidate policy folds the same committed events as the active one, on
//! its own snapshots, in its own task; only a report comes out.
//!
//! After each committed batch the writer offers the batch's events and the live snapshots they
//! produced to the shadow with `try_send` (a full queue drops the offer and counts it: the
//! shadow may fall behind, the writer never waits for it). The shadow starts a server by
//! replaying its stored history window (skipping events it has already folded, by sequence
//! number), folds later events with the same fold code as live, catches up its ticks to the
//! live evaluation time, and compares. It never writes anything and never touches live state.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use super::fold::{FoldEffects, catch_up};
use super::replay::{replay, replay_onto};
use crate::policy::LoadedPolicy;
use crate::store::{HistoryEvent, ServerRecord, Snapshot, Store};

/// Offers queued before the shadow drops new ones.
pub(super) const QUEUE: usize = 256;
/// Disagreements kept in the report.
const KEPT: usize = 50;

/// One server's events of a committed batch and its live record after it.
pub(super) struct Offer {
    pub(super) live: ServerRecord,
    pub(super) events: Vec<HistoryEvent>,
}

/// The derived values compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// Status.
    pub status: String,
    /// Confidence.
    pub confidence: String,
    /// Quality.
    pub quality_score: f64,
    /// Uptime.
    pub uptime_percent: f64,
}

impl From<&Snapshot> for Judgement {
    fn from(s: &Snapshot) -> Self {
        Self {
            status: s.status.clone(),
            confidence: s.confidence.clone(),
            quality_score: s.quality_score,
            uptime_percent: s.uptime_percent,
        }
    }
}

/// A comparison where status or confidence differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    /// The server.
    pub server_id: String,
    /// The live evaluation time compared at.
    pub at_ms: i64,
    /// What the active version says.
    pub live: Judgement,
    /// What the candidate says.
    pub shadow: Judgement,
}

/// What the shadow has seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ShadowReport {
    /// `name@version`.
    pub policy: String,
    /// Its digest.
    pub digest: String,
    /// Comparisons made (one per server per committed batch).
    pub comparisons: u64,
    /// Those where status and confidence agreed.
    pub agreements: u64,
    /// `agreements / comparisons` (1 when nothing was compared yet).
    pub agreement_rate: f64,
    /// Largest |quality difference| seen.
    pub max_quality_difference: f64,
    /// Servers the shadow follows.
    pub servers: usize,
    /// Candidate evaluations that failed.
    pub policy_errors: u64,
    /// Offers dropped because the shadow was behind.
    pub dropped: u64,
    /// The most recent disagreements, newest last.
    pub disagreements: VecDeque<Disagreement>,
}

/// A running shadow: its report and the queue the writer offers to.
pub(super) struct Shadow {
    pub(super) report: Arc<Mutex<ShadowReport>>,
    pub(super) tx: mpsc::Sender<Vec<Offer>>,
}

/// Starts a shadow task for `policy`.
pub(super) fn start(store: Store, policy: Arc<LoadedPolicy>) -> Shadow {
    let d = policy.description();
    // A std mutex: updated once per offer by the task, read by `GET /v1/policies/shadow`.
    let report = Arc::new(Mutex::new(ShadowReport {
        policy: format!("{}@{}", d.name, d.version),
        digest: d.digest.clone(),
        agreement_rate: 1.0,
        ..ShadowReport::default()
    }));
    let (tx, mut rx) = mpsc::channel::<Vec<Offer>>(QUEUE);
    let shared = report.clone();
    tokio::spawn(async move {
        let window_ms = i64::try_from(
            policy
                .description()
                .history_window_seconds
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        let mut servers: HashMap<String, ServerRecord> = HashMap::new();
        while let Some(offers) = rx.recv().await {
            for offer in offers {
                let id = offer.live.server_id.clone();
                let mut effects = FoldEffects::default();
                if !servers.contains_key(&id) {
                    let history = store
                        .replay_history(&id, window_ms)
                        .await
                        .unwrap_or_default();
                    match replay(&policy, &offer.live, &history, None) {
                        Ok((record, e)) => {
                            effects.errors.extend(e.errors);
                            servers.insert(id.clone(), record);
                        }
                        Err(e) => {
                            tracing::warn!(server_id = %id, error = %e, "shadow cannot start this server");
                            continue;
                        }
                    }
                }
                let Some(shadow) = servers.get_mut(&id) else {
                    continue;
                };
                shadow.is_verified = offer.live.is_verified;
                shadow.key_version = offer.live.key_version;
                let fresh: Vec<HistoryEvent> = offer
                    .events
                    .into_iter()
                    .filter(|e| e.seq() > shadow.snapshot.event_seq)
                    .collect();
                if let Err(e) = replay_onto(&policy, shadow, &fresh, &mut effects) {
                    tracing::warn!(server_id = %id, error = %e, "shadow cannot fold an event");
                }
                if let Some(at) = offer.live.snapshot.evaluated_at_ms {
                    catch_up(&policy, shadow, at, &mut effects);
                }
                let live = Judgement::from(&offer.live.snapshot);
                let candidate = Judgement::from(&shadow.snapshot);
                let Ok(mut r) = shared.lock() else { continue };
                r.servers = servers.len();
                r.policy_errors += effects.errors.len() as u64;
                r.comparisons += 1;
                r.max_quality_difference = r
                    .max_quality_difference
                    .max((live.quality_score - candidate.quality_score).abs());
                if live.status == candidate.status && live.confidence == candidate.confidence {
                    r.agreements += 1;
                } else {
                    if r.disagreements.len() == KEPT {
                        r.disagreements.pop_front();
                    }
                    r.disagreements.push_back(Disagreement {
                        server_id: id,
                        at_ms: offer.live.snapshot.evaluated_at_ms.unwrap_or_default(),
                        live,
                        shadow: candidate,
                    });
                }
                r.agreement_rate = r.agreements as f64 / r.comparisons as f64;
            }
        }
        tracing::info!("shadow evaluation stopped");
    });
    Shadow { report, tx }
}
