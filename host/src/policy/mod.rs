//! The policy runtime: loads WebAssembly policy components and evaluates them under limits.
//!
//! One [`PolicyRuntime`] owns the wasmtime `Engine` (pooling allocator, fuel metering) and a
//! `Linker` that defines nothing: every import a guest declares (WASI clocks, random, files,
//! ...) traps when called, so a policy has no ambient authority and stays deterministic.
//! A [`LoadedPolicy`] is one compiled version (an `InstancePre`). Evaluations run on an instance
//! kept warm for up to `[policy] reuse_instance_calls` evaluations (a fresh `Store` and instance
//! costs ≈ 30 µs with the pooling allocator: instantiation, `configure`, and the page faults
//! of the guest memory it touches again), each call with a fuel budget, a memory cap and
//! output checks; a trap, exhausted fuel or invalid output fails that evaluation only, and the
//! instance is dropped.
//!
//! Three shapes of guest are loaded ([`PolicyAbi`]), told apart by their exports: a component
//! built against `vigil:policy@1.0.x` gets the parameters with every `evaluate` call; a 1.1
//! component gets them once per instance (`configure`, right after instantiation) and is then
//! called with `evaluate-configured`, which saves copying every parameter into the guest on
//! every event; a 1.2 component can also fold a run of events about one server in one call
//! ([`LoadedPolicy::evaluate_run`], `evaluate-run`), which replay uses.
//! This module never touches storage or HTTP.

pub mod bindings;
pub mod registry;
pub mod signing;
pub mod vectors;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime::{StoreLimits, StoreLimitsBuilder};

use crate::config::PolicyConfig;
use crate::ingest::decode::DecodedHeartbeat;
use bindings::base::BasePolicyPre;
use bindings::configured::ConfiguredPolicyPre;
use bindings::{PolicyPre, vigil::policy::types as wit};

/// Why a policy could not be loaded or an evaluation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The bytes are not a loadable component for this host (bad bytes, wrong world major).
    #[error("policy cannot be loaded: {0}")]
    Load(String),
    /// A configured parameter is unknown to the policy or has the wrong type.
    #[error("policy parameter: {0}")]
    Params(String),
    /// The guest trapped (panic, unreachable, memory limit, ...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The guest used up its fuel (a loop, or too much work for one event).
    #[error("policy ran out of fuel")]
    OutOfFuel,
    /// The guest returned `err`.
    #[error("policy returned an error: {0}")]
    Guest(String),
    /// The guest returned something out of range (NaN, > 100, oversized state, ...).
    #[error("policy returned invalid output: {0}")]
    InvalidOutput(String),
}

impl PolicyError {
    /// A short stable label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Load(_) => "load",
            PolicyError::Params(_) => "params",
            PolicyError::Trap(_) => "trap",
            PolicyError::OutOfFuel => "out_of_fuel",
            PolicyError::Guest(_) => "guest_error",
            PolicyError::InvalidOutput(_) => "invalid_output",
        }
    }
}

/// Limits applied to every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Fuel per call.
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Largest returned state, bytes.
    pub max_state_bytes: usize,
    /// Largest returned assessment (names of scores, badges, signals), bytes.
    pub max_output_bytes: usize,
    /// Calls one instance serves before a fresh one is made (1 = a fresh instance per call).
    pub reuse_instance_calls: u32,
}

impl From<&PolicyConfig> for PolicyLimits {
    fn from(c: &PolicyConfig) -> Self {
        Self {
            fuel: c.fuel,
            memory_bytes: c.memory_bytes,
            max_state_bytes: c.max_state_bytes,
            max_output_bytes: c.max_output_bytes,
            reuse_instance_calls: c.reuse_instance_calls,
        }
    }
}

/// A declared parameter, for the directory and operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamDescription {
    /// Name.
    pub name: String,
    /// What it changes.
    pub description: String,
    /// Default value.
    pub default: serde_json::Value,
}

/// What a policy says about itself (`describe()`), plus its digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDescription {
    /// Name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// History a replay needs, seconds (0 = all).
    pub history_window_seconds: u64,
    /// Declared parameters.
    pub params: Vec<ParamDescription>,
}

/// What the host knows about a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFacts {
    /// Identifier.
    pub server_id: String,
    /// Operator-verified.
    pub is_verified: bool,
    /// Current key version.
    pub key_version: u32,
    /// Registration time.
    pub registered_at_ms: i64,
}

/// An event to fold.
#[derive(Debug, Clone, Copy)]
pub enum PolicyEvent<'a> {
    /// An accepted heartbeat.
    Heartbeat {
        /// Host receive time.
        received_at_ms: i64,
        /// Whether its signature was verified.
        signed: bool,
        /// The decoded body.
        heartbeat: &'a DecodedHeartbeat,
    },
    /// A refused request naming the server.
    Rejected {
        /// Host receive time.
        received_at_ms: i64,
        /// The problem code answered.
        code: &'a str,
    },
    /// A deadline the policy asked for passed.
    Tick,
}

impl PolicyEvent<'_> {
    /// `heartbeat`, `rejected` or `tick`.
    pub fn cause(&self) -> &'static str {
        match self {
            PolicyEvent::Heartbeat { .. } => "heartbeat",
            PolicyEvent::Rejected { .. } => "rejected",
            PolicyEvent::Tick => "tick",
        }
    }
}

/// A validated assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `online`, `offline` or `unknown`.
    pub status: &'static str,
    /// `green`, `yellow` or `red`.
    pub confidence: &'static str,
    /// 0–100.
    pub uptime_percent: f64,
    /// 0–100.
    pub quality_score: f64,
    /// Named scores.
    pub scores: BTreeMap<String, f64>,
    /// Badges.
    pub badges: Vec<String>,
    /// Signals raised by this event.
    pub signals: Vec<String>,
    /// When to tick.
    pub next_check_at_ms: Option<i64>,
}

/// One event of a run ([`LoadedPolicy::evaluate_run`]), with the host's clock for it.
#[derive(Debug, Clone, Copy)]
pub struct TimedEvent<'a> {
    /// The host's clock for this event (what `now_ms` is to [`LoadedPolicy::evaluate`]).
    pub now_ms: i64,
    /// The event.
    pub event: PolicyEvent<'a>,
}

/// What a run folded: the first `verdicts.len()` events of the run, each validated as a
/// single evaluation would be.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The assessment of each folded event, in order.
    pub verdicts: Vec<Verdict>,
    /// The state after the last folded event (`None` when none was).
    pub state: Option<Vec<u8>>,
    /// Fuel the whole call used.
    pub fuel_used: u64,
}

/// A validated evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// New opaque state.
    pub state: Vec<u8>,
    /// The assessment.
    pub verdict: Verdict,
    /// Fuel the call used (≈ WebAssembly instructions executed, the argument and result
    /// copies' guest allocations included): a load-independent measure of a policy's cost.
    pub fuel_used: u64,
}

/// Per-store data: only the resource limiter.
struct GuestCtx {
    limits: StoreLimits,
}

/// The wasmtime engine and linker shared by every loaded policy. Cheap to clone.
#[derive(Clone)]
pub struct PolicyRuntime {
    engine: Engine,
    limits: PolicyLimits,
}

impl std::fmt::Debug for PolicyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRuntime")
            .field("limits", &self.limits)
            .finish()
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in Sha256::digest(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl PolicyRuntime {
    /// Builds the engine: fuel metering, pooling allocator sized to the memory cap.
    pub fn new(limits: PolicyLimits) -> Result<Self, PolicyError> {
        let mut pool = PoolingAllocationConfig::default();
        // Slots bound how many instances live at once (every loaded version keeps one warm).
        pool.total_component_instances(64)
            .total_core_instances(128)
            .total_memories(128)
            .total_tables(128)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .max_wasm_stack(512 << 10)
            // The whole 32-bit address range of a guest memory is reserved (address space
            // only: the memory cap above bounds what a guest can use) and followed by a guard
            // region, so compiled guest code needs no bounds check on its loads and stores: a
            // tenth off every policy call (BENCHMARKS.md, session 5). 128 slots reserve
            // ≈ 0.5 TiB of the 128 TiB of user address space per engine.
            .memory_reservation(1 << 32)
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("VIGIL_PERF_MAP").is_some() {
            // Names the compiled guest functions for `perf` (`/tmp/perf-<pid>.map`), so a
            // profile shows where a policy spends its time (BENCHMARKS.md).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PolicyError::Load(format!("{e:#}")))?;
        Ok(Self { engine, limits })
    }

    /// The limits every evaluation runs under.
    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    /// Compiles a component, checks its world, runs `describe()` and resolves `params` against
    /// the declared parameters (defaults filled in, unknown names refused).
    pub fn load(
        &self,
        bytes: &[u8],
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let component = self.compile(bytes)?;
        self.load_compiled(&component, digest_of(bytes), params)
    }

    /// Compiles component bytes (milliseconds: keep it off the async workers).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PolicyError> {
        Component::new(&self.engine, bytes)
            .map_err(|e| PolicyError::Load(format!("not a valid component: {e:#}")))
    }

    /// [`PolicyRuntime::load`] for an already compiled component whose bytes hash to `digest`.
    pub fn load_compiled(
        &self,
        component: &Component,
        digest: String,
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<Arc<LoadedPolicy>, PolicyError> {
        check_world_major(&self.engine, component)?;
        let mut linker: Linker<GuestCtx> = Linker::new(&self.engine);
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| PolicyError::Load(format!("{e:#}")))?;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| PolicyError::Load(format!("{e:#}")))?;
        // A component that exports `evaluate-run` is a 1.2 guest and must have all of the 1.2
        // world; one that exports `evaluate-configured` is held to the 1.1 world, anything
        // else to the 1.0 exports.
        let exports = |name: &str| component.get_export_index(None, name).is_some();
        let pre = if exports("evaluate-run") {
            Pre::Runs(PolicyPre::new(instance_pre).map_err(|e| {
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
        };
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
            limits: self.limits,
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
        Ok(Arc::new(policy))
    }
}

/// The WIT major version this host implements (`vigil:policy@1.x`).
pub const WORLD_MAJOR: u64 = 1;

/// Refuses, with a reason an author understands, a component built against another major of
/// the `vigil:policy` package (instantiate-pre would fail with a type-mismatch error).
fn check_world_major(engine: &Engine, component: &Component) -> Result<(), PolicyError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n)
        .chain(ty.exports(engine).map(|(n, _)| n));
    for name in names {
        let Some(rest) = name.strip_prefix("vigil:policy/") else {
            continue;
        };
        let Some((_, version)) = rest.split_once('@') else {
            continue;
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok());
        if major != Some(WORLD_MAJOR) {
            return Err(PolicyError::Load(format!(
                "the component is built for vigil:policy@{version} (`{name}`); this host \
                 implements vigil:policy@{WORLD_MAJOR}.x: rebuild it with a matching SDK"
            )));
        }
    }
    Ok(())
}

fn describe_param(spec: &wit::ParamSpec) -> ParamDescription {
    ParamDescription {
        name: spec.name.clone(),
        description: spec.description.clone(),
        default: match &spec.default {
            wit::ParamValue::Number(n) => serde_json::json!(n),
            wit::ParamValue::Text(t) => serde_json::json!(t),
            wit::ParamValue::Flag(b) => serde_json::json!(b),
        },
    }
}

fn resolve_params(
    declared: &[wit::ParamSpec],
    configured: &BTreeMap<String, toml::Value>,
) -> Result<Vec<wit::Param>, PolicyError> {
    if let Some(unknown) = configured
        .keys()
        .find(|k| !declared.iter().any(|d| &d.name == *k))
    {
        let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        return Err(PolicyError::Params(format!(
            "`{unknown}` is not a parameter of this policy (it has: {})",
            names.join(", ")
        )));
    }
    declared
        .iter()
        .map(|spec| {
            let value = match (configured.get(&spec.name), &spec.default) {
                (None, default) => default.clone(),
                (Some(toml::Value::Integer(i)), wit::ParamValue::Number(_)) => {
                    wit::ParamValue::Number(*i as f64)
                }
                (Some(toml::Value::Float(f)), wit::ParamValue::Number(_)) if f.is_finite() => {
                    wit::ParamValue::Number(*f)
                }
                (Some(toml::Value::String(s)), wit::ParamValue::Text(_)) => {
                    wit::ParamValue::Text(s.clone())
                }
                (Some(toml::Value::Boolean(b)), wit::ParamValue::Flag(_)) => {
                    wit::ParamValue::Flag(*b)
                }
                (Some(other), default) => {
                    let want = match default {
                        wit::ParamValue::Number(_) => "a finite number",
                        wit::ParamValue::Text(_) => "a string",
                        wit::ParamValue::Flag(_) => "a boolean",
                    };
                    return Err(PolicyError::Params(format!(
                        "`{}` must be {want}, got {other}",
                        spec.name
                    )));
                }
            };
            Ok(wit::Param {
                name: spec.name.clone(),
                value,
            })
        })
        .collect()
}

/// Which calls a loaded policy is evaluated with, decided at load by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAbi {
    /// Built against `vigil:policy@1.0.x`: `evaluate`, with the parameters on every call.
    ParamsPerCall,
    /// Built against `vigil:policy@1.1`: `configure` once per instance, then
    /// `evaluate-configured` without the parameters.
    Configured,
    /// Built against `vigil:policy@1.2` or later: as [`PolicyAbi::Configured`], and a run of
    /// events about one server folds in one call ([`LoadedPolicy::evaluate_run`]).
    Runs,
}

/// A compiled component with its exports looked up, in one of the three shapes.
enum Pre {
    ParamsPerCall(BasePolicyPre<GuestCtx>),
    Configured(ConfiguredPolicyPre<GuestCtx>),
    Runs(PolicyPre<GuestCtx>),
}

impl Pre {
    fn engine(&self) -> &Engine {
        match self {
            Pre::ParamsPerCall(pre) => pre.engine(),
            Pre::Configured(pre) => pre.engine(),
            Pre::Runs(pre) => pre.engine(),
        }
    }
}

/// An instance of one of the shapes; the configured ones are already configured with
/// [`LoadedPolicy::params`].
enum Instance {
    ParamsPerCall(bindings::base::BasePolicy),
    Configured(bindings::configured::ConfiguredPolicy),
    Runs(bindings::Policy),
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
    /// and whether it folds runs (1.2).
    pub fn abi(&self) -> PolicyAbi {
        match self.pre {
            Pre::ParamsPerCall(_) => PolicyAbi::ParamsPerCall,
            Pre::Configured(_) => PolicyAbi::Configured,
            Pre::Runs(_) => PolicyAbi::Runs,
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
        }
        .map_err(classify)?;
        let valid_name = !info.name.is_empty()
            && info.name.len() <= 64
            && info
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(PolicyError::InvalidOutput(format!(
                "describe(): name {:?} must be [a-z0-9-]{{1,64}}",
                info.name
            )));
        }
        if !is_semver(&info.version) {
            return Err(PolicyError::InvalidOutput(format!(
                "describe(): version {:?} is not semver (MAJOR.MINOR.PATCH)",
                info.version
            )));
        }
        Ok(info)
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
        let wit_facts = wit_facts(facts);
        let wit_event = wit_event(event);
        let (mut outcome, fuel_used) = self.with_instance(|warm| {
            let result = match &warm.instance {
                Instance::ParamsPerCall(instance) => instance.call_evaluate(
                    &mut warm.store,
                    &self.params,
                    &wit_facts,
                    state,
                    now_ms,
                    &wit_event,
                ),
                Instance::Configured(instance) => instance.call_evaluate_configured(
                    &mut warm.store,
                    &wit_facts,
                    state,
                    now_ms,
                    &wit_event,
                ),
                Instance::Runs(instance) => instance.call_evaluate_configured(
                    &mut warm.store,
                    &wit_facts,
                    state,
                    now_ms,
                    &wit_event,
                ),
            }
            .map_err(classify)?;
            let evaluation = result.map_err(|msg| PolicyError::Guest(truncate(&msg, 512)))?;
            Ok((self.validate(evaluation, now_ms)?, 1))
        })?;
        outcome.fuel_used = fuel_used;
        Ok(outcome)
    }

    /// Folds a run of events about one server in one call (`evaluate-run`, a 1.2 component
    /// only: see [`LoadedPolicy::abi`]). The policy folds a prefix of the run: it stops after
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
        if !matches!(self.pre, Pre::Runs(_)) {
            return Err(PolicyError::Load(
                "evaluate-run needs a component built against vigil:policy@1.2".into(),
            ));
        }
        let wit_facts = wit_facts(facts);
        let wit_events: Vec<wit::TimedEvent> = events
            .iter()
            .map(|e| wit::TimedEvent {
                now_ms: e.now_ms,
                event: wit_event(e.event),
            })
            .collect();
        let (mut outcome, fuel_used) = self.with_instance(|warm| {
            let Instance::Runs(instance) = &warm.instance else {
                return Err(PolicyError::Load("not a vigil:policy@1.2 instance".into()));
            };
            let run = instance
                .call_evaluate_run(&mut warm.store, &wit_facts, state, &wit_events)
                .map_err(classify)?;
            let outcome = self.validate_run(run, events)?;
            let folded = u32::try_from(outcome.verdicts.len()).unwrap_or(u32::MAX);
            Ok((outcome, folded.max(1)))
        })?;
        outcome.fuel_used = fuel_used;
        Ok(outcome)
    }

    fn validate_run(
        &self,
        run: wit::RunResult,
        events: &[TimedEvent<'_>],
    ) -> Result<RunOutcome, PolicyError> {
        let bad = |msg: String| Err(PolicyError::InvalidOutput(msg));
        let folded = run.assessments.len();
        if folded > events.len() {
            return bad(format!(
                "evaluate-run answered {folded} assessments for {} events",
                events.len()
            ));
        }
        match &run.state {
            None if folded > 0 => return bad("evaluate-run folded events but no state".into()),
            Some(_) if folded == 0 => return bad("evaluate-run folded nothing but a state".into()),
            Some(state) => self.check_state(state)?,
            None => {}
        }
        let mut verdicts = Vec::with_capacity(folded);
        for (i, assessment) in run.assessments.into_iter().enumerate() {
            let verdict = self.validate_assessment(assessment, events[i].now_ms)?;
            if let (Some(at), Some(next)) = (verdict.next_check_at_ms, events.get(i + 1))
                && i + 1 < folded
                && at <= next.now_ms
            {
                return bad(format!(
                    "evaluate-run folded the event at {} past a tick due at {at}",
                    next.now_ms
                ));
            }
            verdicts.push(verdict);
        }
        Ok(RunOutcome {
            verdicts,
            state: run.state,
            fuel_used: 0,
        })
    }

    fn validate(&self, e: wit::Evaluation, now_ms: i64) -> Result<Outcome, PolicyError> {
        self.check_state(&e.state)?;
        Ok(Outcome {
            fuel_used: 0,
            verdict: self.validate_assessment(e.assessment, now_ms)?,
            state: e.state,
        })
    }

    fn check_state(&self, state: &[u8]) -> Result<(), PolicyError> {
        if state.len() > self.limits.max_state_bytes {
            return Err(PolicyError::InvalidOutput(format!(
                "state is {} bytes, the limit is {}",
                state.len(),
                self.limits.max_state_bytes
            )));
        }
        Ok(())
    }

    fn validate_assessment(&self, a: wit::Assessment, now_ms: i64) -> Result<Verdict, PolicyError> {
        let bad = |msg: String| Err(PolicyError::InvalidOutput(msg));
        for (what, v) in [
            ("uptime-percent", a.uptime_percent),
            ("quality-score", a.quality_score),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return bad(format!("{what} is {v}, must be a number from 0 to 100"));
            }
        }
        let mut output_bytes = 0usize;
        let mut scores = BTreeMap::new();
        for s in a.scores {
            if !s.value.is_finite() {
                return bad(format!("score {:?} is {}, must be finite", s.name, s.value));
            }
            output_bytes += s.name.len() + 8;
            scores.insert(s.name, s.value);
        }
        output_bytes += a
            .badges
            .iter()
            .chain(&a.signals)
            .map(String::len)
            .sum::<usize>();
        if output_bytes > self.limits.max_output_bytes {
            return bad(format!(
                "assessment is {output_bytes} bytes, the limit is {}",
                self.limits.max_output_bytes
            ));
        }
        if let Some(at) = a.next_check_at_ms
            && at <= now_ms
        {
            return bad(format!("next-check-at-ms {at} is not after now ({now_ms})"));
        }
        Ok(Verdict {
            status: match a.status {
                wit::Status::Online => "online",
                wit::Status::Offline => "offline",
                wit::Status::Unknown => "unknown",
            },
            confidence: match a.confidence {
                wit::Confidence::Green => "green",
                wit::Confidence::Yellow => "yellow",
                wit::Confidence::Red => "red",
            },
            uptime_percent: a.uptime_percent,
            quality_score: a.quality_score,
            scores,
            badges: a.badges,
            signals: a.signals,
            next_check_at_ms: a.next_check_at_ms,
        })
    }
}

fn wit_facts(facts: &ServerFacts) -> wit::Facts {
    wit::Facts {
        server_id: facts.server_id.clone(),
        is_verified: facts.is_verified,
        key_version: facts.key_version,
        registered_at_ms: facts.registered_at_ms,
    }
}

fn wit_event(event: PolicyEvent<'_>) -> wit::Event {
    match event {
        PolicyEvent::Heartbeat {
            received_at_ms,
            signed,
            heartbeat: h,
        } => wit::Event::Heartbeat(wit::Heartbeat {
            received_at_ms,
            sent_at_ms: h.sent_at_ms,
            signed,
            status: h.status.clone(),
            mode: h.mode.clone(),
            interval_seconds: h.interval_seconds,
            uptime_seconds: h.uptime_seconds,
            players_current: h.players_current,
            players_capacity: h.players_capacity,
            agent_version: h.agent_version.clone(),
            metrics: h
                .metrics
                .iter()
                .map(|m| wit::Metric {
                    name: m.name.clone(),
                    value: m.value,
                })
                .collect(),
        }),
        PolicyEvent::Rejected {
            received_at_ms,
            code,
        } => wit::Event::Rejected(wit::Rejection {
            received_at_ms,
            code: code.to_owned(),
        }),
        PolicyEvent::Tick => wit::Event::Tick,
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

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The bundled default policy component, built from `policies/default` by the build script.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(env!("VIGIL_DEFAULT_POLICY_WASM"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_and_digest() {
        assert!(is_semver("1.0.0"));
        assert!(is_semver("1.2.3-rc.1"));
        assert!(!is_semver("1.0"));
        assert_eq!(digest_of(b"").len(), 71);
    }

    #[test]
    fn evaluations_report_the_fuel_they_used() {
        let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default()))
            .expect("engine builds");
        let policy = runtime
            .load(DEFAULT_POLICY, &BTreeMap::new())
            .expect("default loads");
        let facts = ServerFacts {
            server_id: "fuel".to_owned(),
            is_verified: false,
            key_version: 1,
            registered_at_ms: 0,
        };
        let first = policy
            .evaluate(&facts, None, 1_000, PolicyEvent::Tick)
            .expect("evaluates");
        let rejected = PolicyEvent::Rejected {
            received_at_ms: 2_000,
            code: "bad_signature",
        };
        let second = policy
            .evaluate(&facts, Some(&first.state), 2_000, rejected)
            .expect("evaluates");
        for outcome in [&first, &second] {
            assert!(outcome.fuel_used > 0, "{outcome:?}");
            assert!(outcome.fuel_used < runtime.limits().fuel, "{outcome:?}");
        }
    }

    #[test]
    fn garbage_is_refused_at_load() {
        let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default()))
            .expect("engine builds");
        let err = runtime.load(b"not wasm", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind(), "load");
    }

    #[test]
    fn bundled_default_policy_loads_and_describes_itself() {
        let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default()))
            .expect("engine builds");
        let policy = runtime
            .load(DEFAULT_POLICY, &BTreeMap::new())
            .expect("default loads");
        assert_eq!(policy.description().name, "default");
        assert_eq!(policy.abi(), PolicyAbi::Runs);
        let mut bad = BTreeMap::new();
        bad.insert("no_such_param".to_owned(), toml::Value::Integer(1));
        assert_eq!(
            runtime.load(DEFAULT_POLICY, &bad).unwrap_err().kind(),
            "params"
        );
    }
}
