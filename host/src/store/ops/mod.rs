//! The operations tables: admin API keys, ingest tokens, the host key, pending commands and the alert outbox.
//!
//! They are not history (rows are updated as work progresses), and their few statements are
//! written once in SQL both backends accept, as [`Store`](super::Store) methods. The domain
//! logic stays with its room: token generation and hashing in `trust/admin_keys.rs`, signing in
//! `commands.rs`, routing and sending in `alerts/dispatch.rs`. Nothing here decides; it records.

mod admin_keys;
mod commands;
mod host_key;
mod ingest_tokens;
mod outbox;
