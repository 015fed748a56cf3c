//! The policy catalog: every version the host knows, validated and stored — the half of the
//! registry that works before the engine runs (the boot policy is chosen through it).
//!
//! Validation runs off the async workers (`spawn_blocking`): signature (when required or
//! given), compile (cached by digest), world major, `describe()`, parameters, and a smoke
//! evaluation on a synthetic history. A valid version is stored content-addressed; refusals
//! are kept for operators. This module never activates a version (the registry hands a
//! loaded one to the engine), never folds live events and never touches snapshots.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};
use wasmtime::component::Component;

use super::activation::ActivationError;
use super::signing::{self, SigningError};
use super::{LoadedPolicy, PolicyError, PolicyEvent, PolicyRuntime, ServerFacts, digest_of};
use crate::clock::now_ms;
use crate::config::{ConfigHandle, PolicyConfig};
use crate::ingest::decode::decode_object;
use crate::ingest::signature::PublicKey;
use crate::store::{ActivationRow, PolicyRecord, Store, StoreError};

/// The server id of the synthetic history a candidate is smoke-tested on.
pub const SMOKE_SERVER_ID: &str = "vigil-smoke-test";
/// `uploaded_by` of the version the configuration names at start-up.
pub const CONFIG_UPLOADER: &str = "config";
/// `uploaded_by` of a policy bundled in this binary ([`super::BUNDLED_POLICIES`]), stored the
/// first time an operator names it.
pub const BUNDLED_UPLOADER: &str = "bundled";
/// Compiled components kept in memory.
const CACHE_ENTRIES: usize = 32;
/// Refusals kept for `GET /v1/policies`.
const REFUSALS_KEPT: usize = 32;

/// Why a version was refused or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not a loadable component for this host (bytes, world major, `describe()`, params).
    #[error("{0}")]
    Invalid(PolicyError),
    /// Unsigned, malformed or untrusted signature.
    #[error("{0}")]
    Signature(#[from] SigningError),
    /// The smoke evaluation on a synthetic history failed.
    #[error("smoke evaluation failed: {0}")]
    Smoke(String),
    /// A watched-folder file whose name does not match what the component says it is.
    #[error("file name `{file}` does not match describe() `{expected}`")]
    FileName {
        /// The file's stem.
        file: String,
        /// `NAME-VERSION` from `describe()`.
        expected: String,
    },
    /// No stored version matches.
    #[error("no stored policy matches `{0}`")]
    NotFound(String),
    /// Nothing to roll back to.
    #[error("no previous policy version to roll back to")]
    NoPrevious,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine did not make the swap.
    #[error(transparent)]
    Engine(#[from] ActivationError),
}

/// A refused shipment, kept for operators (`GET /v1/policies`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Refusal {
    /// When.
    pub at_ms: i64,
    /// Where it came from (`watched-folder:<file>`, `admin`, ...).
    pub source: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Why.
    pub reason: String,
}

/// A validated (and stored) version.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The loaded version.
    pub policy: Arc<LoadedPolicy>,
    /// Fingerprint of the author key, when signed.
    pub signer: Option<String>,
    /// The signature, when signed.
    pub signature: Option<String>,
}

struct Inner {
    runtime: PolicyRuntime,
    store: Store,
    config: ConfigHandle,
    /// `Component::deserialize` of a serialized artifact is `unsafe` in wasmtime and the
    /// workspace forbids unsafe code, so compiled components are cached in memory by digest
    /// (their engine is this runtime's, so engine compatibility holds by construction). A std
    /// mutex: the critical section is a map look-up or insert, never an await.
    compiled: Mutex<HashMap<String, Component>>,
    /// Recent refusals; std mutex for the same reason.
    refused: Mutex<VecDeque<Refusal>>,
}

/// The catalog handle (cheap clone).
#[derive(Clone)]
pub struct PolicyCatalog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCatalog").finish_non_exhaustive()
    }
}

fn trusted_keys(config: &PolicyConfig) -> Vec<PublicKey> {
    config
        .trusted_keys
        .iter()
        .filter_map(|k| PublicKey::from_base64(k).ok())
        .collect()
}

impl PolicyCatalog {
    /// A catalog over `runtime` and `store`, validating against the configuration in force.
    pub fn new(runtime: PolicyRuntime, store: Store, config: ConfigHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                store,
                config,
                compiled: Mutex::new(HashMap::new()),
                refused: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ConfigHandle {
        &self.inner.config
    }

    /// The store behind the catalog.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Recent refusals, newest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        match self.inner.refused.lock() {
            Ok(r) => r.iter().rev().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records and logs a refused shipment.
    pub fn refuse(&self, source: &str, digest: &str, error: &RegistryError) {
        tracing::warn!(%source, %digest, %error, "policy refused");
        if let Ok(mut refused) = self.inner.refused.lock() {
            if refused.len() == REFUSALS_KEPT {
                refused.pop_front();
            }
            refused.push_back(Refusal {
                at_ms: now_ms(),
                source: source.to_owned(),
                digest: digest.to_owned(),
                reason: error.to_string(),
            });
        }
    }

    fn check_signature(
        &self,
        digest: &str,
        signature: Option<&str>,
    ) -> Result<Option<String>, SigningError> {
        let config = self.inner.config.current();
        match signature {
            Some(sig) => match signing::verify(sig, digest, &trusted_keys(&config.policy)) {
                Ok(signer) => Ok(Some(signer)),
                // An untrusted signature is only fatal when signatures are required.
                Err(e) if config.policy.require_signed => Err(e),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "policy signature not trusted; ignoring it");
                    Ok(None)
                }
            },
            None if config.policy.require_signed => Err(SigningError::Unsigned),
            None => Ok(None),
        }
    }

    /// Compiles (or takes from the cache), loads with the configured parameters (those the
    /// version declares), and smoke-tests a component. Blocking work runs on the blocking pool.
    async fn load(
        &self,
        bytes: Arc<[u8]>,
        digest: String,
    ) -> Result<Arc<LoadedPolicy>, RegistryError> {
        let this = self.clone();
        let params = self.inner.config.current().policy.params.clone();
        tokio::task::spawn_blocking(move || this.load_blocking(&bytes, digest, &params))
            .await
            .map_err(|e| {
                RegistryError::Invalid(PolicyError::Load(format!("validation task: {e}")))
            })?
    }

    fn load_blocking(
        &self,
        bytes: &[u8],
        digest: String,
        params: &BTreeMap<String, toml::Value>,
    ) -> Result<Arc<LoadedPolicy>, RegistryError> {
        let cached = self
            .inner
            .compiled
            .lock()
            .ok()
            .and_then(|c| c.get(&digest).cloned());
        let component = match cached {
            Some(c) => c,
            None => {
                let c = self
                    .inner
                    .runtime
                    .compile(bytes)
                    .map_err(RegistryError::Invalid)?;
                if let Ok(mut cache) = self.inner.compiled.lock() {
                    if cache.len() >= CACHE_ENTRIES
                        && let Some(evict) = cache.keys().next().cloned()
                    {
                        cache.remove(&evict);
                    }
                    cache.insert(digest.clone(), c.clone());
                }
                c
            }
        };
        // Parameters are configured once for whatever version runs: keep those this version
        // declares (a swap to another policy must not fail on the previous one's names).
        let bare = self
            .inner
            .runtime
            .load_compiled(&component, digest.clone(), &BTreeMap::new())
            .map_err(RegistryError::Invalid)?;
        let declared: BTreeMap<String, toml::Value> = params
            .iter()
            .filter(|(name, _)| bare.description().params.iter().any(|p| &p.name == *name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let policy = if declared.is_empty() {
            bare
        } else {
            self.inner
                .runtime
                .load_compiled(&component, digest, &declared)
                .map_err(RegistryError::Invalid)?
        };
        smoke(&policy).map_err(RegistryError::Smoke)?;
        Ok(policy)
    }

    /// Validates a shipment: signature, compile, world, `describe()`, smoke evaluation.
    pub async fn validate(
        &self,
        bytes: Arc<[u8]>,
        signature: Option<&str>,
    ) -> Result<Validated, RegistryError> {
        let digest = digest_of(&bytes);
        let signer = self.check_signature(&digest, signature)?;
        let policy = self.load(bytes, digest).await?;
        Ok(Validated {
            signature: signer.as_ref().and(signature.map(|s| s.trim().to_owned())),
            signer,
            policy,
        })
    }

    /// Validates and stores a version (no activation). Refusals are recorded.
    pub async fn register(
        &self,
        bytes: Vec<u8>,
        signature: Option<&str>,
        source: &str,
    ) -> Result<Validated, RegistryError> {
        let bytes: Arc<[u8]> = bytes.into();
        let digest = digest_of(&bytes);
        match self.validate(bytes.clone(), signature).await {
            Ok(v) => match self.save(&v, &bytes, source).await {
                Ok(()) => Ok(v),
                Err(e) => {
                    let e = RegistryError::from(e);
                    if matches!(e, RegistryError::Store(StoreError::Conflict(_))) {
                        self.refuse(source, &digest, &e);
                    }
                    Err(e)
                }
            },
            Err(e) => {
                self.refuse(source, &digest, &e);
                Err(e)
            }
        }
    }

    async fn save(&self, v: &Validated, bytes: &[u8], who: &str) -> Result<(), StoreError> {
        let d = v.policy.description();
        self.inner
            .store
            .save_policy(
                &PolicyRecord {
                    digest: d.digest.clone(),
                    name: d.name.clone(),
                    version: d.version.clone(),
                    component: bytes.to_vec(),
                    uploaded_by: who.to_owned(),
                    uploaded_at_ms: now_ms(),
                    signer: v.signer.clone(),
                    signature: v.signature.clone(),
                },
                false,
            )
            .await
    }

    /// Finds a stored version by `sha256:<hex>` or `name@version`.
    pub async fn find(&self, selector: &str) -> Result<PolicyRecord, RegistryError> {
        let found = if selector.starts_with("sha256:") {
            self.inner.store.load_policy(selector).await?
        } else {
            match selector.split_once('@') {
                Some((name, version)) => self.inner.store.find_policy(name, version).await?,
                None => None,
            }
        };
        match found {
            Some(record) => Ok(record),
            None => self
                .bundled(selector)
                .await?
                .ok_or_else(|| RegistryError::NotFound(selector.to_owned())),
        }
    }

    /// The bundled policy `selector` names, validated and stored on first use (so that a
    /// bundled policy costs nothing, not even a compile, until an operator asks for it).
    async fn bundled(&self, selector: &str) -> Result<Option<PolicyRecord>, RegistryError> {
        for bytes in super::BUNDLED_POLICIES {
            let digest = digest_of(bytes);
            if selector.starts_with("sha256:") && selector != digest {
                continue;
            }
            let policy = self.load(Arc::from(*bytes), digest.clone()).await?;
            let d = policy.description();
            if !selector.starts_with("sha256:") && selector != format!("{}@{}", d.name, d.version) {
                continue;
            }
            let record = PolicyRecord {
                digest,
                name: d.name.clone(),
                version: d.version.clone(),
                component: bytes.to_vec(),
                uploaded_by: BUNDLED_UPLOADER.into(),
                uploaded_at_ms: now_ms(),
                signer: None,
                signature: None,
            };
            self.inner.store.save_policy(&record, false).await?;
            return Ok(Some(record));
        }
        Ok(None)
    }

    /// Loads a stored version (re-checking its signature when signatures are required). The
    /// version the configuration itself names (the bundled default or `[policy] component`,
    /// stored by `config`) and the policies bundled in the binary are trusted like the
    /// configuration: signatures guard what is shipped
    /// at run time, so rolling back to it is always possible.
    pub async fn load_stored(
        &self,
        record: &PolicyRecord,
    ) -> Result<Arc<LoadedPolicy>, RegistryError> {
        // A bundled policy is part of the binary, trusted like the configuration.
        if record.uploaded_by != CONFIG_UPLOADER && record.uploaded_by != BUNDLED_UPLOADER {
            self.check_signature(&record.digest, record.signature.as_deref())?;
        }
        self.load(record.component.clone().into(), record.digest.clone())
            .await
    }
}

/// Runs a short synthetic history through a candidate: two heartbeats, a refused request, the
/// tick it asks for, and a heartbeat after a long silence. Every evaluation must succeed.
fn smoke(policy: &LoadedPolicy) -> Result<(), String> {
    // A fixed instant: the smoke test is deterministic like everything a policy sees.
    const T0: i64 = 1_700_000_000_000;
    let facts = ServerFacts {
        server_id: SMOKE_SERVER_ID.into(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: T0,
        schedule: None,
    };
    let heartbeat = |at: i64, players: u32| {
        let mut body = Map::new();
        body.insert("server_id".into(), json!(SMOKE_SERVER_ID));
        body.insert("key_version".into(), json!(1));
        body.insert(
            "timestamp".into(),
            Value::String(crate::clock::format_rfc3339_ms(at)),
        );
        body.insert("status".into(), json!("online"));
        body.insert("players_current".into(), json!(players));
        body.insert("players_capacity".into(), json!(64));
        body.insert("interval_seconds".into(), json!(30));
        body.insert("uptime_seconds".into(), json!(3600));
        body.insert("metrics".into(), json!({"cpu_percent": 12.5}));
        body.insert("signature".into(), json!(""));
        decode_object(body).map_err(|e| format!("synthetic heartbeat: {}", e.detail))
    };
    let first = heartbeat(T0 + 1_000, 3)?;
    let second = heartbeat(T0 + 31_000, 5)?;
    let late = heartbeat(T0 + 3_600_000, 1)?;
    let mut state: Option<Vec<u8>> = None;
    let mut run = |now: i64, event: PolicyEvent<'_>| -> Result<Option<i64>, String> {
        let outcome = policy
            .evaluate(&facts, state.as_deref(), now, event)
            .map_err(|e| format!("{} at {now}: {e}", event.cause()))?;
        state = Some(outcome.state);
        Ok(outcome.verdict.next_check_at_ms)
    };
    fn hb(h: &crate::ingest::decode::DecodedHeartbeat, at: i64) -> PolicyEvent<'_> {
        PolicyEvent::Heartbeat {
            received_at_ms: at,
            auth: crate::policy::AuthKind::Signature,
            heartbeat: h,
        }
    }
    run(T0 + 1_000, hb(&first, T0 + 1_000))?;
    run(T0 + 31_000, hb(&second, T0 + 31_000))?;
    let next_check = run(
        T0 + 40_000,
        PolicyEvent::Rejected {
            received_at_ms: T0 + 40_000,
            code: "bad_signature",
        },
    )?;
    if let Some(at) = next_check.filter(|at| *at < T0 + 3_600_000) {
        run(at, PolicyEvent::Tick)?;
    }
    run(T0 + 3_600_000, hb(&late, T0 + 3_600_000))?;
    Ok(())
}

/// Chooses and records the policy the engine starts with:
/// 1. `[policy] active` (a stored `name@version`), if set;
/// 2. else the configured component (or the bundled default) if it was never active before
///    (a new file in the config wins);
/// 3. else the last activated version (a hot swap survives a restart).
pub async fn boot_policy(
    catalog: &PolicyCatalog,
    config: &PolicyConfig,
) -> anyhow::Result<Arc<LoadedPolicy>> {
    use anyhow::Context;
    let store = catalog.store().clone();
    let previous = store.active_policy_digest().await?;
    let record_boot = |to: &str, reason: String| ActivationRow {
        at_ms: now_ms(),
        who: "config".into(),
        from_digest: previous.clone(),
        to_digest: to.to_owned(),
        reason,
    };
    if let Some(pin) = &config.active {
        let record = catalog.find(pin).await.with_context(|| {
            format!("[policy] active = {pin:?}: upload it or drop it into [policy] dir first")
        })?;
        let policy = catalog
            .load_stored(&record)
            .await
            .with_context(|| format!("loading the pinned policy {pin}"))?;
        if previous.as_deref() != Some(policy.digest()) {
            store
                .append_activation(&record_boot(
                    policy.digest(),
                    format!("start-up, pinned {pin}"),
                ))
                .await?;
        }
        return Ok(policy);
    }
    let (bytes, origin) = match &config.component {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading policy {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            super::DEFAULT_POLICY.to_vec(),
            "bundled default policy".to_owned(),
        ),
    };
    let digest = digest_of(&bytes);
    let ever_active = store
        .activations(10_000)
        .await?
        .iter()
        .any(|a| a.to_digest == digest);
    if ever_active
        && let Some(last) = previous.as_deref().filter(|d| *d != digest)
        && let Some(record) = store.load_policy(last).await?
    {
        match catalog.load_stored(&record).await {
            Ok(policy) => {
                tracing::info!(policy = %last, "resuming the last activated policy");
                return Ok(policy);
            }
            Err(e) => {
                tracing::error!(policy = %last, error = %e, "cannot resume the last activated policy; using the configured one")
            }
        }
    }
    // The configured component keeps the start-up's strict parameter check (a typo in
    // `[policy] params` fails the start, naming the parameter).
    let runtime = &catalog.inner.runtime;
    let policy = runtime
        .load(&bytes, &config.params)
        .with_context(|| format!("loading the {origin}"))?;
    let d = policy.description();
    store
        .save_policy(
            &PolicyRecord {
                digest: d.digest.clone(),
                name: d.name.clone(),
                version: d.version.clone(),
                component: bytes,
                uploaded_by: CONFIG_UPLOADER.into(),
                uploaded_at_ms: now_ms(),
                signer: None,
                signature: None,
            },
            true,
        )
        .await?;
    if previous.as_deref() != Some(d.digest.as_str()) {
        store
            .append_activation(&record_boot(
                &d.digest,
                format!("start-up with the {origin}"),
            ))
            .await?;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DEFAULT_POLICY, PolicyLimits};

    #[test]
    fn the_default_policy_passes_the_smoke_evaluation() {
        let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default()))
            .expect("engine builds");
        let policy = runtime
            .load(DEFAULT_POLICY, &BTreeMap::new())
            .expect("default loads");
        smoke(&policy).expect("smoke passes");
    }
}
