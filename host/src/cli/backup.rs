//! `vigil backup FILE` and `vigil restore FILE`: a consistent copy of a SQLite database taken
//! while the host runs, and putting one back.
//!
//! Both find the database the way `vigil serve` does (`--config`, `VIGIL_STORAGE__URL`).
//! Backup asks the store for `VACUUM INTO` (one read transaction: ingest goes on). Restore works
//! on files only, with the host stopped: it checks the copy opens as a Vigil database (running
//! any newer migrations on it), removes the old database's WAL files and renames the copy into
//! place, so a crash half-way leaves either the old database or the new one, never a mix.
//! PostgreSQL is backed up with `pg_dump` (README: Operations).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::store::Store;

/// `vigil backup FILE`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (must not exist).
    pub file: PathBuf,
    /// Configuration file naming the database (`[storage] url`).
    #[arg(long, short, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `vigil restore FILE`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A copy made by `vigil backup`.
    pub file: PathBuf,
    /// Configuration file naming the database to replace (`[storage] url`).
    #[arg(long, short, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Replace a database that exists (stop the host first).
    #[arg(long)]
    pub force: bool,
}

fn storage_url(config: Option<&Path>) -> anyhow::Result<String> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::from_toml("")?,
    };
    Ok(config.storage.url)
}

/// Runs `vigil backup`.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let url = storage_url(args.config.as_deref())?;
    anyhow::ensure!(
        !crate::config::is_postgres_url(&url),
        "a PostgreSQL database is backed up with pg_dump (README: Operations)"
    );
    anyhow::ensure!(
        !args.file.exists(),
        "{} exists; a backup never overwrites a file",
        args.file.display()
    );
    let store = Store::open(&url, 2)
        .await
        .with_context(|| format!("opening database {}", crate::redact(&url)))?;
    let started = std::time::Instant::now();
    let bytes = store
        .backup_into(&args.file)
        .await
        .with_context(|| format!("writing {}", args.file.display()))?;
    store.close().await;
    eprintln!(
        "Backed up {} to {} ({bytes} bytes) in {:.1} s.",
        crate::redact(&url),
        args.file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `vigil restore`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let url = storage_url(args.config.as_deref())?;
    anyhow::ensure!(
        !crate::config::is_postgres_url(&url),
        "a PostgreSQL database is restored with pg_restore (README: Operations)"
    );
    let target = crate::store::sqlite_path(&url)
        .with_context(|| format!("{} names no database file", crate::redact(&url)))?;
    anyhow::ensure!(args.file.is_file(), "{} is not a file", args.file.display());
    if target.exists() && !args.force {
        anyhow::bail!(
            "{} exists: stop the host, then run restore again with --force to replace it",
            target.display()
        );
    }
    // Work on a copy beside the target (same file system, so the final rename is atomic).
    let mut staging = target.clone().into_os_string();
    staging.push(".restoring");
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    std::fs::copy(&args.file, &staging)
        .with_context(|| format!("copying {} to {}", args.file.display(), staging.display()))?;
    let staging_url = format!("sqlite://{}", staging.display());
    let check = async {
        let store = Store::open(&staging_url, 2).await?;
        let servers = store.load_servers().await?.len();
        store.close().await;
        anyhow::Ok(servers)
    };
    let servers = match check.await {
        Ok(servers) => servers,
        Err(e) => {
            remove_with_sidecars(&staging);
            return Err(e.context(format!("{} is not a Vigil database", args.file.display())));
        }
    };
    // The old database's WAL must not be replayed into the new file.
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = target.clone().into_os_string();
        sidecar.push(suffix);
        match std::fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("removing {}", Path::new(&sidecar).display()));
            }
        }
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("moving the copy to {}", target.display()))?;
    eprintln!(
        "Restored {} into {} ({servers} servers).",
        args.file.display(),
        target.display()
    );
    Ok(())
}

/// Removes `path` and its `-wal`/`-shm` files, ignoring what is not there.
fn remove_with_sidecars(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = path.to_path_buf().into_os_string();
        sidecar.push(suffix);
        let _ = std::fs::remove_file(sidecar);
    }
}
