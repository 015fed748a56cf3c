//! Several hosts on one database (PostgreSQL): how this host's writer keeps its in-memory
//! snapshots true while other hosts write the same servers.
//!
//! Each batch first locks the rows of the servers it will fold ([`Store::lock_servers`], in the
//! transaction its commit ends) and adopts any stored record that differs from the cached one,
//! so a fold always starts from the latest committed snapshot and two hosts never fold the same
//! event twice or lose one. Due deadlines are locked the same way, so a tick another host
//! already fired is seen (the refreshed snapshot has moved its deadline) and fires once.
//! Admin changes made elsewhere (a new server, a verification, a rotated key) arrive as
//! [`ChangeNotice`]s (LISTEN/NOTIFY, plus a periodic resync) and update the identities request
//! handlers check. None of this runs on SQLite, where `is_shared()` is false.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::commit::Pending;
use super::handle::Command;
use super::writer::Writer;
use crate::ingest::verified::Identity;
use crate::store::{ChangeNotice, ServerRecord};

/// Pause after a failed lock before the writer goes on.
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(250);

impl Writer {
    /// Locks the servers the commands up to the next barrier will fold (plus, when `due_at` is
    /// given, the servers whose deadline is due) and adopts their stored records.
    pub(super) async fn lock_ahead(
        &mut self,
        commands: &VecDeque<Command>,
        due_at: Option<i64>,
        pending: &mut Pending,
    ) {
        let mut ids = BTreeSet::new();
        for command in commands {
            match command {
                Command::Heartbeat(hb, _) => {
                    ids.insert(hb.decoded.server_id.clone());
                }
                Command::Reject(notice, _) => {
                    if let Some(id) = notice
                        .claimed_server_id
                        .as_ref()
                        .filter(|id| self.servers.contains_key(*id))
                    {
                        ids.insert(id.clone());
                    }
                }
                Command::FailNextCommit | Command::Shadow(..) => {}
                Command::Register(..)
                | Command::SetVerified(..)
                | Command::RotateKey(..)
                | Command::RegisterMany(..)
                | Command::Manage(..)
                | Command::Activate(..)
                | Command::Refresh(_) => break,
            }
        }
        if let Some(now) = due_at {
            ids.extend(
                self.deadlines
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .map(|(_, id)| id.clone()),
            );
        }
        let ids: Vec<String> = ids.into_iter().collect();
        self.lock_and_adopt(&ids, pending).await;
    }

    /// Locks `ids` until the next commit and adopts their stored records; on failure the
    /// pending batch fails without a commit.
    pub(super) async fn lock_and_adopt(&mut self, ids: &[String], pending: &mut Pending) {
        match self.store.lock_servers(ids).await {
            Ok(records) => {
                for record in records {
                    self.adopt(record);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, servers = ids.len(), "locking the batch's servers failed");
                pending.lock_failure = Some(e);
                // The database is unreachable or contended: the batch fails, and a due deadline
                // must not turn the retry into a busy loop.
                tokio::time::sleep(LOCK_RETRY_PAUSE).await;
            }
        }
    }

    /// Re-reads what another host changed.
    pub(super) async fn refresh(&mut self, notice: ChangeNotice) {
        let records = match &notice {
            ChangeNotice::Server(id) => self
                .store
                .get_server(id)
                .await
                .map(|r| r.into_iter().collect()),
            ChangeNotice::Resync => self.store.load_servers().await,
            // Followed by the policy registry, not the writer.
            ChangeNotice::Policy(_) => return,
        };
        match records {
            Ok(records) => {
                for record in records {
                    self.adopt(record);
                }
            }
            Err(e) => tracing::warn!(error = %e, ?notice, "refreshing servers failed"),
        }
    }

    /// Replaces the cached record of a server with the stored one when they differ, keeping
    /// the deadline index and the identities in step.
    fn adopt(&mut self, record: ServerRecord) {
        let id = record.server_id.clone();
        if let Some(cached) = self.servers.get(&id) {
            if **cached == record {
                return;
            }
            if let Some(at) = cached.snapshot.next_check_at_ms {
                self.deadlines.remove(&(at, id.clone()));
            }
        }
        if let Some(at) = record.snapshot.next_check_at_ms {
            self.deadlines.insert((at, id.clone()));
        }
        if let Some(identity) = Identity::of(&record)
            && let Ok(mut cache) = self.identities.write()
        {
            let changed = cache.get(&id).is_none_or(|known| **known != identity);
            if changed {
                tracing::info!(server_id = %id, "identity changed on another host");
                cache.insert(id.clone(), Arc::new(identity));
            }
        }
        tracing::debug!(server_id = %id, "adopted the stored record");
        self.servers.insert(id, Box::new(record));
    }
}
