//! Loaded policy versions: one compiled component ([`LoadedPolicy`], an `InstancePre` in one of
//! the four ABI shapes) and the instances it evaluates on.
//!
//! Evaluations run on an instance kept warm for up to `[policy] reuse_instance_calls`
//! evaluations (a fresh `Store` and instance costs ≈ 30 µs with the pooling allocator:
//! instantiation, `configure`, and the page faults of the guest memory it touches again), each
//! call with a fuel budget, a memory cap and output checks; a trap, exhausted fuel or invalid
//! output fails that evaluation only, and the instance is dropped. A 1.0 guest gets the
//! parameters with every `evaluate` call; a 1.1 guest once per instance (`configure`) and is then
//! called with `evaluate-configured`; a 1.2 guest can also fold a run of events about one server
//! in one call ([`LoadedPolicy::evaluate_run`]); a 1.3 guest is called with `evaluate-ext` and
//! `evaluate-run-ext`, which add the schedule, the kind of authentication and the job run; a
//! 1.4 guest is told about the host's own downtime with `resume` (an older one gets a `tick`
//! at the restart instead: [`PolicyEvent::HostResumed`]).
//!
//! This module never builds the wasmtime engine or compiles bytes (`runtime.rs`), and never
//! touches storage or HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

use super::bindings::base::BasePolicyPre;
use super::bindings::configured::ConfiguredPolicyPre;
use super::bindings::ext::ExtPolicyPre;
use super::bindings::runs::RunsPolicyPre;
use super::bindings::{self, PolicyPre, vigil::policy::types as wit};
use super::convert::{
    describe_param, resolve_params, wit_event, wit_event_ext, wit_facts, wit_facts_ext,
};
use super::validate;
use super::{
    Outcome, PolicyAbi, PolicyDescription, PolicyError, PolicyEvent, PolicyLimits, RunOutcome,
    ServerFacts, TimedEvent,
};

/// Per-store data: only the resource limiter.
pub(super) struct GuestCtx {
    limits: StoreLimits,
}

/// A compiled component with its exports looked up, in one of the four shapes.
pub(super) enum Pre {
    ParamsPerCall(BasePolicyPre<GuestCtx>),
    Configured(ConfiguredPolicyPre<GuestCtx>),
    Runs(RunsPolicyPre<GuestCtx>),
    Extended(ExtPolicyPre<GuestCtx>),
    Resuming(PolicyPre<GuestCtx>),
}

impl Pre {
    /// Looks the exports up: a component that exports `resume` is a 1.4 guest and must have
    /// all of the 1.4 world; one that exports `evaluate-ext` is a 1.3 guest and must
    /// have all of the 1.3 world; one that exports `evaluate-run` is held to the 1.2 world; one that exports `evaluate-configured` is held to the 1.1
    /// world, anything else to the 1.0 exports.
    pub(super) fn of(
        component: &Component,
        instance_pre: InstancePre<GuestCtx>,
    ) -> Result<Self, PolicyError> {
        let exports = |name: &str| component.get_export_index(None, name).is_some();
        Ok(if exports("resume") {
            Pre::Resuming(PolicyPre::new(instance_pre).map_err(|e| {
                PolicyError::Load(format!(
                    "component exports resume but does not implement vigil:policy@1.4: {e:#}"
                ))
            })?)
        } else if exports("evaluate-ext") {
            Pre::Extended(ExtPolicyPre::new(instance_pre).map_err(|e| {
                PolicyError::Load(format!(
                    "component exports evaluate-ext but does not implement \
                     vigil:policy@1.3: {e:#}"
                ))
            })?)
        } else if exports("evaluate-run") {
            Pre::Runs(RunsPolicyPre::new(instance_pre).map_err(|e| {
                PolicyError::Load(format!(
                    "component exports evaluate-run but does not implement \
                     vigil:policy@1.2: {e:#}"
                ))
            })?)
        } else if exports("evaluate-configured") {
            Pre::Configured(ConfiguredPolicyPre::new(instance_pre).map_err(|e| {
                PolicyError::Load(format!(
                    "component exports evaluate-configured but does not implement \
                     vigil:policy@1.1: {e:#}"
                ))
            })?)
        } else {
            Pre::ParamsPerCall(BasePolicyPre::new(instance_pre).map_err(|e| {
                PolicyError::Load(format!(
                    "component does not implement vigil:policy@1: {e:#}"
                ))
            })?)
        })
    }

    fn engine(&self) -> &Engine {
        match self {
            Pre::ParamsPerCall(pre) => pre.engine(),
            Pre::Configured(pre) => pre.engine(),
            Pre::Runs(pre) => pre.engine(),
            Pre::Extended(pre) => pre.engine(),
            Pre::Resuming(pre) => pre.engine(),
        }
    }
}

/// An instance of one of the shapes; the configured ones are already configured with
/// [`LoadedPolicy::params`].
enum Instance {
    ParamsPerCall(bindings::base::BasePolicy),
    Configured(bindings::configured::ConfiguredPolicy),
    Runs(bindings::runs::RunsPolicy),
    Extended(bindings::ext::ExtPolicy),
    Resuming(bindings::Policy),
}

/// An instance kept between calls, with its store.
struct WarmInstance {
    store: Store<GuestCtx>,
    instance: Instance,
    calls: u32,
}

/// One compiled policy version, ready to instantiate.
pub struct LoadedPolicy {
    description: PolicyDescription,
    pre: Pre,
    params: Vec<wit::Param>,
    limits: PolicyLimits,
    /// A Mutex, taken with `try_lock` only: the writer is the one hot caller; a concurrent
    /// caller (replay, backtest) never waits, it instantiates its own.
    warm: std::sync::Mutex<Option<WarmInstance>>,
    /// What every snapshot this version computes points at: one allocation shared by all of
    /// them, rather than three strings per server.
    reference: Arc<crate::store::PolicyRef>,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("description", &self.description)
            .finish()
    }
}

fn classify(e: wasmtime::Error) -> PolicyError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => PolicyError::OutOfFuel,
        Some(trap) => PolicyError::Trap(trap.to_string()),
        None => PolicyError::Trap(format!("{e:#}")),
    }
}

impl LoadedPolicy {
    /// Runs `describe()` on `pre`, checks what it says, and resolves `params` against the
    /// declared parameters (defaults filled in, unknown names refused).
    pub(super) fn new(
        pre: Pre,
        digest: String,
        params: &BTreeMap<String, toml::Value>,
        limits: PolicyLimits,
    ) -> Result<Self, PolicyError> {
        let mut policy = LoadedPolicy {
            description: PolicyDescription {
                name: String::new(),
                version: String::new(),
                digest,
                history_window_seconds: 0,
                params: Vec::new(),
            },
            pre,
            params: Vec::new(),
            limits,
            warm: std::sync::Mutex::new(None),
            reference: Arc::default(),
        };
        let info = policy.describe()?;
        policy.params = resolve_params(&info.params, params)?;
        policy.description.name = info.name;
        policy.description.version = info.version;
        policy.description.history_window_seconds = info.history_window_seconds;
        policy.description.params = info.params.iter().map(describe_param).collect();
        policy.reference = Arc::new(crate::store::PolicyRef {
            name: policy.description.name.clone(),
            version: policy.description.version.clone(),
            digest: policy.description.digest.clone(),
        });
        Ok(policy)
    }

    /// Name, version, digest, window and parameters.
    pub fn description(&self) -> &PolicyDescription {
        &self.description
    }

    /// Name, version and digest, as snapshots record them (shared, cheap to clone).
    pub fn reference(&self) -> Arc<crate::store::PolicyRef> {
        Arc::clone(&self.reference)
    }

    /// `sha256:<hex>` of the component.
    pub fn digest(&self) -> &str {
        &self.description.digest
    }

    /// Whether the component takes its parameters per call (1.0) or once per instance (1.1),
    /// whether it folds runs (1.2), and whether it sees the 1.3 facts and events.
    pub fn abi(&self) -> PolicyAbi {
        match self.pre {
            Pre::ParamsPerCall(_) => PolicyAbi::ParamsPerCall,
            Pre::Configured(_) => PolicyAbi::Configured,
            Pre::Runs(_) => PolicyAbi::Runs,
            Pre::Extended(_) => PolicyAbi::Extended,
            Pre::Resuming(_) => PolicyAbi::Resuming,
        }
    }

    fn store(&self) -> Result<Store<GuestCtx>, PolicyError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .tables(16)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(self.pre.engine(), GuestCtx { limits });
        store.limiter(|ctx| &mut ctx.limits);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| PolicyError::Trap(format!("{e:#}")))?;
        Ok(store)
    }

    fn describe(&self) -> Result<wit::PolicyInfo, PolicyError> {
        let mut store = self.store()?;
        let info = match &self.pre {
            Pre::ParamsPerCall(pre) => pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_describe(&mut store)),
            Pre::Configured(pre) => pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_describe(&mut store)),
            Pre::Runs(pre) => pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_describe(&mut store)),
            Pre::Extended(pre) => pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_describe(&mut store)),
            Pre::Resuming(pre) => pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_describe(&mut store)),
        }
        .map_err(classify)?;
        validate::description(info)
    }

    /// A new instance in a new store, ready to evaluate: a 1.1 instance is configured with the
    /// policy's parameters first (under the same fuel and memory limits as any call).
    fn fresh_instance(&self) -> Result<WarmInstance, PolicyError> {
        let mut store = self.store()?;
        let instance = match &self.pre {
            Pre::ParamsPerCall(pre) => {
                Instance::ParamsPerCall(pre.instantiate(&mut store).map_err(classify)?)
            }
            Pre::Configured(pre) => {
                let instance = pre.instantiate(&mut store).map_err(classify)?;
                instance
                    .call_configure(&mut store, &self.params)
                    .map_err(classify)?
                    .map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
                Instance::Configured(instance)
            }
            Pre::Runs(pre) => {
                let instance = pre.instantiate(&mut store).map_err(classify)?;
                instance
                    .call_configure(&mut store, &self.params)
                    .map_err(classify)?
                    .map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
                Instance::Runs(instance)
            }
            Pre::Extended(pre) => {
                let instance = pre.instantiate(&mut store).map_err(classify)?;
                instance
                    .call_configure(&mut store, &self.params)
                    .map_err(classify)?
                    .map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
                Instance::Extended(instance)
            }
            Pre::Resuming(pre) => {
                let instance = pre.instantiate(&mut store).map_err(classify)?;
                instance
                    .call_configure(&mut store, &self.params)
                    .map_err(classify)?
                    .map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
                Instance::Resuming(instance)
            }
        };
        Ok(WarmInstance {
            store,
            instance,
            calls: 0,
        })
    }

    /// Runs `call` on a warm instance when one is free (the writer's common case), otherwise
    /// (or after `reuse_instance_calls` evaluations) on a fresh, configured one, with the whole
    /// fuel budget. `call` answers its value and how many evaluations it did. Any failure drops
    /// the instance: a trapped instance is dead, and a misbehaving one is not worth keeping.
    /// Returns the value and the fuel used.
    fn with_instance<T>(
        &self,
        call: impl FnOnce(&mut WarmInstance) -> Result<(T, u32), PolicyError>,
    ) -> Result<(T, u64), PolicyError> {
        let mut slot = self.warm.try_lock().ok();
        let warm = slot.as_mut().and_then(|s| s.take());
        let mut warm = match warm {
            Some(w) if w.calls < self.limits.reuse_instance_calls => w,
            _ => self.fresh_instance()?,
        };
        // The call gets the whole budget, whatever `configure` used.
        warm.store
            .set_fuel(self.limits.fuel)
            .map_err(|e| PolicyError::Trap(format!("{e:#}")))?;
        let (value, calls) = call(&mut warm)?;
        let fuel_used = self
            .limits
            .fuel
            .saturating_sub(warm.store.get_fuel().unwrap_or(0));
        warm.calls = warm.calls.saturating_add(calls);
        if let Some(slot) = slot.as_mut() {
            **slot = Some(warm);
        }
        Ok((value, fuel_used))
    }

    /// Folds one event. Never panics; every guest failure is a [`PolicyError`].
    pub fn evaluate(
        &self,
        facts: &ServerFacts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: PolicyEvent<'_>,
    ) -> Result<Outcome, PolicyError> {
        let (mut outcome, fuel_used) = self.with_instance(|warm| {
            let result = match &warm.instance {
                Instance::Resuming(instance) => match event {
                    PolicyEvent::HostResumed {
                        down_at_ms,
                        up_at_ms,
                    } => instance.call_resume(
                        &mut warm.store,
                        &wit_facts_ext(facts),
                        state,
                        wit::HostGap {
                            down_at_ms,
                            up_at_ms,
                        },
                    ),
                    event => instance.call_evaluate_ext(
                        &mut warm.store,
                        &wit_facts_ext(facts),
                        state,
                        now_ms,
                        &wit_event_ext(event),
                    ),
                },
                Instance::Extended(instance) => instance.call_evaluate_ext(
                    &mut warm.store,
                    &wit_facts_ext(facts),
                    state,
                    now_ms,
                    &wit_event_ext(event),
                ),
                Instance::ParamsPerCall(instance) => instance.call_evaluate(
                    &mut warm.store,
                    &self.params,
                    &wit_facts(facts),
                    state,
                    now_ms,
                    &wit_event(event),
                ),
                Instance::Configured(instance) => instance.call_evaluate_configured(
                    &mut warm.store,
                    &wit_facts(facts),
                    state,
                    now_ms,
                    &wit_event(event),
                ),
                Instance::Runs(instance) => instance.call_evaluate_configured(
                    &mut warm.store,
                    &wit_facts(facts),
                    state,
                    now_ms,
                    &wit_event(event),
                ),
            }
            .map_err(classify)?;
            let evaluation = result.map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
            Ok((validate::evaluation(&self.limits, evaluation, now_ms)?, 1))
        })?;
        outcome.fuel_used = fuel_used;
        Ok(outcome)
    }

    /// Folds a run of events about one server in one call (`evaluate-run-ext` for a 1.3
    /// component, `evaluate-run` for a 1.2 one; not older ones: see [`LoadedPolicy::abi`]). The policy folds a prefix of the run: it stops after
    /// an event whose next check is due at or before the next event (the caller folds that
    /// tick first) and before an event that fails (the caller evaluates it alone). The whole
    /// call gets the fuel of one evaluation; every assessment is validated as a single
    /// evaluation's would be, and one that names a deadline at or before the next folded
    /// event (the policy folded past a due tick) fails the run. A failed run changes nothing:
    /// the caller folds those events one by one instead.
    pub fn evaluate_run(
        &self,
        facts: &ServerFacts,
        state: Option<&[u8]>,
        events: &[TimedEvent<'_>],
    ) -> Result<RunOutcome, PolicyError> {
        if !self.abi().folds_runs() {
            return Err(PolicyError::Load(
                "evaluate-run needs a component built against vigil:policy@1.2 or later".into(),
            ));
        }
        let (mut outcome, fuel_used) = self.with_instance(|warm| {
            let run = match &warm.instance {
                Instance::Resuming(instance) => {
                    let wit_events: Vec<wit::TimedEventExt> = events
                        .iter()
                        .map(|e| wit::TimedEventExt {
                            now_ms: e.now_ms,
                            event: wit_event_ext(e.event),
                        })
                        .collect();
                    instance.call_evaluate_run_ext(
                        &mut warm.store,
                        &wit_facts_ext(facts),
                        state,
                        &wit_events,
                    )
                }
                Instance::Extended(instance) => {
                    let wit_events: Vec<wit::TimedEventExt> = events
                        .iter()
                        .map(|e| wit::TimedEventExt {
                            now_ms: e.now_ms,
                            event: wit_event_ext(e.event),
                        })
                        .collect();
                    instance.call_evaluate_run_ext(
                        &mut warm.store,
                        &wit_facts_ext(facts),
                        state,
                        &wit_events,
                    )
                }
                Instance::Runs(instance) => {
                    let wit_events: Vec<wit::TimedEvent> = events
                        .iter()
                        .map(|e| wit::TimedEvent {
                            now_ms: e.now_ms,
                            event: wit_event(e.event),
                        })
                        .collect();
                    instance.call_evaluate_run(
                        &mut warm.store,
                        &wit_facts(facts),
                        state,
                        &wit_events,
                    )
                }
                _ => return Err(PolicyError::Load("not a vigil:policy@1.2 instance".into())),
            }
            .map_err(classify)?;
            let outcome = validate::run(&self.limits, run, events)?;
            let folded = u32::try_from(outcome.verdicts.len()).unwrap_or(u32::MAX);
            Ok((outcome, folded.max(1)))
        })?;
        outcome.fuel_used = fuel_used;
        Ok(outcome)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
