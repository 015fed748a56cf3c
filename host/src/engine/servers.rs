//! Server admin inside the writer: registrations (consecutive ones share one transaction), the
//! operator's verified flag, key rotations and operator changes (edit, pause, resume, retire),
//! each written to storage first and then mirrored in the working set and the identity cache
//! request handlers read.
//!
//! Runs on the writer task between batches (the caller settles the batch in flight first), so
//! an admin change never races a fold. This module never folds an event and never checks who
//! asked: admin authentication and agent-side rotation checks happen before the engine.

use std::sync::Arc;

use super::handle::{Responder, ServerAction, ServerEdit, WriteError};
use super::writer::Writer;
use crate::ingest::verified::Identity;
use crate::store::{
    AuditRow, ChangeNotice, NewServer, ServerAdmin, ServerAdminUpdate, ServerRecord, Snapshot,
    StoreError,
};

/// Registrations written per transaction (a bulk import of a fleet).
const REGISTRATION_CHUNK: usize = 500;

impl Writer {
    /// Registers a run of servers in one transaction and answers each.
    pub(super) async fn register_all(&mut self, registrations: Vec<(NewServer, Responder<()>)>) {
        let (servers, replies): (Vec<NewServer>, Vec<Responder<()>>) =
            registrations.into_iter().unzip();
        for (reply, answer) in replies.into_iter().zip(self.register_many(servers).await) {
            let _ = reply.send(answer);
        }
    }

    /// Registers servers in one transaction per [`REGISTRATION_CHUNK`]; one answer per server,
    /// in order.
    pub(super) async fn register_many(
        &mut self,
        servers: Vec<NewServer>,
    ) -> Vec<Result<(), WriteError>> {
        let mut answers = Vec::with_capacity(servers.len());
        for chunk in servers.chunks(REGISTRATION_CHUNK) {
            let results = match self.store.insert_servers(chunk).await {
                Ok(results) => results,
                Err(e) => {
                    let error = WriteError::Storage(e.to_string());
                    answers.extend(chunk.iter().map(|_| Err(error.clone())));
                    continue;
                }
            };
            for (server, result) in chunk.iter().zip(results) {
                answers.push(match result {
                    Ok(()) => {
                        self.remember(server.clone());
                        Ok(())
                    }
                    Err(StoreError::Conflict(_)) => {
                        Err(WriteError::Conflict(server.server_id.clone()))
                    }
                    Err(e) => Err(WriteError::Storage(e.to_string())),
                });
            }
        }
        answers
    }

    /// Applies an operator's change: stored with its audit row, then mirrored in the working
    /// set and the deadline index.
    pub(super) async fn manage(&mut self, edit: ServerEdit) -> Result<ServerRecord, WriteError> {
        let id = edit.server_id.clone();
        if !self.servers.contains_key(&id) && self.store.is_shared() {
            self.refresh(ChangeNotice::Server(id.clone())).await;
        }
        let Some(server) = self.servers.get(&id) else {
            return Err(WriteError::UnknownServer(id));
        };
        if server.admin.retired_at_ms.is_some() {
            return Err(WriteError::Retired(id));
        }
        let (mut display_name, mut cluster_id) =
            (server.display_name.clone(), server.cluster_id.clone());
        let mut admin = server.admin.clone();
        let mut detail = serde_json::Map::new();
        match &edit.action {
            ServerAction::Edit {
                display_name: name,
                cluster_id: cluster,
                labels,
            } => {
                if let Some(name) = name {
                    detail.insert("display_name".into(), serde_json::json!(name));
                    display_name.clone_from(name);
                }
                if let Some(cluster) = cluster {
                    detail.insert("cluster_id".into(), serde_json::json!(cluster));
                    cluster_id.clone_from(cluster);
                }
                if let Some(labels) = labels {
                    detail.insert("labels".into(), serde_json::json!(labels));
                    admin.labels.clone_from(labels);
                }
            }
            ServerAction::Pause { reason } => {
                detail.insert("reason".into(), serde_json::json!(reason));
                admin.paused_at_ms = admin.paused_at_ms.or(Some(edit.at_ms));
            }
            ServerAction::Resume => admin.paused_at_ms = None,
            ServerAction::Schedule { schedule } => {
                detail.insert("schedule".into(), serde_json::json!(schedule));
                admin.schedule.clone_from(schedule);
            }
            ServerAction::Retire { reason } => {
                detail.insert("reason".into(), serde_json::json!(reason));
                admin.retired_at_ms = Some(edit.at_ms);
            }
        }
        let update = ServerAdminUpdate {
            server_id: id.clone(),
            display_name,
            cluster_id,
            admin,
            audit: AuditRow {
                server_id: id.clone(),
                at_ms: edit.at_ms,
                action: edit.action.name().to_owned(),
                actor: edit.actor.clone(),
                detail: serde_json::Value::Object(detail).to_string(),
            },
        };
        match self.store.update_server_admin(&update).await {
            Ok(true) => {}
            Ok(false) => return Err(WriteError::UnknownServer(id)),
            Err(e) => return Err(WriteError::Storage(e.to_string())),
        }
        let server = self.servers.get_mut(&id).expect("checked above");
        server.display_name = update.display_name;
        server.cluster_id = update.cluster_id;
        server.admin = update.admin;
        if !server.admin.is_quiet()
            && let Some(at) = server.snapshot.next_check_at_ms
        {
            // Resumed: the deadline is back (fired at once if it passed meanwhile).
            self.deadlines.insert((at, id.clone()));
        }
        tracing::info!(target: "vigil::audit", server_id = %id, action = edit.action.name(),
            actor = %edit.actor, "server changed by an operator");
        Ok(ServerRecord::clone(server))
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
            admin: ServerAdmin::default(),
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
