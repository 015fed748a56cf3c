//! The engine as the policy room's [`Activator`]: the registry's activations, shadows and
//! refreshes reach the writer through the engine handle.
//!
//! Only the translation lives here (the handle's own methods do the work, and
//! [`WriteError`] narrows to [`ActivationError`] and back, so the HTTP answer is the one a
//! [`WriteError`] maps to). This module never decides what to activate.

use std::sync::Arc;

use async_trait::async_trait;

use super::{EngineHandle, WriteError};
use crate::policy::LoadedPolicy;
use crate::policy::activation::{Activation, ActivationError, ActivationOutcome, Activator};
use crate::store::ChangeNotice;

#[async_trait]
impl Activator for EngineHandle {
    fn active(&self) -> Arc<LoadedPolicy> {
        self.policy()
    }

    async fn activate(&self, activation: Activation) -> Result<ActivationOutcome, ActivationError> {
        Ok(EngineHandle::activate(self, activation).await?)
    }

    async fn set_shadow(&self, policy: Option<Arc<LoadedPolicy>>) -> Result<(), ActivationError> {
        Ok(EngineHandle::set_shadow(self, policy).await?)
    }

    async fn refresh(&self, notice: ChangeNotice) {
        EngineHandle::refresh(self, notice).await;
    }
}

impl From<WriteError> for ActivationError {
    /// An activation or a shadow request fails only when the activation cannot be recorded or
    /// the writer is gone; any other refusal (none today) is reported as a storage failure.
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Closed => ActivationError::Closed,
            WriteError::Storage(cause) => ActivationError::Storage(cause),
            other => ActivationError::Storage(other.to_string()),
        }
    }
}

impl From<ActivationError> for WriteError {
    fn from(e: ActivationError) -> Self {
        match e {
            ActivationError::Closed => WriteError::Closed,
            ActivationError::Storage(cause) => WriteError::Storage(cause),
        }
    }
}
