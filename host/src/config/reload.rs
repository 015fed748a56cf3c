//! Reloading the configuration file while the host runs.
//!
//! [`ConfigWatcher::start`] watches the file's folder (editors often replace a file by renaming
//! a new one over it, which a watch on the file itself would miss), waits for a burst of events
//! to settle, re-reads and validates the file, and on success puts it in force with
//! [`ConfigHandle::replace`], logging each key that changed. An invalid edit is refused with a
//! log line naming the problem; the configuration in force stays. Readers take
//! [`ConfigHandle::current`] per request; tasks that must react to a key (the policy, limits)
//! use [`ConfigHandle::subscribe`]. This module never decides what a key means.
//!
//! `SIGHUP` reloads too, like an edit, but always re-reads (even an unchanged file: the
//! environment's `VIGIL_*__*` overrides are applied again). Without a config file `vigil
//! serve` logs that it has nothing to reload; SIGHUP never ends the process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Config, ConfigHandle};

/// How long the file must be quiet before it is re-read: editors write in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keys read once at start-up: a change is put in the handle but needs a restart to act.
const RESTART_KEYS: &[&str] = &[
    "server.listen",
    "server.header_read_timeout_seconds",
    "server.body_read_timeout_seconds",
    "server.max_connections",
    "server.max_connections_per_ip",
    "server.shutdown_grace_seconds",
    "log.format",
    "storage.",
    "ingest.",
];

/// A running watch on a configuration file. Dropping it stops the watch.
#[derive(Debug)]
pub struct ConfigWatcher {
    // Kept for its Drop: dropping the watcher stops the OS watch and closes the channel.
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
    counts: Arc<ReloadCounts>,
}

/// How many edits were put in force or refused (atomics: written by the reload task, read by
/// anyone).
#[derive(Debug, Default)]
struct ReloadCounts {
    applied: AtomicU64,
    refused: AtomicU64,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigWatcher {
    /// Watches `path` and reloads `handle` from it on every valid edit. Must be called inside a
    /// tokio runtime. The file is expected to hold the configuration now in force.
    pub fn start(path: &Path, handle: ConfigHandle) -> anyhow::Result<Self> {
        let path = std::path::absolute(path)
            .with_context(|| format!("resolving config path {}", path.display()))?;
        let folder = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path.file_name().map(ToOwned::to_owned);
        // Unbounded: the notify callback runs on its own thread and must not block; events are
        // coalesced by the debounce below, so the queue stays short.
        let (tx, rx) = mpsc::unbounded_channel::<Trigger>();
        let hangups = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    if event.kind.is_access() {
                        return;
                    }
                    if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                        let _ = tx.send(Trigger::Edit);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "config file watch error"),
            })
            .context("starting the config file watcher")?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", folder.display()))?;
        let last_text = std::fs::read_to_string(&path).unwrap_or_default();
        tracing::info!(path = %path.display(), "watching the config file for changes");
        let counts = Arc::new(ReloadCounts::default());
        let loop_counts = counts.clone();
        // Registered here, before `start` returns (and the host says it listens): a stream made
        // later in the task would miss a SIGHUP sent in between.
        #[cfg(unix)]
        let hangup_signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let task = tokio::spawn(async move {
            #[cfg(unix)]
            let hangup = forward_hangups(hangups, hangup_signal);
            #[cfg(not(unix))]
            let hangup = forward_hangups(hangups);
            tokio::select! {
                () = reload_loop(path, handle, rx, last_text, loop_counts) => {},
                () = hangup => {},
            }
        });
        Ok(Self {
            _watcher: watcher,
            task,
            counts,
        })
    }

    /// Edits put in force since the watch started.
    pub fn applied(&self) -> u64 {
        self.counts.applied.load(Ordering::Relaxed)
    }

    /// Edits refused (unreadable or invalid) since the watch started.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }
}

/// What asks for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The file (or its folder entry) changed.
    Edit,
    /// `SIGHUP`: re-read even if the text is unchanged.
    Hangup,
}

/// Sends a [`Trigger::Hangup`] for every SIGHUP (never returns while the channel is open).
#[cfg(unix)]
async fn forward_hangups(
    tx: mpsc::UnboundedSender<Trigger>,
    signal: std::io::Result<tokio::signal::unix::Signal>,
) {
    {
        match signal {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config file");
                    if tx.send(Trigger::Hangup).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    drop(tx);
    std::future::pending::<()>().await;
}

/// Elsewhere there is no SIGHUP: nothing to forward.
#[cfg(not(unix))]
async fn forward_hangups(tx: mpsc::UnboundedSender<Trigger>) {
    drop(tx);
    std::future::pending::<()>().await;
}

/// Without a config file: SIGHUP is logged and otherwise ignored (its default would end the
/// process). Runs until the process ends.
pub async fn ignore_hangups() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: no config file (--config) to reload; nothing changed");
            }
        }
    }
    std::future::pending::<()>().await;
}

async fn reload_loop(
    path: PathBuf,
    handle: ConfigHandle,
    mut events: mpsc::UnboundedReceiver<Trigger>,
    mut last_text: String,
    counts: Arc<ReloadCounts>,
) {
    while let Some(first) = events.recv().await {
        let mut forced = first == Trigger::Hangup;
        // Debounce: keep waiting while events keep coming.
        while let Ok(Some(trigger)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {
            forced |= trigger == Trigger::Hangup;
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "config reload refused: cannot read the file; the previous configuration stays in force");
                counts.refused.fetch_add(1, Ordering::Relaxed);
                handle.reload_refused();
                continue;
            }
        };
        if text == last_text && !forced {
            continue;
        }
        match Config::from_toml(&text) {
            Ok(config) => {
                let changed = changed_keys(&last_text, &text);
                for (key, value) in &changed {
                    let restart = RESTART_KEYS.iter().any(|k| key.starts_with(k));
                    tracing::info!(
                        target: "vigil::flags",
                        %key,
                        value = %value,
                        needs_restart = restart,
                        "config key changed"
                    );
                }
                handle.replace(config);
                tracing::info!(path = %path.display(), keys = changed.len(), "config reloaded");
                last_text = text;
                counts.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                handle.reload_refused();
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                    "config reload refused: invalid configuration; the previous configuration stays in force");
            }
        }
    }
}

/// The dotted keys whose value differs between two TOML texts, with the new value (`<removed>`
/// when gone; secrets shown as `<redacted>`).
pub fn changed_keys(old: &str, new: &str) -> Vec<(String, String)> {
    let flat = |text: &str| {
        let mut out = BTreeMap::new();
        if let Ok(table) = text.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(table), &mut out);
        }
        out
    };
    let (old, new) = (flat(old), flat(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let shown = match new.get(k) {
                None => "<removed>".to_owned(),
                Some(_) if k.contains("token") || k.contains("secret") || k.ends_with("_key") => {
                    "<redacted>".to_owned()
                }
                Some(v) => v.to_string(),
            };
            (k.clone(), shown)
        })
        .collect()
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_changes_and_hides_secrets() {
        let old = "[trust]\nrequire_verified = false\n[admin]\ntoken = \"a\"\n";
        let new =
            "[trust]\nrequire_verified = true\nregistration = \"open\"\n[admin]\ntoken = \"b\"\n";
        let changed = changed_keys(old, new);
        assert_eq!(
            changed,
            vec![
                ("admin.token".to_owned(), "<redacted>".to_owned()),
                ("trust.registration".to_owned(), "\"open\"".to_owned()),
                ("trust.require_verified".to_owned(), "true".to_owned()),
            ]
        );
        assert!(changed_keys(old, old).is_empty());
    }
}
