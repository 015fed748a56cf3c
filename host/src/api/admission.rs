//! Wires the admission gate ([`crate::ingest::Gate`]) to the engine: what the gate asks about
//! servers ([`Servers`]) answered by the engine's working set, the shared database when
//! several hosts share it, and the single writer. Translation only: no check lives here.

use std::sync::Arc;

use async_trait::async_trait;

use super::ApiError;
use crate::engine::{EngineHandle, WriteError};
use crate::ingest::verified::{Identity, RejectionNotice};
use crate::ingest::{Refusal, Servers};
use crate::store::{NewServer, Store, TokenKind};

/// The engine and store, as the gate sees them.
pub struct EngineServers {
    /// The writer path and its working set of identities.
    pub engine: EngineHandle,
    /// For servers another host registered a moment ago.
    pub store: Store,
}

#[async_trait]
impl Servers for EngineServers {
    async fn identity(&self, server_id: &str) -> Option<Arc<Identity>> {
        if let Some(identity) = self.engine.identity(server_id) {
            return Some(identity);
        }
        if self.store.is_shared() {
            // Several hosts on one database: another host may have registered it a moment
            // ago, before its notification reached this one.
            match self.store.get_server(server_id).await {
                Ok(Some(record)) => self.engine.learn(&record),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%server_id, error = %e, "cannot look up an unknown server");
                }
            }
        }
        self.engine.identity(server_id)
    }

    async fn register(&self, server: NewServer) -> Result<bool, Refusal> {
        let server_id = server.server_id.clone();
        match self.engine.register(server).await {
            Ok(()) => Ok(true),
            Err(WriteError::Conflict(_)) => Ok(false),
            Err(e) => {
                let error = ApiError::from(e);
                Err(Refusal {
                    retry_after: error.retry_after,
                    ..Refusal::new(
                        error.status.as_u16(),
                        error.code,
                        error.detail,
                        Some(&server_id),
                    )
                })
            }
        }
    }

    async fn token_owner(
        &self,
        kind: TokenKind,
        token_sha256: &str,
    ) -> Result<Option<String>, Refusal> {
        self.store
            .ingest_token_owner(kind, token_sha256)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot look up an ingest token");
                Refusal::new(503, "unavailable", "the token store is unavailable", None)
            })
    }

    async fn ingest_key(&self, presented: &str) -> Result<Option<String>, Refusal> {
        super::auth::ingest_key(&self.store, presented)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot look up an ingest key");
                Refusal::new(503, "unavailable", "the key store is unavailable", None)
            })
    }

    async fn record_rejection(&self, notice: RejectionNotice) {
        let code = notice.code;
        if let Err(e) = self.engine.record_rejection(notice).await {
            // The client still learns why it was refused; the audit row is what failed.
            tracing::error!(error = %e, code, "could not append the rejection");
        }
    }
}
