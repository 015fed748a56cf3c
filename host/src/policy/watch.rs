//! Background shipping paths: the watched folder (`[policy] dir`), the config pin
//! (`[policy] active`) and the follower of what other hosts sharing the database change.
//!
//! The folder watcher takes `NAME-VERSION.wasm` files (and `NAME-VERSION.wasm.sig` beside
//! them), waits until a file has been quiet for [`QUIET`] (a copy in progress sends a stream of
//! events; a half-written file would fail validation anyway and be retried on its next event),
//! then validates, stores and — unless a version is pinned — activates it. A file that fails is
//! reported (log + `GET /v1/policies`) and ignored. Every task holds only a weak handle, so
//! none keeps a stopping host alive. This module never validates or activates by itself: it
//! calls the catalog and the registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::catalog::{PolicyCatalog, RegistryError, Validated};
use super::digest_of;
use super::registry::{PolicyRegistry, WeakRegistry};
use crate::store::ChangeNotice;

/// How long a file must be quiet before it is read.
pub const QUIET: Duration = Duration::from_millis(150);

/// The `.wasm` a watched path stands for (a `.sig` stands for its component).
fn component_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    if let Some(wasm) = name.strip_suffix(".sig") {
        return wasm.ends_with(".wasm").then(|| path.with_file_name(wasm));
    }
    name.ends_with(".wasm").then(|| path.to_path_buf())
}

fn signature_of(path: &Path) -> Option<String> {
    let mut sig = path.as_os_str().to_owned();
    sig.push(".sig");
    std::fs::read_to_string(PathBuf::from(sig)).ok()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Validates and stores one dropped file (its name must be `NAME-VERSION.wasm` as
/// `describe()` says). Needs no engine: the folder is scanned before the engine starts.
pub async fn register_file(
    catalog: &PolicyCatalog,
    path: &Path,
) -> Result<Validated, RegistryError> {
    let file = file_name(path);
    let source = format!("watched-folder:{file}");
    let bytes = std::fs::read(path).map_err(|e| {
        RegistryError::Invalid(super::PolicyError::Load(format!("reading {file}: {e}")))
    })?;
    let digest = digest_of(&bytes);
    let signature = signature_of(path);
    let validated = catalog
        .register(bytes, signature.as_deref(), &source)
        .await?;
    let d = validated.policy.description();
    let expected = format!("{}-{}", d.name, d.version);
    let stem = file.strip_suffix(".wasm").unwrap_or(&file);
    if stem != expected {
        let e = RegistryError::FileName {
            file: file.clone(),
            expected: format!("{expected}.wasm"),
        };
        catalog.refuse(&source, &digest, &e);
        return Err(e);
    }
    Ok(validated)
}

/// Validates and stores one dropped file; activates it when `activate`. Returns its digest.
pub async fn ship_file(
    registry: &PolicyRegistry,
    path: &Path,
    activate: bool,
) -> Result<String, RegistryError> {
    let validated = register_file(registry.catalog(), path).await?;
    if activate {
        registry
            .activate_loaded(
                validated.policy.clone(),
                "watched-folder",
                &format!("{} dropped into the policy folder", file_name(path)),
            )
            .await?;
    }
    Ok(validated.policy.digest().to_owned())
}

/// Registers (without activating) every valid file already in the folder.
pub async fn scan(catalog: &PolicyCatalog, dir: &Path) -> HashMap<PathBuf, String> {
    let mut seen = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "policy folder is not readable");
        return seen;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    for path in paths {
        if let Ok(validated) = register_file(catalog, &path).await {
            seen.insert(path, validated.policy.digest().to_owned());
        }
    }
    seen
}

/// Starts watching `dir`. Files already there were registered by [`scan`] (`seen`).
pub fn spawn_folder_watcher(
    registry: &PolicyRegistry,
    dir: PathBuf,
    mut seen: HashMap<PathBuf, String>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    // Unbounded: notify's callback runs on its own thread and must not block; events are
    // small and the task drains them continuously.
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Modify(_)
                | EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        if relevant {
            for path in event.paths {
                if let Some(wasm) = component_path(&path) {
                    let _ = tx.send(wasm);
                }
            }
        }
    })
    .context("starting the policy folder watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching policy folder {}", dir.display()))?;
    let weak: WeakRegistry = registry.downgrade();
    tracing::info!(dir = %dir.display(), "watching the policy folder");
    tokio::spawn(async move {
        // Keep the watcher alive as long as the task.
        let _watcher = watcher;
        let mut quiet_since: HashMap<PathBuf, Instant> = HashMap::new();
        loop {
            let wait = if quiet_since.is_empty() {
                Duration::from_secs(3600)
            } else {
                QUIET / 3
            };
            tokio::select! {
                received = rx.recv() => match received {
                    Some(path) => { quiet_since.insert(path, Instant::now()); }
                    None => break,
                },
                () = tokio::time::sleep(wait) => {}
            }
            let ready: Vec<PathBuf> = quiet_since
                .iter()
                .filter(|(_, at)| at.elapsed() >= QUIET)
                .map(|(p, _)| p.clone())
                .collect();
            if ready.is_empty() {
                continue;
            }
            let Some(registry) = weak.upgrade() else {
                break;
            };
            for path in ready {
                quiet_since.remove(&path);
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                if bytes.is_empty() {
                    continue;
                }
                let digest = digest_of(&bytes);
                if seen.get(&path) == Some(&digest) && signature_of(&path).is_none() {
                    continue;
                }
                let pinned = registry
                    .catalog()
                    .config()
                    .current()
                    .policy
                    .active
                    .is_some();
                match ship_file(&registry, &path, !pinned).await {
                    Ok(digest) => {
                        seen.insert(path, digest);
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "policy file ignored")
                    }
                }
            }
        }
        tracing::debug!("policy folder watcher stopped");
    });
    Ok(())
}

/// Follows `[policy] active`: when the pin changes, the pinned version is activated.
pub fn spawn_pin_follower(registry: &PolicyRegistry) {
    let mut changes = registry.catalog().config().subscribe();
    let mut pinned = changes.borrow_and_update().policy.active.clone();
    let weak = registry.downgrade();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let pin = changes.borrow_and_update().policy.active.clone();
            if pin == pinned {
                continue;
            }
            pinned = pin.clone();
            let (Some(pin), Some(registry)) = (pin, weak.upgrade()) else {
                continue;
            };
            match registry
                .activate(&pin, "config", &format!("[policy] active = {pin:?}"))
                .await
            {
                Ok(outcome) => {
                    tracing::info!(%pin, active = %outcome.active, "pinned policy active")
                }
                Err(e) => tracing::error!(%pin, error = %e, "cannot activate the pinned policy"),
            }
        }
    });
}

/// Follows what other hosts sharing the database change (PostgreSQL): a server's row
/// (registered, verified, key rotated) is re-read by the writer; an activation is followed
/// here ([`PolicyRegistry::follow`]). On a periodic or reconnect [`ChangeNotice::Resync`] the
/// writer re-reads every server and the active version is compared with the activation log, so
/// a missed notification is repaired within one resync period. Ends with the host.
pub fn spawn_change_follower(registry: &PolicyRegistry, mut changes: mpsc::Receiver<ChangeNotice>) {
    let weak = registry.downgrade();
    tokio::spawn(async move {
        while let Some(notice) = changes.recv().await {
            let Some(registry) = weak.upgrade() else {
                break;
            };
            let wanted = match &notice {
                ChangeNotice::Policy(digest) => Some(digest.clone()),
                ChangeNotice::Resync => {
                    match registry.catalog().store().active_policy_digest().await {
                        Ok(active) => active,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the active policy");
                            None
                        }
                    }
                }
                ChangeNotice::Server(_) => None,
            };
            if !matches!(notice, ChangeNotice::Policy(_)) {
                registry.activator().refresh(notice).await;
            }
            if let Some(digest) = wanted {
                match registry.follow(&digest).await {
                    Ok(outcome) if outcome.changed => tracing::info!(
                        policy = %outcome.active, rebuilds = outcome.rebuilds,
                        "following the policy activated on another host"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(
                        policy = %digest, error = %e,
                        "cannot follow the policy activated on another host"
                    ),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_files_stand_for_their_component() {
        let p = Path::new("/p/default-1.0.0.wasm.sig");
        assert_eq!(
            component_path(p),
            Some(PathBuf::from("/p/default-1.0.0.wasm"))
        );
        assert_eq!(
            component_path(Path::new("/p/x.wasm")),
            Some(PathBuf::from("/p/x.wasm"))
        );
        assert_eq!(component_path(Path::new("/p/.x.wasm.swp")), None);
        assert_eq!(component_path(Path::new("/p/readme.txt")), None);
    }
}
