//! The alert delivery task: outbox → routes → sinks, durably.
//!
//! Each pass (1) routes every outbox row not yet routed: muted rows (a maintenance window of
//! the configuration or of the admin API, `POST /v1/admin/maintenance`) and
//! duplicates (same server and kind pending or delivered to that sink within the dedup window)
//! get a terminal delivery row, the rest a `pending` one; (2) attempts every due `pending`
//! delivery, scheduling a retry with exponential backoff on failure and giving up on alerts
//! older than `give_up_after_seconds`. All state is in the database, so a restart resumes
//! exactly where the previous host stopped. The writer wakes the task after each commit that
//! wrote alerts; otherwise it polls every `poll_interval_ms`. It stops when the engine stops
//! (the wake-up channel closes). Deliveries are attempted one at a time, in due order.
//!
//! The outbox is an operations table (not history) kept by the store (`store/ops/outbox.rs`);
//! this room decides routes, mutes, retries and sends, and never sees SQL. With several hosts on
//! one PostgreSQL database every host runs a dispatcher: routing claims a row, and each delivery
//! attempt first claims the delivery with a lease, so one host at a time sends it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AlertsConfig;
use super::sinks;
use crate::clock::now_ms;
use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::store::{AlertRouting, DueDelivery, Store, StoreError};

/// Rows handled per pass and query.
const PAGE: i64 = 200;
/// How long past its request timeout a claimed delivery attempt stays claimed.
const LEASE_MARGIN_MS: i64 = 5_000;

/// Starts the dispatcher; it ends when every sender of `wake` is dropped.
pub fn spawn(
    store: Store,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    wake: mpsc::Receiver<()>,
) -> JoinHandle<()> {
    let dispatcher = Dispatcher {
        store,
        config,
        metrics,
        sender: sinks::Sender::new(),
    };
    tokio::spawn(dispatcher.run(wake))
}

struct Dispatcher {
    store: Store,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    sender: sinks::Sender,
}

/// The retry delay after `attempts` failed attempts: initial × 2^(attempts−1), capped.
pub fn backoff_ms(config: &AlertsConfig, attempts: u32) -> u64 {
    let factor = 1u64 << attempts.saturating_sub(1).min(32);
    config
        .retry_initial_ms
        .saturating_mul(factor)
        .min(config.retry_max_ms)
}

impl Dispatcher {
    async fn run(self, mut wake: mpsc::Receiver<()>) {
        loop {
            let config = self.config.current();
            let mut wait = Duration::from_millis(config.alerts.poll_interval_ms);
            match self.pass(&config.alerts).await {
                Ok(Some(next_at)) => {
                    let until = u64::try_from(next_at - now_ms()).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(until));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "alert dispatch pass failed; retrying"),
            }
            tokio::select! {
                woken = wake.recv() => if woken.is_none() { break },
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("alert dispatcher stopped");
    }

    /// Routes new alerts, attempts due deliveries; returns when the next delivery is due.
    async fn pass(&self, config: &AlertsConfig) -> Result<Option<i64>, StoreError> {
        self.route(config).await?;
        self.deliver_due(config).await?;
        let pending = self.store.pending_deliveries().await?;
        self.metrics
            .set_queue_depth("alert_outbox", usize::try_from(pending.count).unwrap_or(0));
        Ok(pending.next_at_ms)
    }

    async fn route(&self, config: &AlertsConfig) -> Result<(), StoreError> {
        let alerts = self.store.unrouted_alerts(PAGE).await?;
        // Windows set through the admin API, beside the configured ones.
        let oldest = alerts.iter().map(|a| a.at_ms).min().unwrap_or(i64::MAX);
        let windows = if alerts.is_empty() {
            Vec::new()
        } else {
            self.store.maintenance_windows(oldest, 10_000).await?
        };
        let window_ms =
            i64::try_from(config.dedup_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        for alert in &alerts {
            let cluster_id = alert.cluster_id.as_deref();
            let sinks: BTreeSet<&str> = config
                .routes
                .iter()
                .filter(|r| r.matches(&alert.kind, &alert.severity, cluster_id))
                .map(|r| r.sink.as_str())
                .collect();
            let sinks: Vec<&str> = sinks.into_iter().collect();
            let window = config
                .maintenance
                .iter()
                .find(|w| w.mutes(&alert.server_id, cluster_id, alert.at_ms))
                .map(|w| w.reason.as_deref());
            let window = window.or_else(|| {
                windows
                    .iter()
                    .find(|w| w.mutes(&alert.server_id, cluster_id, alert.at_ms))
                    .map(|w| w.reason.as_deref())
            });
            let routing = AlertRouting {
                alert,
                sinks: &sinks,
                muted: window.is_some(),
                dedup_after_ms: alert.at_ms.saturating_sub(window_ms),
                now_ms: now_ms(),
            };
            // `None`: another dispatcher routed it first.
            let Some(states) = self.store.route_alert(&routing).await? else {
                continue;
            };
            for (sink, state) in states {
                if state != "pending" {
                    self.metrics.delivery(sink, state);
                    tracing::info!(
                        alert_id = alert.id, server_id = %alert.server_id, kind = %alert.kind,
                        sink, state,
                        reason = window.flatten().unwrap_or(""),
                        "alert not sent"
                    );
                }
            }
        }
        Ok(())
    }

    async fn deliver_due(&self, config: &AlertsConfig) -> Result<(), StoreError> {
        let due = self.store.due_deliveries(now_ms(), PAGE).await?;
        let give_up_ms =
            i64::try_from(config.give_up_after_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let timeout = Duration::from_millis(config.request_timeout_ms);
        for DueDelivery {
            delivery_id,
            sink: sink_name,
            attempts,
            due_at_ms,
            alert,
        } in due
        {
            // Claim the attempt: move its due time past the attempt (a lease). Another host's
            // dispatcher that read the same row finds it moved and skips it; if this host
            // dies mid-attempt, the lease expires and the delivery is retried.
            let lease_ms = i64::try_from(config.request_timeout_ms)
                .unwrap_or(i64::MAX)
                .saturating_add(LEASE_MARGIN_MS);
            let claimed = self
                .store
                .claim_delivery(delivery_id, due_at_ms, now_ms().saturating_add(lease_ms))
                .await?;
            if !claimed {
                continue;
            }
            let age = now_ms() - alert.at_ms;
            let sink = config.sinks.iter().find(|s| s.name == sink_name);
            let outcome = match sink {
                None => Err("the sink is no longer configured".to_owned()),
                Some(_) if age > give_up_ms => Err(format!(
                    "gave up after {} attempts: older than {} s",
                    attempts, config.give_up_after_seconds
                )),
                Some(sink) => self.sender.send(sink, &alert, timeout).await,
            };
            let attempts = attempts + 1;
            let now = now_ms();
            match outcome {
                Ok(()) => {
                    self.store.delivery_sent(delivery_id, attempts, now).await?;
                    self.metrics.delivery(&sink_name, "delivered");
                    tracing::info!(alert_id = alert.id, kind = %alert.kind, server_id = %alert.server_id, sink = %sink_name, attempts, "alert delivered");
                }
                Err(reason) if sink.is_none() || age > give_up_ms => {
                    self.store
                        .delivery_failed(delivery_id, now, &reason)
                        .await?;
                    self.metrics.delivery(&sink_name, "failed");
                    tracing::error!(alert_id = alert.id, kind = %alert.kind, server_id = %alert.server_id, sink = %sink_name, %reason, "alert delivery given up");
                }
                Err(reason) => {
                    let delay = backoff_ms(config, u32::try_from(attempts).unwrap_or(u32::MAX));
                    let next = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                    self.store
                        .delivery_retry(delivery_id, attempts, next, &reason)
                        .await?;
                    self.metrics.delivery(&sink_name, "retry");
                    tracing::warn!(alert_id = alert.id, sink = %sink_name, attempts, retry_in_ms = delay, %reason, "alert delivery failed; will retry");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = AlertsConfig {
            retry_initial_ms: 100,
            retry_max_ms: 1_000,
            ..AlertsConfig::default()
        };
        let delays: Vec<u64> = (1..=6).map(|a| backoff_ms(&c, a)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
