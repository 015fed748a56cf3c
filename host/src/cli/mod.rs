//! The `vigil` command line: one file per subcommand group. `main` only parses and calls
//! [`run`].
//!
//! This module also holds what the groups share to talk to a host: [`AdminTarget`] (the
//! `--url`/`--token` flags), the one admin request builder (`AdminClient`) and
//! `read_response`. It never decides what a subcommand does.

pub mod admin;
pub mod agent;
pub mod backup;
pub mod bench;
pub mod config;
pub mod keys;
pub mod output;
pub mod policy;
pub mod rotate;
pub mod run;
pub mod send;
pub mod serve;
pub mod server;

use crate::config::LogFormat;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Vigil: signed heartbeats scored by WebAssembly policies.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about,
    after_help = "Exit codes:\n  0  success\n  1  failure (the error is printed; `vigil config check`: a file has errors)\n  2  usage error (unknown subcommand or flag, bad argument)\n  N  `vigil run`: the job's own exit status (the wrapper never adds one of its own)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host.
    Serve(serve::ServeArgs),
    /// Create an ed25519 key pair for an agent.
    Keygen(keys::KeygenArgs),
    /// Sign and post one heartbeat.
    Send(send::SendArgs),
    /// The agent daemon: heartbeats with system metrics, allow-listed commands, key rotation.
    Agent(agent::AgentArgs),
    /// Run a job between a signed `start` and a signed `success`/`fail` report (cron wrapper);
    /// exits with the job's status.
    Run(run::RunArgs),
    /// Load-test a host: pre-signed heartbeats over keep-alive connections.
    Bench(bench::BenchArgs),
    /// Move this agent to a new key (a request signed by the current key).
    RotateKey(rotate::RotateKeyArgs),
    /// Manage servers through the admin API.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Manage admin API keys (directly in the database).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Ship, list, roll back and sign policy versions.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Copy the SQLite database while the host runs (`VACUUM INTO`).
    Backup(backup::BackupArgs),
    /// Put a backup in place of the SQLite database (host stopped).
    Restore(backup::RestoreArgs),
    /// Check configuration files, show the effective configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (`vigil completions bash > /etc/bash_completion.d/vigil`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `vigil man > vigil.1 && man ./vigil.1`.
    Man,
}

/// The log format: `VIGIL_LOG_FORMAT` (`json` or `text`) when set, else `[log] format` of the
/// configuration `vigil serve` will load (file and `VIGIL_…` overrides; an invalid one is
/// reported by `serve` itself), else text.
fn log_format(cli: &Cli) -> LogFormat {
    match std::env::var("VIGIL_LOG_FORMAT").as_deref() {
        Ok("json") => return LogFormat::Json,
        Ok("text") => return LogFormat::Text,
        _ => {}
    }
    match &cli.command {
        Command::Serve(args) => match &args.config {
            Some(path) => crate::config::Config::load(path).ok(),
            None => crate::config::Config::from_toml("").ok(),
        }
        .map_or(LogFormat::Text, |c| c.log.format),
        _ => LogFormat::Text,
    }
}

/// The whole `vigil` program: parse the command line, log to stderr (`VIGIL_LOG`, default
/// `info`; format from [`log_format`]), run it on a multi-threaded runtime, report an error
/// as one line.
pub fn main() -> std::process::ExitCode {
    use tracing_subscriber::EnvFilter;
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format(&cli) {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `vigil run` passes its command's status through, without a message of its own.
        Err(e) if e.is::<run::ExitStatus>() => {
            let code = e.downcast_ref::<run::ExitStatus>().map_or(1, |s| s.0);
            std::process::ExitCode::from(code)
        }
        // `vigil config check` printed the errors itself.
        Err(e) if e.is::<ConfigInvalid>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `vigil config check` found errors (already printed).
#[derive(Debug, thiserror::Error)]
#[error("the configuration has errors")]
pub struct ConfigInvalid;

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Keygen(args) => keys::run(args),
        Command::Send(args) => send::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::RotateKey(args) => rotate::run(args).await,
        Command::Server(command) => server::run(command).await,
        Command::Policy(command) => policy::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Admin(command) => admin::run(command).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "vigil", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Config(command) => {
            if config::run(command)? {
                Ok(())
            } else {
                Err(ConfigInvalid.into())
            }
        }
    }
}

/// Reads a response: prints the body on success, turns a problem+json into an error.
pub(crate) async fn read_response(
    response: reqwest::Response,
) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let text = response.text().await?;
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if status.is_success() {
        Ok(body)
    } else {
        let code = body.get("code").and_then(|c| c.as_str()).unwrap_or("?");
        let detail = body.get("detail").and_then(|c| c.as_str()).unwrap_or("");
        anyhow::bail!("{status} {code}: {detail}")
    }
}

/// Where a directory read goes (`vigil server list`, `vigil policy list`): the host, and a
/// credential sent when given (needed with `[directory] require_key`).
#[derive(Debug, Args)]
pub struct ReadTarget {
    /// The host's base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A read or admin API key (or the bootstrap token), sent as a bearer credential; needed
    /// when the host sets `[directory] require_key`.
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ReadTarget {
    /// `GET path`, with the credential when there is one.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let mut request = reqwest::Client::new().get(endpoint(&self.url, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        read_response(request.send().await?).await
    }
}

/// Where the admin API is and how to authenticate (flattened into every admin subcommand).
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The host's base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin bearer token.
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl AdminTarget {
    /// A client for this target; fails when no token was given.
    pub(crate) fn client(&self) -> anyhow::Result<AdminClient> {
        let token = self
            .token
            .as_deref()
            .context("an admin token is needed: --token or VIGIL_ADMIN_TOKEN")?;
        Ok(AdminClient::new(&self.url, token))
    }
}

/// The one way the CLI builds an admin API request: a shared connection pool, the host's base
/// URL and the bearer token. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client for the host at `url` (a trailing `/` is ignored) authenticating with `token`.
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// An authenticated `POST` of `path` (which starts with `/`).
    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// An authenticated `PATCH` of `path` (which starts with `/`).
    pub(crate) fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PATCH, path)
    }

    /// An authenticated `PUT` of `path` (which starts with `/`).
    pub(crate) fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PUT, path)
    }

    /// An authenticated `DELETE` of `path` (which starts with `/`).
    pub(crate) fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::DELETE, path)
    }

    /// An authenticated `GET` of `path` (which starts with `/`).
    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, endpoint(&self.base, path))
            .bearer_auth(&self.token)
    }
}

/// `path` (which starts with `/`) on the host at `url` (a trailing `/` is ignored).
pub(crate) fn endpoint(url: &str, path: &str) -> String {
    format!("{}{path}", url.trim_end_matches('/'))
}
