//! Backtest: what a candidate policy would make of the stored history, without touching live
//! state.
//!
//! Every server's history (the candidate's window, or `since`) is replayed through the
//! candidate and through the active version, both up to the same instant, with the same
//! [`super::fold`] code as live evaluation; the difference is reported per server (status,
//! confidence) and as distributions (quality, uptime). By determinism the active version's
//! replay is the current snapshot brought to that instant. Nothing is written.

use serde::Serialize;

use super::replay::replay;
use crate::policy::LoadedPolicy;
use crate::store::{HistoryEvent, Snapshot, Store, StoreError};

/// One server whose status or confidence would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerDiff {
    /// The server.
    pub server_id: String,
    /// Status now → with the candidate.
    pub status: (String, String),
    /// Confidence now → with the candidate.
    pub confidence: (String, String),
    /// Candidate minus current uptime.
    pub uptime_delta: f64,
    /// Candidate minus current quality.
    pub quality_delta: f64,
}

/// Summary of a distribution of deltas.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Distribution {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Distribution {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            min: values[0],
            p50: at(0.5),
            p90: at(0.9),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

/// The whole backtest report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    /// `name@version (digest)` of the active version.
    pub active: String,
    /// `name@version (digest)` of the candidate.
    pub candidate: String,
    /// The instant both were brought to.
    pub at_ms: i64,
    /// Servers replayed.
    pub servers: usize,
    /// Heartbeats and rejections replayed per version.
    pub events: usize,
    /// Servers whose status or confidence would change, by id.
    pub changed: Vec<ServerDiff>,
    /// Quality deltas over every server.
    pub quality_delta: Distribution,
    /// Uptime deltas over every server.
    pub uptime_delta: Distribution,
    /// Servers whose history failed to replay (by id, with why).
    pub failures: Vec<(String, String)>,
}

fn label(p: &LoadedPolicy) -> String {
    let d = p.description();
    format!("{}@{} ({})", d.name, d.version, d.digest)
}

/// Replays every stored server through `active` and `candidate` up to `at_ms`. `since_ms`
/// bounds the history (default: each version's own declared window).
pub async fn backtest(
    store: &Store,
    active: &LoadedPolicy,
    candidate: &LoadedPolicy,
    since_ms: Option<i64>,
    at_ms: i64,
    mut progress: impl FnMut(usize, usize),
) -> Result<Backtest, StoreError> {
    let mut servers = store.load_servers().await?;
    servers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    let window = |p: &LoadedPolicy| {
        i64::try_from(p.description().history_window_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX)
    };
    let mut report = Backtest {
        active: label(active),
        candidate: label(candidate),
        at_ms,
        servers: servers.len(),
        events: 0,
        changed: Vec::new(),
        quality_delta: Distribution::default(),
        uptime_delta: Distribution::default(),
        failures: Vec::new(),
    };
    let (mut quality, mut uptime) = (Vec::new(), Vec::new());
    for (done, server) in servers.iter().enumerate() {
        progress(done, servers.len());
        let history = |p: &LoadedPolicy| {
            let id = server.server_id.clone();
            let w = window(p);
            async move {
                match since_ms {
                    Some(since) => store.history(&id, since).await,
                    None => store.replay_history(&id, w).await,
                }
            }
        };
        let now_history: Vec<HistoryEvent> = history(active).await?;
        let new_history: Vec<HistoryEvent> = history(candidate).await?;
        report.events += new_history.len();
        let now = replay(active, server, &now_history, Some(at_ms));
        let new = replay(candidate, server, &new_history, Some(at_ms));
        let (now, new): (Snapshot, Snapshot) = match (now, new) {
            (Ok((a, _)), Ok((b, _))) => (a.snapshot, b.snapshot),
            (Err(e), _) | (_, Err(e)) => {
                report
                    .failures
                    .push((server.server_id.clone(), e.to_string()));
                continue;
            }
        };
        quality.push(new.quality_score - now.quality_score);
        uptime.push(new.uptime_percent - now.uptime_percent);
        if now.status != new.status || now.confidence != new.confidence {
            report.changed.push(ServerDiff {
                server_id: server.server_id.clone(),
                status: (now.status, new.status),
                confidence: (now.confidence, new.confidence),
                uptime_delta: new.uptime_percent - now.uptime_percent,
                quality_delta: new.quality_score - now.quality_score,
            });
        }
    }
    report.quality_delta = Distribution::of(quality);
    report.uptime_delta = Distribution::of(uptime);
    Ok(report)
}
