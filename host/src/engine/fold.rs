//! The fold: one event through the active policy into one server's snapshot.
//!
//! Shared by the live writer and by replay, so both compute byte-for-byte the same snapshot from
//! the same history. Ticks are derived, not stored: before any event at `now`, every deadline the
//! policy asked for that is `<= now` is folded first as a tick at exactly that deadline — except
//! before the host's own restart ([`fold_host_resumed`]), where the deadlines that fell while
//! no host ran are not ticked.

use std::sync::Arc;

use super::rollup::{self, Counted};
use crate::ingest::decode::DecodedHeartbeat;
use crate::policy::{LoadedPolicy, Outcome, PolicyError, PolicyEvent, ServerFacts, Verdict};
use crate::store::{AuthKind, PolicyRef, RollupRow, ServerRecord, Snapshot, TransitionRow};

/// After a failed tick the host retries this much later (a failed tick must not stall the
/// deadline queue, and the policy's last good deadline already passed).
pub const TICK_RETRY_MS: i64 = 60_000;

/// Upper bound of ticks folded in one catch-up (a policy asking for a deadline every
/// millisecond must not stall the writer).
const MAX_CATCH_UP_TICKS: usize = 10_000;

/// What one fold produced besides the updated snapshot.
#[derive(Debug, Default)]
pub struct FoldEffects {
    /// Status/confidence changes, in order.
    pub transitions: Vec<TransitionRow>,
    /// Signals raised (for alerts).
    pub signals: Vec<String>,
    /// Evaluations that failed.
    pub errors: Vec<PolicyError>,
    /// Evaluations run.
    pub evaluations: u64,
    /// How long each evaluation took (for metrics).
    pub durations: Vec<std::time::Duration>,
    /// Rollup buckets the evaluations closed (see [`super::rollup`]).
    pub rollups: Vec<RollupRow>,
}

/// How a stored heartbeat was authenticated, in the policy's words.
pub(super) fn policy_auth(auth: AuthKind) -> crate::policy::AuthKind {
    match auth {
        AuthKind::Signature => crate::policy::AuthKind::Signature,
        AuthKind::Token => crate::policy::AuthKind::Token,
        AuthKind::ApiKey => crate::policy::AuthKind::ApiKey,
        AuthKind::Network => crate::policy::AuthKind::Network,
    }
}

/// The facts a policy sees about a server record.
pub fn facts_of(server: &ServerRecord) -> ServerFacts {
    ServerFacts {
        server_id: server.server_id.clone(),
        is_verified: server.is_verified,
        key_version: server.key_version,
        registered_at_ms: server.registered_at_ms,
        schedule: server.admin.schedule.as_ref().and_then(schedule_of),
    }
}

/// A stored schedule as the policy sees it (`None` for a row that names neither a period nor
/// a cron expression, which the admin API never writes).
fn schedule_of(s: &crate::store::StoredSchedule) -> Option<crate::policy::Schedule> {
    use crate::policy::Cadence;
    let cadence = match (&s.period_seconds, &s.cron) {
        (Some(seconds), None) => Cadence::Period(*seconds),
        (None, Some(expression)) => Cadence::Cron {
            expression: expression.clone(),
            time_zone: s.tz.clone().unwrap_or_else(|| "UTC".to_owned()),
        },
        _ => return None,
    };
    Some(crate::policy::Schedule {
        cadence,
        grace_seconds: s.grace_seconds,
        max_run_seconds: s.max_run_seconds,
    })
}

/// The policy reference recorded in snapshots.
pub fn policy_ref(policy: &LoadedPolicy) -> Arc<PolicyRef> {
    policy.reference()
}

/// Folds every tick due at or before `now_ms`.
pub fn catch_up(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    now_ms: i64,
    effects: &mut FoldEffects,
) {
    for _ in 0..MAX_CATCH_UP_TICKS {
        match server.snapshot.next_check_at_ms {
            Some(at) if at <= now_ms => fold(policy, server, at, PolicyEvent::Tick, effects),
            _ => return,
        }
    }
    tracing::warn!(server_id = %server.server_id, "too many ticks due at once; deferring the rest");
}

/// Folds one event at `now_ms` (the caller ensures `now_ms >= evaluated_at_ms`). On failure the
/// snapshot keeps its last good assessment and state; the failure is recorded in `effects` and
/// counted in `policy_errors`.
pub fn fold(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    now_ms: i64,
    event: PolicyEvent<'_>,
    effects: &mut FoldEffects,
) {
    effects.evaluations += 1;
    let facts = facts_of(server);
    let snapshot = &mut server.snapshot;
    snapshot.evaluated_at_ms = Some(now_ms);
    let state = state_for(policy, snapshot);
    let started = std::time::Instant::now();
    let result = policy.evaluate(&facts, state, now_ms, event);
    effects.durations.push(started.elapsed());
    match result {
        Ok(outcome) => apply(
            policy,
            snapshot,
            &server.server_id,
            now_ms,
            event,
            outcome,
            effects,
        ),
        Err(error) => {
            // The last good assessment stands: the time until now counts at it.
            count(policy, snapshot, &server.server_id, now_ms, event, effects);
            snapshot.policy_errors += 1;
            if matches!(event, PolicyEvent::Tick | PolicyEvent::HostResumed { .. }) {
                snapshot.next_check_at_ms = Some(now_ms + TICK_RETRY_MS);
            }
            tracing::warn!(
                server_id = %server.server_id,
                policy = %policy.digest(),
                event = event.cause(),
                kind = error.kind(),
                %error,
                "policy evaluation failed; keeping the last good snapshot"
            );
            effects.errors.push(error);
        }
    }
}

fn apply(
    policy: &LoadedPolicy,
    snapshot: &mut Snapshot,
    server_id: &str,
    now_ms: i64,
    event: PolicyEvent<'_>,
    outcome: Outcome,
    effects: &mut FoldEffects,
) {
    apply_verdict(
        policy,
        snapshot,
        server_id,
        now_ms,
        event,
        outcome.verdict,
        effects,
    );
    set_state(policy, snapshot, outcome.state);
}

/// Records what one successful evaluation at `now_ms` assessed: the transition (if the status
/// or confidence changed), the assessment itself and the signals. The state is set apart
/// ([`set_state`]), so a run of evaluations sets it once.
pub(super) fn apply_verdict(
    policy: &LoadedPolicy,
    snapshot: &mut Snapshot,
    server_id: &str,
    now_ms: i64,
    event: PolicyEvent<'_>,
    v: Verdict,
    effects: &mut FoldEffects,
) {
    count(policy, snapshot, server_id, now_ms, event, effects);
    snapshot.evaluated_at_ms = Some(now_ms);
    if snapshot.status != v.status || snapshot.confidence != v.confidence {
        effects.transitions.push(TransitionRow {
            server_id: server_id.to_owned(),
            at_ms: now_ms,
            cause: event.cause().to_owned(),
            from_status: snapshot.status.clone(),
            to_status: v.status.to_owned(),
            from_confidence: snapshot.confidence.clone(),
            to_confidence: v.confidence.to_owned(),
            policy_digest: policy.digest().to_owned(),
        });
    }
    // Most evaluations keep both: no new strings then.
    if snapshot.status != v.status {
        snapshot.status = v.status.to_owned();
    }
    if snapshot.confidence != v.confidence {
        snapshot.confidence = v.confidence.to_owned();
    }
    snapshot.uptime_percent = v.uptime_percent;
    snapshot.quality_score = v.quality_score;
    snapshot.scores = v.scores.into();
    snapshot.badges = v.badges;
    snapshot.next_check_at_ms = v.next_check_at_ms;
    effects.signals.extend(v.signals);
}

/// Counts the time since the last evaluation (at the assessment still in `snapshot`) and the
/// event into the rollup, before the snapshot takes the new assessment.
fn count(
    policy: &LoadedPolicy,
    snapshot: &mut Snapshot,
    server_id: &str,
    now_ms: i64,
    event: PolicyEvent<'_>,
    effects: &mut FoldEffects,
) {
    let counted = match event {
        PolicyEvent::Heartbeat { .. } => Counted::Beat,
        PolicyEvent::Rejected { .. } => Counted::Rejection,
        PolicyEvent::Tick => Counted::Tick,
        PolicyEvent::HostResumed { down_at_ms, .. } => {
            // Up to the host's last sign of life at the standing assessment; the gap itself
            // is counted as nobody's time.
            rollup::advance(
                snapshot,
                server_id,
                policy.digest(),
                down_at_ms.min(now_ms),
                Counted::Tick,
                &mut effects.rollups,
            );
            rollup::unobserved(
                snapshot,
                server_id,
                policy.digest(),
                now_ms,
                &mut effects.rollups,
            );
            return;
        }
    };
    rollup::advance(
        snapshot,
        server_id,
        policy.digest(),
        now_ms,
        counted,
        &mut effects.rollups,
    );
}

/// Records the policy's state after its last successful evaluation, and which version wrote it.
pub(super) fn set_state(policy: &LoadedPolicy, snapshot: &mut Snapshot, state: Vec<u8>) {
    snapshot.policy_state = Some(state);
    snapshot.policy = Some(policy_ref(policy));
}

/// The state `policy` continues from: the snapshot's, when this version wrote it. State is
/// opaque to the version that wrote it: another version starts from none (a swap rebuilds
/// snapshots by replay, so this only happens when that rebuild failed).
pub(super) fn state_for<'s>(policy: &LoadedPolicy, snapshot: &'s Snapshot) -> Option<&'s [u8]> {
    match &snapshot.policy {
        Some(by) if by.digest == policy.digest() => snapshot.policy_state.as_deref(),
        _ => None,
    }
}

/// Folds an accepted heartbeat: due ticks first, then the heartbeat as the next event.
pub fn fold_heartbeat(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    now_ms: i64,
    heartbeat: &DecodedHeartbeat,
    auth: AuthKind,
    effects: &mut FoldEffects,
) {
    catch_up(policy, server, now_ms, effects);
    note_heartbeat(
        &mut server.snapshot,
        now_ms,
        heartbeat,
        auth == AuthKind::Signature,
    );
    let event = PolicyEvent::Heartbeat {
        received_at_ms: now_ms,
        auth: policy_auth(auth),
        heartbeat,
    };
    fold(policy, server, now_ms, event, effects);
}

/// What the host itself records of an accepted heartbeat, whatever the policy says.
pub(super) fn note_heartbeat(
    s: &mut Snapshot,
    now_ms: i64,
    heartbeat: &DecodedHeartbeat,
    signed: bool,
) {
    s.event_seq += 1;
    s.last_seen_at_ms = Some(now_ms);
    // Only a signed heartbeat moves the replay clock: with `require_signature = false` anyone
    // may post an unsigned one, and a future-dated one must not lock the real agent out.
    if signed {
        s.last_sent_at_ms = Some(heartbeat.sent_at_ms);
    }
    s.last_signature = heartbeat.signature.clone().filter(|_| signed);
    s.players_current = heartbeat.players_current;
    s.players_capacity = heartbeat.players_capacity;
    s.map_name.clone_from(&heartbeat.map_name);
    s.agent_version.clone_from(&heartbeat.agent_version);
}

/// Folds the host's own downtime `[down_at_ms, up_at_ms)` into a server that had an event
/// before it: the ticks due up to `down_at_ms` first (they were due while the host ran), none
/// of those inside the gap, then [`PolicyEvent::HostResumed`] at `up_at_ms`. Live at start-up
/// and in replay alike.
pub fn fold_host_resumed(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    down_at_ms: i64,
    up_at_ms: i64,
    effects: &mut FoldEffects,
) {
    catch_up(policy, server, down_at_ms, effects);
    let now_ms = up_at_ms.max(server.snapshot.evaluated_at_ms.unwrap_or(i64::MIN));
    fold(
        policy,
        server,
        now_ms,
        PolicyEvent::HostResumed {
            down_at_ms,
            up_at_ms: now_ms,
        },
        effects,
    );
}

/// Folds a refused request that named this server: due ticks first, then the rejection.
pub fn fold_rejection(
    policy: &LoadedPolicy,
    server: &mut ServerRecord,
    now_ms: i64,
    code: &str,
    effects: &mut FoldEffects,
) {
    catch_up(policy, server, now_ms, effects);
    server.snapshot.event_seq += 1;
    fold(
        policy,
        server,
        now_ms,
        PolicyEvent::Rejected {
            received_at_ms: now_ms,
            code,
        },
        effects,
    );
}
