//! Server admin inside the writer: registrations (consecutive ones share one transaction), the
//! operator's verified flag and key rotations, each written to storage first and then mirrored
//! in the working set and the identity cache request handlers read.
//!
//! Runs on the writer task between batches (the caller settles the batch in flight first), so
//! an admin change never races a fold. This module never folds an event and never checks who
//! asked: admin authentication and agent-side rotation checks happen before the engine.

use std::sync::Arc;

use super::handle::{Responder, WriteError};
use super::writer::Writer;
use crate::ingest::verified::Identity;
use crate::store::{ChangeNotice, NewServer, ServerRecord, Snapshot, StoreError};

impl Writer {
    /// Registers a run of servers in one transaction and answers each.
    pub(super) async fn register_all(&mut self, registrations: Vec<(NewServer, Responder<()>)>) {
        let servers: Vec<NewServer> = registrations.iter().map(|(s, _)| s.clone()).collect();
        let results = match self.store.insert_servers(&servers).await {
            Ok(results) => results,
            Err(e) => {
                let error = WriteError::Storage(e.to_string());
                for (_, reply) in registrations {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        for ((server, reply), result) in registrations.into_iter().zip(results) {
            let answer = match result {
                Ok(()) => {
                    self.remember(server);
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => Err(WriteError::Conflict(server.server_id)),
                Err(e) => Err(WriteError::Storage(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }

    /// Adds a newly registered server to the working set and the identity cache.
    fn remember(&mut self, server: NewServer) {
        let record = ServerRecord {
            server_id: server.server_id.clone(),
            display_name: server.display_name,
            cluster_id: server.cluster_id,
            public_key: server.public_key,
            key_version: 1,
            is_verified: false,
            registered_at_ms: server.registered_at_ms,
            snapshot: Snapshot::unseen(),
        };
        if let Some(identity) = Identity::of(&record)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(record.server_id.clone(), Arc::new(identity));
        }
        tracing::info!(target: "vigil::audit", server_id = %record.server_id,
            added_by = %server.added_by, fingerprint = %server.fingerprint, "server registered");
        self.observers
            .metrics
            .server_moved(None, (&record.snapshot.status, &record.snapshot.confidence));
        self.observers
            .live
            .publish(crate::live::LiveEvent::Registration {
                server_id: record.server_id.clone(),
                cluster_id: record.cluster_id.clone(),
                at_ms: record.registered_at_ms,
            });
        self.servers
            .insert(record.server_id.clone(), Box::new(record));
    }

    /// Sets or clears the operator's verified flag.
    pub(super) async fn set_verified(
        &mut self,
        id: &str,
        verified: bool,
    ) -> Result<(), WriteError> {
        if !self.servers.contains_key(id) && self.store.is_shared() {
            // Registered on another host a moment ago.
            self.refresh(ChangeNotice::Server(id.to_owned())).await;
        }
        let Some(server) = self.servers.get_mut(id) else {
            return Err(WriteError::UnknownServer(id.to_owned()));
        };
        self.store
            .set_verified(id, verified)
            .await
            .map_err(|e| WriteError::Storage(e.to_string()))?;
        server.is_verified = verified;
        if let Some(identity) = Identity::of(server)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(id.to_owned(), Arc::new(identity));
        }
        tracing::info!(server_id = %id, verified, "verification changed");
        Ok(())
    }

    /// Rotates a server's key when the rotation names its current key version.
    pub(super) async fn rotate_key(
        &mut self,
        rotation: crate::store::KeyRotation,
    ) -> Result<u32, WriteError> {
        let id = rotation.server_id.clone();
        let Some(server) = self.servers.get_mut(&id) else {
            return Err(WriteError::UnknownServer(id));
        };
        let stale = |current: u32| {
            WriteError::KeyVersion(format!(
                "the rotation names key version {}, the server's current key is version {current}",
                rotation.expected_version
            ))
        };
        if server.key_version != rotation.expected_version {
            return Err(stale(server.key_version));
        }
        match self.store.rotate_key(&rotation).await {
            Ok(true) => {}
            Ok(false) => return Err(stale(server.key_version)),
            Err(e) => return Err(WriteError::Storage(e.to_string())),
        }
        server.key_version = rotation.expected_version + 1;
        server.public_key.clone_from(&rotation.public_key);
        if let Some(identity) = Identity::of(server)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(id.clone(), Arc::new(identity));
        }
        tracing::info!(target: "vigil::audit", server_id = %id, key_version = server.key_version,
            fingerprint = %rotation.fingerprint, by = %rotation.added_by, "key rotated");
        Ok(server.key_version)
    }
}
