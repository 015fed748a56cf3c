//! Live events: what the writer publishes after each commit for `GET /v1/events` (SSE) and
//! `GET /v1/servers/{id}/observe` (WebSocket).
//!
//! A `tokio::sync::broadcast` channel because every subscriber must see every event and a
//! sender never waits: a subscriber that falls more than the buffer behind gets `Lagged` and is
//! dropped by its handler (it can resume from the stored transition log with `Last-Event-ID`).
//! Publishing happens only after the batch is durably committed, so nothing seen live can
//! later vanish. This module never reads the database.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::store::TransitionRow;

/// The derived state a heartbeat produced, as observers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssessmentView {
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// `green`, `yellow` or `red`.
    pub confidence: String,
    /// 0–100.
    pub uptime_percent: f64,
    /// 0–100.
    pub quality_score: f64,
    /// Badges.
    pub badges: Vec<String>,
    /// `sha256:<hex>` of the policy that computed it.
    pub policy_digest: String,
}

/// One event on the live bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A committed status/confidence transition (`id` is its row id in the transition log).
    Transition {
        /// Row id in `status_transitions` (the SSE event id).
        id: i64,
        /// The server's cluster.
        cluster_id: Option<String>,
        /// The transition.
        #[serde(flatten)]
        transition: TransitionRow,
    },
    /// A server was registered.
    Registration {
        /// The server.
        server_id: String,
        /// Its cluster.
        cluster_id: Option<String>,
        /// When.
        at_ms: i64,
    },
    /// A policy version became active.
    PolicyActivation {
        /// When.
        at_ms: i64,
        /// Previous digest.
        from_digest: Option<String>,
        /// New digest.
        to_digest: String,
        /// Why.
        reason: String,
    },
    /// An accepted, committed heartbeat and the assessment it produced.
    Heartbeat {
        /// The server.
        server_id: String,
        /// Its cluster.
        cluster_id: Option<String>,
        /// The server's event sequence number.
        seq: i64,
        /// Host receive time.
        received_at_ms: i64,
        /// The heartbeat body as received.
        heartbeat: serde_json::Value,
        /// The derived state after folding it.
        assessment: AssessmentView,
    },
}

impl LiveEvent {
    /// The server the event is about, if any.
    pub fn server_id(&self) -> Option<&str> {
        match self {
            LiveEvent::Transition { transition, .. } => Some(&transition.server_id),
            LiveEvent::Registration { server_id, .. } | LiveEvent::Heartbeat { server_id, .. } => {
                Some(server_id)
            }
            LiveEvent::PolicyActivation { .. } => None,
        }
    }

    /// The cluster the event is about, if any.
    pub fn cluster_id(&self) -> Option<&str> {
        match self {
            LiveEvent::Transition { cluster_id, .. }
            | LiveEvent::Registration { cluster_id, .. }
            | LiveEvent::Heartbeat { cluster_id, .. } => cluster_id.as_deref(),
            LiveEvent::PolicyActivation { .. } => None,
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Transition { .. } => "transition",
            LiveEvent::Registration { .. } => "registration",
            LiveEvent::PolicyActivation { .. } => "policy_activation",
            LiveEvent::Heartbeat { .. } => "heartbeat",
        }
    }
}

pub use crate::config::LiveConfig;

/// The live bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Set once at shutdown so open streams end and graceful shutdown can finish. A `watch`
    /// because every stream waits on one value that changes once.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// One permit per open `/v1/events` stream (`[live] max_event_streams`).
    event_streams: Arc<tokio::sync::Semaphore>,
    /// One permit per open observe WebSocket (`[live] max_observers`).
    observers: Arc<tokio::sync::Semaphore>,
}

/// Which kind of live subscriber asks for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscriber {
    /// A `GET /v1/events` stream.
    EventStream,
    /// A `GET /v1/servers/{id}/observe` WebSocket.
    Observer,
}

impl LiveHub {
    /// A bus that keeps `[live] buffer` events for slow subscribers before they lag, with
    /// `[live]`'s caps on open subscribers (read once: changing them needs a restart).
    pub fn new(config: &crate::config::LiveConfig) -> Self {
        let (tx, _) = broadcast::channel(config.buffer.max(1));
        let (closing, _) = tokio::sync::watch::channel(false);
        Self {
            tx,
            closing: Arc::new(closing),
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            observers: Arc::new(tokio::sync::Semaphore::new(config.max_observers)),
        }
    }

    /// A slot for one more subscriber of `kind`, held for as long as it stays open, or `None`
    /// when the cap is reached (the caller answers 503: a full host never queues subscribers).
    pub fn slot(&self, kind: Subscriber) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = match kind {
            Subscriber::EventStream => &self.event_streams,
            Subscriber::Observer => &self.observers,
        };
        slots.clone().try_acquire_owned().ok()
    }

    /// Ends every open stream (called when the host begins shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`LiveHub::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // An error means the hub is gone, which is a close too.
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    /// Publishes an event; never blocks, and does nothing without subscribers.
    pub fn publish(&self, event: LiveEvent) {
        // `Err` only means nobody listens right now.
        let _ = self.tx.send(Arc::new(event));
    }

    /// Whether anyone listens (lets the writer skip building events nobody reads).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new subscriber that sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }
}
