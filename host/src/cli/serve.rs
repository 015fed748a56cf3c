//! `vigil serve`: run the host until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::Config;

/// Arguments of `vigil serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file. Without it, every default applies (SQLite `vigil.db`, the bundled
    /// default policy, 127.0.0.1:8080).
    #[arg(long, short, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding `[server] listen`.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Runs the host.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::from_toml("")?,
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if args.config.is_none() {
        tokio::spawn(crate::config::reload::ignore_hangups());
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    crate::serve(listener, config, args.config.as_deref(), shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
