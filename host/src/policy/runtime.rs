//! The policy runtime: one wasmtime `Engine` (pooling allocator, fuel metering) shared by every
//! loaded version, and the loading path: compile, check the world major, link, and hand the
//! compiled component to [`LoadedPolicy`].
//!
//! The `Linker` defines nothing: every import a guest declares (WASI clocks, random, files,
//! ...) traps when called, so a policy has no ambient authority and stays deterministic. This
//! module never evaluates (that is `loaded.rs`'s) and never touches storage or HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::loaded::{GuestCtx, Pre};
use super::{LoadedPolicy, PolicyError, PolicyLimits, digest_of};

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
        let pre = Pre::of(component, instance_pre)?;
        Ok(Arc::new(LoadedPolicy::new(
            pre,
            digest,
            params,
            self.limits,
        )?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;
    use crate::policy::{DEFAULT_POLICY, PolicyAbi, PolicyEvent, ServerFacts};

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
            schedule: None,
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
        assert_eq!(policy.abi(), PolicyAbi::Resuming);
        let mut bad = BTreeMap::new();
        bad.insert("no_such_param".to_owned(), toml::Value::Integer(1));
        assert_eq!(
            runtime.load(DEFAULT_POLICY, &bad).unwrap_err().kind(),
            "params"
        );
    }
}
