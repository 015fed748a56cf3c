//! The policy room: WebAssembly scoring policies, from the bytes an author ships to the
//! validated verdict of one evaluation. This file is an index; each concern has its own file.
//!
//! - `types`: the vocabulary (facts, events, verdicts, outcomes, limits, errors, digests).
//! - `runtime`: the one wasmtime engine ([`PolicyRuntime`]: pooling allocator, fuel) and the
//!   loading path.
//! - `loaded`: a compiled version ([`LoadedPolicy`]), its three ABI shapes ([`PolicyAbi`])
//!   and the warm instances it evaluates on.
//! - `validate`: the checks on what a guest answers; `convert`: the WIT conversions;
//!   [`bindings`]: the generated bindings (the only `bindgen!` in the host).
//! - [`catalog`]: validation and storage of versions, and the boot policy (before the engine
//!   runs); [`registry`]: the one validate-store-activate path every way of shipping a version
//!   ends in; [`activation`]: the narrow trait through which an activation reaches the engine;
//!   [`watch`]: the watched folder, the config pin and the change follower; [`signing`]:
//!   author signatures; [`vectors`]: golden vectors.
//!
//! This room never touches HTTP, never opens the database itself (it asks the store) and never
//! imports the engine: the engine implements [`activation::Activator`].

pub mod activation;
pub mod bindings;
pub mod catalog;
mod convert;
mod loaded;
pub mod registry;
mod runtime;
pub mod signing;
mod types;
mod validate;
pub mod vectors;
pub mod watch;

pub use loaded::LoadedPolicy;
pub use runtime::{PolicyRuntime, WORLD_MAJOR};
pub use types::{
    AuthKind, Cadence, Outcome, ParamDescription, PolicyAbi, PolicyDescription, PolicyError,
    PolicyEvent, PolicyLimits, RunOutcome, Schedule, ServerFacts, TimedEvent, Verdict, digest_of,
};

/// The bundled default policy component, built from `policies/default` by the build script.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(env!("VIGIL_DEFAULT_POLICY_WASM"));

/// The bundled reputation policy component (the Hermes marketplace's trust score), built from
/// `policies/reputation` by the build script. Not active unless an operator activates it
/// (`vigil policy activate reputation@<version>`): the catalog stores it on first use.
pub static REPUTATION_POLICY: &[u8] = include_bytes!(env!("VIGIL_REPUTATION_POLICY_WASM"));

/// The components this binary ships besides the one it boots with by default.
pub static BUNDLED_POLICIES: &[&[u8]] = &[REPUTATION_POLICY];
