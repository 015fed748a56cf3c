//! Replay: rebuild a server's snapshot from its stored history through a policy.
//!
//! History is truth and the snapshot a cache: folding the same history through the same policy
//! with the same [`super::fold`] functions the live writer uses reproduces the snapshot byte for
//! byte. Replay never writes anything; callers decide what to do with the result.

use super::fold::{
    FoldEffects, apply_verdict, catch_up, facts_of, fold_heartbeat, fold_host_resumed,
    fold_rejection, note_heartbeat, policy_auth, set_state, state_for,
};
use crate::ingest::decode::{DecodedHeartbeat, decode_stored};
use crate::policy::{LoadedPolicy, PolicyEvent, TimedEvent};
use crate::store::{AuthKind, HistoryEvent, ServerRecord, Snapshot};

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

/// Events handed to the policy per `evaluate-run` call. Bounds what one call copies into the
/// guest (and its fuel: a run gets the fuel of one evaluation).
pub const RUN_EVENTS: usize = 256;

/// Folds `history` (in sequence order) onto `server`'s current snapshot (shadow evaluation
/// continues a snapshot event by event with it).
///
/// A policy built against `vigil:policy@1.2` folds runs of events in one call each
/// (`evaluate-run`); the result is the same as folding them one by one, which is what happens
/// for older policies, around due ticks and failing events, and whenever a run fails.
pub fn replay_onto(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    history: &[HistoryEvent],
    effects: &mut FoldEffects,
) -> Result<(), ReplayError> {
    replay_onto_in_runs(policy, server, history, effects, RUN_EVENTS)
}

/// [`replay_onto`] with at most `max_run` events per `evaluate-run` call; 1 folds every event
/// with a call of its own, as for a policy older than `vigil:policy@1.2`. Every `max_run`
/// gives the same result (the tests compare them).
pub fn replay_onto_in_runs(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    history: &[HistoryEvent],
    effects: &mut FoldEffects,
    max_run: usize,
) -> Result<(), ReplayError> {
    let runs = policy.abi().folds_runs() && max_run > 1;
    for chunk in history.chunks(if runs { max_run } else { 1 }) {
        // Decode up to the first undecodable event; fold what decoded, then report it.
        let mut steps = Vec::with_capacity(chunk.len());
        let mut undecodable = None;
        for event in chunk {
            match Step::decode(event) {
                Ok(step) => steps.push(step),
                Err(e) => {
                    undecodable = Some(e);
                    break;
                }
            }
        }
        let mut at = 0;
        while at < steps.len() {
            // A host gap is folded alone (`resume`): runs end before it.
            let run_len = steps[at..]
                .iter()
                .position(Step::is_host_gap)
                .unwrap_or(steps.len() - at);
            at += if runs && run_len > 1 {
                fold_run(policy, server, &steps[at..at + run_len], effects)
            } else {
                steps[at].fold(policy, server, effects);
                1
            };
        }
        if let Some(e) = undecodable {
            return Err(e);
        }
    }
    Ok(())
}

/// One stored event, decoded.
// Nearly every step is a heartbeat: boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Step<'h> {
    Heartbeat {
        seq: i64,
        received_at_ms: i64,
        auth: AuthKind,
        heartbeat: DecodedHeartbeat,
    },
    Rejected {
        seq: i64,
        received_at_ms: i64,
        code: &'h str,
    },
    HostResumed {
        down_at_ms: i64,
        up_at_ms: i64,
    },
}

impl<'h> Step<'h> {
    fn is_host_gap(&self) -> bool {
        matches!(self, Step::HostResumed { .. })
    }

    fn decode(event: &'h HistoryEvent) -> Result<Self, ReplayError> {
        Ok(match event {
            HistoryEvent::Heartbeat(row) => {
                let undecodable = |why: String| ReplayError::Undecodable {
                    server_id: row.server_id.clone(),
                    seq: row.seq,
                    why,
                };
                Step::Heartbeat {
                    seq: row.seq,
                    received_at_ms: row.received_at_ms,
                    auth: row.auth,
                    heartbeat: decode_stored(&row.body).map_err(|e| undecodable(e.detail))?,
                }
            }
            HistoryEvent::Rejected {
                seq,
                received_at_ms,
                code,
            } => Step::Rejected {
                seq: *seq,
                received_at_ms: *received_at_ms,
                code,
            },
            HistoryEvent::HostResumed {
                down_at_ms,
                up_at_ms,
                ..
            } => Step::HostResumed {
                down_at_ms: *down_at_ms,
                up_at_ms: *up_at_ms,
            },
        })
    }

    fn at_ms(&self) -> i64 {
        match self {
            Step::Heartbeat { received_at_ms, .. } | Step::Rejected { received_at_ms, .. } => {
                *received_at_ms
            }
            Step::HostResumed { up_at_ms, .. } => *up_at_ms,
        }
    }

    fn event(&self) -> PolicyEvent<'_> {
        match self {
            Step::Heartbeat {
                received_at_ms,
                auth,
                heartbeat,
                ..
            } => PolicyEvent::Heartbeat {
                received_at_ms: *received_at_ms,
                auth: policy_auth(*auth),
                heartbeat,
            },
            Step::Rejected {
                received_at_ms,
                code,
                ..
            } => PolicyEvent::Rejected {
                received_at_ms: *received_at_ms,
                code,
            },
            Step::HostResumed {
                down_at_ms,
                up_at_ms,
            } => PolicyEvent::HostResumed {
                down_at_ms: *down_at_ms,
                up_at_ms: *up_at_ms,
            },
        }
    }

    /// Folds this event alone, as the live writer does: due ticks first, then the event.
    fn fold(&self, policy: &LoadedPolicy, server: &mut ServerRecord, effects: &mut FoldEffects) {
        match self {
            Step::Heartbeat {
                seq,
                received_at_ms,
                auth,
                heartbeat,
            } => {
                // Sequence numbers are dense per server; a window that starts mid-history
                // resumes the numbering where the window starts.
                server.snapshot.event_seq = seq - 1;
                fold_heartbeat(policy, server, *received_at_ms, heartbeat, *auth, effects);
            }
            Step::Rejected {
                seq,
                received_at_ms,
                code,
            } => {
                server.snapshot.event_seq = seq - 1;
                fold_rejection(policy, server, *received_at_ms, code, effects);
            }
            Step::HostResumed {
                down_at_ms,
                up_at_ms,
            } => fold_host_resumed(policy, server, *down_at_ms, *up_at_ms, effects),
        }
    }

    /// What the host records of this event besides the policy's verdict (as the single fold
    /// does before evaluating).
    fn note(&self, server: &mut ServerRecord) {
        match self {
            Step::Heartbeat {
                seq,
                received_at_ms,
                auth,
                heartbeat,
            } => {
                server.snapshot.event_seq = seq - 1;
                let signed = *auth == AuthKind::Signature;
                note_heartbeat(&mut server.snapshot, *received_at_ms, heartbeat, signed);
            }
            Step::Rejected { seq, .. } => server.snapshot.event_seq = *seq,
            Step::HostResumed { .. } => {}
        }
    }
}

/// Folds a prefix of `steps` (at least one event) with one `evaluate-run` call, and returns how
/// many it folded. Ticks due before the first event are folded first, one by one; the policy
/// stops at the next due tick or failing event, and the caller continues from there. A failed
/// run (trap, fuel, invalid output) changes nothing and its events are folded one by one.
fn fold_run(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    steps: &[Step<'_>],
    effects: &mut FoldEffects,
) -> usize {
    catch_up(policy, server, steps[0].at_ms(), effects);
    let events: Vec<TimedEvent<'_>> = steps
        .iter()
        .map(|step| TimedEvent {
            now_ms: step.at_ms(),
            event: step.event(),
        })
        .collect();
    let started = std::time::Instant::now();
    let run = policy.evaluate_run(
        &facts_of(server),
        state_for(policy, &server.snapshot),
        &events,
    );
    let took = started.elapsed();
    match run {
        Ok(run) if !run.verdicts.is_empty() => {
            let folded = run.verdicts.len();
            let each = took / u32::try_from(folded).unwrap_or(u32::MAX);
            for ((step, event), verdict) in steps.iter().zip(&events).zip(run.verdicts) {
                effects.evaluations += 1;
                effects.durations.push(each);
                step.note(server);
                apply_verdict(
                    policy,
                    &mut server.snapshot,
                    &server.server_id,
                    event.now_ms,
                    event.event,
                    verdict,
                    effects,
                );
            }
            if let Some(state) = run.state {
                set_state(policy, &mut server.snapshot, state);
            }
            folded
        }
        // The policy stopped before the first event (it fails): fold it alone, which reports
        // the failure as any single evaluation does.
        Ok(_) => {
            steps[0].fold(policy, server, effects);
            1
        }
        Err(error) => {
            tracing::debug!(
                server_id = %server.server_id, policy = %policy.digest(), %error,
                "evaluate-run failed; folding these events one by one"
            );
            for step in steps {
                step.fold(policy, server, effects);
            }
            steps.len()
        }
    }
}
