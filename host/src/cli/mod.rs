//! The `vigil` command line: one file per subcommand group. `main` only parses and calls
//! [`run`].

pub mod admin;
pub mod bench;
pub mod keys;
pub mod policy;
pub mod rotate;
pub mod send;
pub mod serve;
pub mod server;

use clap::{Parser, Subcommand};

/// Vigil: signed heartbeats scored by WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
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
}

/// The whole `vigil` program: logging to stderr (`VIGIL_LOG`, default `info`), parse the
/// command line, run it on a multi-threaded runtime, report an error as one line.
pub fn main() -> std::process::ExitCode {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Keygen(args) => keys::run(args),
        Command::Send(args) => send::run(args).await,
        Command::RotateKey(args) => rotate::run(args).await,
        Command::Server(command) => server::run(command).await,
        Command::Policy(command) => policy::run(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Admin(command) => admin::run(command).await,
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
