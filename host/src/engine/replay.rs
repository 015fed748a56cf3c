//! Replay: rebuild a server's snapshot from its stored history through a policy.
//!
//! History is truth and the snapshot a cache: folding the same history through the same policy
//! with the same [`super::fold`] functions the live writer uses reproduces the snapshot byte for
//! byte. Replay never writes anything; callers decide what to do with the result.

use serde_json::{Map, Value};

use super::fold::{FoldEffects, catch_up, fold_heartbeat, fold_rejection};
use crate::ingest::decode::decode_object;
use crate::policy::LoadedPolicy;
use crate::store::{HistoryEvent, ServerRecord, Snapshot};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A stored body no longer decodes (it did when it was accepted).
    #[error("stored heartbeat {server_id}#{seq} does not decode: {why}")]
    Undecodable {
        /// The server.
        server_id: String,
        /// The event's sequence number.
        seq: i64,
        /// Why.
        why: String,
    },
}

/// Folds `history` (in sequence order) into a fresh snapshot of `identity`, then folds the ticks
/// due up to `until_ms` (the live snapshot's last evaluation time, so both end at the same
/// instant). Facts (verified flag, key version) are taken as they are now.
pub fn replay(
    policy: &LoadedPolicy,
    identity: &ServerRecord,
    history: &[HistoryEvent],
    until_ms: Option<i64>,
) -> Result<(ServerRecord, FoldEffects), ReplayError> {
    let mut server = ServerRecord {
        snapshot: Snapshot::unseen(),
        ..identity.clone()
    };
    let mut effects = FoldEffects::default();
    replay_onto(policy, &mut server, history, &mut effects)?;
    if let Some(until) = until_ms {
        catch_up(policy, &mut server, until, &mut effects);
    }
    Ok((server, effects))
}

/// Folds `history` (in sequence order) onto `server`'s current snapshot (shadow evaluation
/// continues a snapshot event by event with it).
pub fn replay_onto(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    history: &[HistoryEvent],
    effects: &mut FoldEffects,
) -> Result<(), ReplayError> {
    for event in history {
        match event {
            HistoryEvent::Heartbeat(row) => {
                let undecodable = |why: String| ReplayError::Undecodable {
                    server_id: row.server_id.clone(),
                    seq: row.seq,
                    why,
                };
                let body: Map<String, Value> =
                    serde_json::from_str(&row.body).map_err(|e| undecodable(e.to_string()))?;
                let decoded = decode_object(body).map_err(|e| undecodable(e.detail))?;
                // Sequence numbers are dense per server; a window that starts mid-history
                // resumes the numbering where the window starts.
                server.snapshot.event_seq = row.seq - 1;
                let signed = !row.signature.is_empty();
                fold_heartbeat(
                    policy,
                    server,
                    row.received_at_ms,
                    &decoded,
                    signed,
                    effects,
                );
            }
            HistoryEvent::Rejected {
                seq,
                received_at_ms,
                code,
            } => {
                server.snapshot.event_seq = seq - 1;
                fold_rejection(policy, server, *received_at_ms, code, effects);
            }
        }
    }
    Ok(())
}
