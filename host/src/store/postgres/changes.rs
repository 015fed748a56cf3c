//! Change notices between hosts sharing one database: LISTEN/NOTIFY on `vigil_changes`.
//!
//! Admin changes (register, verify, rotate a key, activate a policy) `NOTIFY` in (or right
//! after) their transaction; [`subscribe`] turns the notifications into [`ChangeNotice`]s, with
//! a periodic [`ChangeNotice::Resync`] as the fallback for anything missed. The same periodic
//! task keeps the monthly `heartbeats` partitions ahead (`partitions.rs`).

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Transaction};
use tokio::sync::mpsc;

use super::partitions;
use crate::store::{ChangeNotice, StoreError};

/// The channel admin changes are announced on.
pub(super) const CHANGES_CHANNEL: &str = "vigil_changes";
/// How often every host re-reads all identities in case a notification was lost.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// A `vigil_changes` payload: `server:<id>`, `policy:<digest>`; anything else re-reads all.
fn parse_notice(payload: &str) -> ChangeNotice {
    if let Some(id) = payload.strip_prefix("server:") {
        ChangeNotice::Server(id.to_owned())
    } else if let Some(digest) = payload.strip_prefix("policy:") {
        ChangeNotice::Policy(digest.to_owned())
    } else {
        ChangeNotice::Resync
    }
}

/// Announces that `server_id`'s row changed, when `tx` commits.
pub(super) async fn notify_server(
    tx: &mut Transaction<'static, Postgres>,
    server_id: &str,
) -> Result<(), StoreError> {
    notify(tx, &format!("server:{server_id}")).await
}

/// Sends `payload` on the channel when `tx` commits.
pub(super) async fn notify(
    tx: &mut Transaction<'static, Postgres>,
    payload: &str,
) -> Result<(), StoreError> {
    // Delivered to every listening host when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Follows `vigil_changes` on a connection of its own; ends when the receiver is dropped.
pub(super) async fn subscribe(pool: &PgPool) -> Result<mpsc::Receiver<ChangeNotice>, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    let (tx, rx) = mpsc::channel(1024);
    let notices = tx.clone();
    tokio::spawn(async move {
        loop {
            let notice = tokio::select! {
                () = notices.closed() => break,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => parse_notice(n.payload()),
                    // The connection dropped and notifications may be lost: re-read all.
                    Ok(None) => ChangeNotice::Resync,
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        ChangeNotice::Resync
                    }
                },
            };
            if notices.send(notice).await.is_err() {
                break;
            }
        }
    });
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        let mut partition_check = tokio::time::interval(partitions::PARTITIONS_EVERY);
        resync.tick().await;
        partition_check.tick().await;
        loop {
            tokio::select! {
                () = tx.closed() => break,
                _ = resync.tick() => {
                    if tx.send(ChangeNotice::Resync).await.is_err() {
                        break;
                    }
                }
                _ = partition_check.tick() => {
                    if let Err(e) = partitions::ensure(&pool, crate::clock::now_ms()).await {
                        tracing::warn!(error = %e, "partition maintenance failed");
                    }
                }
            }
        }
    });
    Ok(rx)
}
