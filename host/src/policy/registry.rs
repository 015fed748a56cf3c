//! The policy registry: the one validate-store-activate path every way of shipping a version
//! ends in (watched folder, admin API, CLI through the API, the config pin, another host's
//! activation).
//!
//! It is built once the engine runs, from the [`PolicyCatalog`] the boot policy was chosen
//! through (validation, storage, refusals) and the engine as an [`Activator`]: activation hands
//! a loaded version to the engine's writer, which swaps it between batches and records the
//! activation. This module never validates by itself (the catalog does), never folds live
//! events and never touches snapshots.

use std::sync::Arc;

use super::LoadedPolicy;
use super::activation::{Activation, ActivationOutcome, Activator, Probation};
use super::catalog::PolicyCatalog;
pub use super::catalog::{Refusal, RegistryError, Validated};

struct Inner {
    catalog: PolicyCatalog,
    /// The running engine: activations, shadows and refreshes go through it.
    activator: Box<dyn Activator>,
}

/// The registry handle (cheap clone).
#[derive(Clone)]
pub struct PolicyRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRegistry").finish_non_exhaustive()
    }
}

/// A registry handle that does not keep the host alive (for background tasks).
#[derive(Clone)]
pub(crate) struct WeakRegistry(std::sync::Weak<Inner>);

impl WeakRegistry {
    pub(crate) fn upgrade(&self) -> Option<PolicyRegistry> {
        self.0.upgrade().map(|inner| PolicyRegistry { inner })
    }
}

impl PolicyRegistry {
    /// The registry over `catalog`, activating through `activator` (the running engine).
    pub fn new(catalog: PolicyCatalog, activator: impl Activator) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                activator: Box::new(activator),
            }),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.inner))
    }

    /// The validated, stored versions (validation, look-up, refusals).
    pub fn catalog(&self) -> &PolicyCatalog {
        &self.inner.catalog
    }

    /// The engine the registry activates through.
    pub(crate) fn activator(&self) -> &dyn Activator {
        self.inner.activator.as_ref()
    }

    /// Validates and stores a version (no activation); see [`PolicyCatalog::register`].
    pub async fn register(
        &self,
        bytes: Vec<u8>,
        signature: Option<&str>,
        source: &str,
    ) -> Result<Validated, RegistryError> {
        self.catalog().register(bytes, signature, source).await
    }

    /// Makes a stored version active (on probation as configured).
    pub async fn activate(
        &self,
        selector: &str,
        who: &str,
        reason: &str,
    ) -> Result<ActivationOutcome, RegistryError> {
        let catalog = self.catalog();
        let record = catalog.find(selector).await?;
        let policy = match catalog.load_stored(&record).await {
            Ok(p) => p,
            Err(e) => {
                catalog.refuse(who, &record.digest, &e);
                return Err(e);
            }
        };
        self.activate_loaded(policy, who, reason).await
    }

    /// Hands a loaded version to the engine.
    pub async fn activate_loaded(
        &self,
        policy: Arc<LoadedPolicy>,
        who: &str,
        reason: &str,
    ) -> Result<ActivationOutcome, RegistryError> {
        let config = self.catalog().config().current();
        let probation = (config.policy.probation_evaluations > 0).then_some(Probation {
            evaluations: config.policy.probation_evaluations,
            max_failure_share: config.policy.max_failure_share,
        });
        Ok(self
            .activator()
            .activate(Activation {
                policy,
                who: who.to_owned(),
                reason: reason.to_owned(),
                probation,
                recorded: false,
            })
            .await?)
    }

    /// Follows an activation another host sharing the database recorded: loads that stored
    /// version and makes it active here too, without recording it again.
    pub async fn follow(&self, digest: &str) -> Result<ActivationOutcome, RegistryError> {
        let engine = self.activator();
        if engine.active().digest() != digest {
            let catalog = self.catalog();
            let record = catalog
                .store()
                .load_policy(digest)
                .await?
                .ok_or_else(|| RegistryError::NotFound(digest.to_owned()))?;
            let policy = catalog.load_stored(&record).await?;
            return Ok(engine
                .activate(Activation {
                    policy,
                    who: "cluster".to_owned(),
                    reason: "activated on another host".to_owned(),
                    probation: None,
                    recorded: true,
                })
                .await?);
        }
        Ok(ActivationOutcome {
            previous: digest.to_owned(),
            active: digest.to_owned(),
            changed: false,
            rebuilds: 0,
        })
    }

    /// Starts shadow evaluation of a stored version beside the active one (`None` stops it).
    pub async fn shadow(&self, selector: Option<&str>) -> Result<(), RegistryError> {
        let policy = match selector {
            Some(selector) => {
                let record = self.catalog().find(selector).await?;
                Some(self.catalog().load_stored(&record).await?)
            }
            None => None,
        };
        self.activator().set_shadow(policy).await?;
        Ok(())
    }

    /// Activates the version that was active before the current one.
    pub async fn rollback(
        &self,
        who: &str,
        reason: &str,
    ) -> Result<ActivationOutcome, RegistryError> {
        let active = self.activator().active().digest().to_owned();
        let log = self.catalog().store().activations(1000).await?;
        let previous = log
            .iter()
            .find(|a| a.to_digest == active)
            .and_then(|a| a.from_digest.clone())
            .filter(|d| *d != active)
            .ok_or(RegistryError::NoPrevious)?;
        self.activate(&previous, who, reason).await
    }
}
