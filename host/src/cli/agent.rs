//! `vigil agent --config agent.toml`: the agent daemon. Signs and sends a heartbeat with system
//! metrics (and, optionally, game or service fields) on the interval the host answers, runs
//! host-signed commands from an allow-list, and says goodbye (`offline`) on SIGTERM.
//! `vigil agent rotate --next-key new.key` moves it to a new key.
//!
//! No queue of unsent beats: a heartbeat is about now, so one that could not be delivered is
//! replaced by the next, never replayed. While the host is unreachable the agent backs off
//! (exponential, jittered, capped), and it honours `Retry-After` on 429 and 503.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::{PublicKey, public_key_of, sign_body};

mod metrics;

/// Arguments of `vigil agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration file.
    #[arg(long, global = true, default_value = "agent.toml")]
    pub config: PathBuf,
    /// Run the daemon (no subcommand), or one of these.
    #[command(subcommand)]
    pub action: Option<AgentAction>,
}

/// `vigil agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Agent-initiated key rotation: sign a request with the current key, then switch the
    /// configured key file and the state file to the new key and version.
    Rotate {
        /// The new private key file (from `vigil keygen`).
        #[arg(long)]
        next_key: PathBuf,
    },
}

/// `agent.toml`. Relative paths are relative to the file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The host's base URL.
    #[serde(default = "default_url")]
    pub url: String,
    /// The server this agent reports for.
    pub server_id: String,
    /// The private key file (base64 seed or PKCS#8 PEM).
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// The state file (the current `key_version`, the pinned host key).
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// The interval declared in every heartbeat, seconds (the host's answer sets the pace).
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    /// The host's command-signing key (base64), pinned; without it the key the host shows on
    /// first contact (`GET /v1/host-key`) is pinned in the state file.
    pub host_key: Option<String>,
    /// First delay after a failed beat, ms; doubled per failure.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest delay between tries, seconds.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_seconds: u64,
    /// Seconds a command may run before it is killed (its result is then `failed`).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: u64,
    /// Game or service fields, read every beat.
    #[serde(default)]
    pub game: Option<GameSource>,
    /// The allow-list: command name → program and arguments (run directly, no shell).
    #[serde(default)]
    pub commands: BTreeMap<String, Vec<String>>,
}

/// Where the game fields come from: a command's JSON output or a JSON file, read every beat.
/// Its members `players_current`, `players_capacity`, `map_name`, `mode` go to the heartbeat;
/// any other numeric member becomes a metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameSource {
    /// A program and its arguments printing one JSON object.
    pub command: Option<Vec<String>>,
    /// Or a file holding one JSON object.
    pub file: Option<PathBuf>,
}

fn default_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_key() -> PathBuf {
    "agent.key".into()
}
fn default_state() -> PathBuf {
    "agent.state".into()
}
fn default_interval() -> u32 {
    30
}
fn default_backoff_initial() -> u64 {
    1000
}
fn default_backoff_max() -> u64 {
    300
}
fn default_command_timeout() -> u64 {
    60
}

/// What the agent remembers between runs (`state` file, JSON, written atomically).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct AgentState {
    /// The current key's version.
    pub key_version: u32,
    /// The host's command key, pinned on first contact.
    pub host_key: Option<String>,
}

impl AgentConfig {
    /// Reads `path`; relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.key, &mut config.state] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if let Some(GameSource {
            file: Some(file), ..
        }) = &mut config.game
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        if !(1..=604_800).contains(&config.interval_seconds) {
            anyhow::bail!("interval_seconds must be from 1 to 604800");
        }
        Ok(config)
    }
}

fn read_state(path: &Path) -> anyhow::Result<AgentState> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("state {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState {
            key_version: 1,
            host_key: None,
        }),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, renamed), mode
/// 0600.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn write_state(path: &Path, state: &AgentState) -> anyhow::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(state)?)
}

/// Runs `vigil agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = AgentConfig::load(&args.config)?;
    match args.action {
        None => Agent::new(config)?.run().await,
        Some(AgentAction::Rotate { next_key }) => rotate(&config, &next_key).await,
    }
}

/// Signs a rotation with the current key, then moves the key file and the state to the new
/// key: the new key is written next to the old one and renamed over it (atomic), the state
/// file likewise, so a crash leaves either the old pair or the new one.
async fn rotate(config: &AgentConfig, next_key: &Path) -> anyhow::Result<()> {
    let current = super::keys::read_key(&config.key)?;
    let next = super::keys::read_key(next_key)?;
    let mut state = read_state(&config.state)?;
    let mut body = Map::new();
    body.insert("server_id".into(), config.server_id.clone().into());
    body.insert("key_version".into(), state.key_version.into());
    body.insert(
        "timestamp".into(),
        format_rfc3339_ms(crate::clock::now_ms()).into(),
    );
    body.insert(
        "next_public_key".into(),
        public_key_of(&next).to_base64().into(),
    );
    let signature = crate::ingest::rotation::sign(&current, &body)?;
    body.insert("signature".into(), signature.into());
    let response = reqwest::Client::new()
        .post(super::endpoint(&config.url, "/v1/agent/rotate-key"))
        .json(&body)
        .send()
        .await?;
    let answer = super::read_response(response).await?;
    let version = answer["key_version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .context("the host's answer has no key_version")?;
    let key_text = std::fs::read(next_key)?;
    write_atomically(&config.key, &key_text)?;
    state.key_version = version;
    write_state(&config.state, &state)?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The running daemon.
struct Agent {
    config: AgentConfig,
    http: reqwest::Client,
    system: metrics::SystemSampler,
}

/// What one beat's answer tells the loop.
enum Next {
    /// Accepted: wait this long.
    After(Duration),
    /// Refused or unreachable: back off (`Some`: the host said how long).
    BackOff(Option<Duration>),
}

impl Agent {
    fn new(config: AgentConfig) -> anyhow::Result<Self> {
        // Fails early on a bad key file.
        super::keys::read_key(&config.key)?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            system: metrics::SystemSampler::new()?,
            config,
        })
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut terminate = terminate_signal()?;
        let mut failures: u32 = 0;
        tracing::info!(server_id = %self.config.server_id, url = %self.config.url, "agent started");
        loop {
            let next = tokio::select! {
                next = self.beat("online") => next,
                _ = terminate.recv() => break,
            };
            let delay = match next {
                Next::After(delay) => {
                    failures = 0;
                    delay
                }
                Next::BackOff(said) => {
                    failures = failures.saturating_add(1);
                    let delay = said.unwrap_or_else(|| self.backoff(failures));
                    tracing::warn!(
                        delay_ms = delay.as_millis() as u64,
                        failures,
                        "heartbeat not accepted; retrying later"
                    );
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = terminate.recv() => break,
            }
        }
        tracing::info!("terminating: saying goodbye");
        match self.beat("offline").await {
            Next::After(_) => tracing::info!("goodbye accepted"),
            Next::BackOff(_) => tracing::warn!("the goodbye did not reach the host"),
        }
        Ok(())
    }

    /// Exponential from `backoff_initial_ms`, capped at `backoff_max_seconds`, with full
    /// jitter over its upper half (so agents that lost the host together do not return
    /// together).
    fn backoff(&self, failures: u32) -> Duration {
        let cap = self.config.backoff_max_seconds.saturating_mul(1000).max(1);
        let exp = self
            .config
            .backoff_initial_ms
            .max(1)
            .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
            .min(cap);
        let jittered = exp / 2 + rand::random::<u64>() % (exp / 2 + 1);
        Duration::from_millis(jittered.max(1))
    }

    /// Builds, signs and posts one heartbeat; handles the commands it brings back.
    async fn beat(&mut self, status: &str) -> Next {
        let body = match self.body(status).await {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot build a heartbeat");
                return Next::BackOff(None);
            }
        };
        let url = super::endpoint(&self.config.url, "/v1/agent/heartbeat");
        let response = match self.http.post(&url).json(&body).send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, "host unreachable");
                return Next::BackOff(None);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(self.config.backoff_max_seconds.max(1))));
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 202 {
            let code = answer["code"].as_str().unwrap_or("?");
            tracing::warn!(%status, code = ?code, detail = ?answer["detail"].as_str().unwrap_or(""), "heartbeat refused");
            return Next::BackOff(match status.as_u16() {
                429 | 503 => retry_after,
                _ => None,
            });
        }
        let seconds = answer["next_heartbeat_seconds"]
            .as_u64()
            .unwrap_or(u64::from(self.config.interval_seconds))
            .clamp(1, 604_800);
        if let Some(commands) = answer["pending_commands"].as_array() {
            for envelope in commands {
                self.handle_command(envelope).await;
            }
        }
        Next::After(Duration::from_secs(seconds))
    }

    async fn body(&mut self, status: &str) -> anyhow::Result<Map<String, Value>> {
        let key = super::keys::read_key(&self.config.key)?;
        let state = read_state(&self.config.state)?;
        let sample = self.system.sample();
        let mut body = Map::new();
        body.insert("server_id".into(), self.config.server_id.clone().into());
        body.insert("key_version".into(), state.key_version.into());
        body.insert(
            "timestamp".into(),
            format_rfc3339_ms(crate::clock::now_ms()).into(),
        );
        body.insert("status".into(), status.into());
        body.insert(
            "agent_version".into(),
            format!("vigil-agent/{}", env!("CARGO_PKG_VERSION")).into(),
        );
        body.insert(
            "interval_seconds".into(),
            self.config.interval_seconds.into(),
        );
        body.insert("uptime_seconds".into(), sample.uptime_seconds.into());
        let mut metrics = sample.metrics;
        if let Some(game) = &self.config.game {
            match read_game(game, self.config.command_timeout_seconds).await {
                Ok(fields) => {
                    for (name, value) in fields {
                        match name.as_str() {
                            "players_current" | "players_capacity" | "map_name" | "mode" => {
                                body.insert(name, value);
                            }
                            _ if value.is_number() => {
                                metrics.insert(name, value);
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "game fields unavailable"),
            }
        }
        body.insert("metrics".into(), Value::Object(metrics));
        body.insert("os_info".into(), sample.os_info);
        let signature = sign_body(&key, &body)?;
        body.insert("signature".into(), signature.into());
        Ok(body)
    }

    /// The host key commands must be signed by: the configured one, else the one pinned in the
    /// state file, else (first contact) the host's, which is then pinned.
    async fn host_key(&self) -> anyhow::Result<PublicKey> {
        if let Some(key) = &self.config.host_key {
            return PublicKey::from_base64(key).context("host_key in the config");
        }
        let mut state = read_state(&self.config.state)?;
        if let Some(key) = &state.host_key {
            return PublicKey::from_base64(key).context("host_key in the state file");
        }
        let answer: Value = self
            .http
            .get(super::endpoint(&self.config.url, "/v1/host-key"))
            .send()
            .await?
            .json()
            .await?;
        let text = answer["public_key"]
            .as_str()
            .context("GET /v1/host-key has no public_key")?;
        let key = PublicKey::from_base64(text)?;
        state.host_key = Some(text.to_owned());
        write_state(&self.config.state, &state)?;
        tracing::info!(fingerprint = %key.fingerprint(), "pinned the host's command key");
        Ok(key)
    }

    /// Verifies one envelope, runs it if the allow-list has it, posts the signed result.
    async fn handle_command(&self, envelope: &Value) {
        let Some(envelope) = envelope.as_object() else {
            return;
        };
        let host_key = match self.host_key().await {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "no host key: commands ignored");
                return;
            }
        };
        if crate::commands::verify(crate::commands::COMMAND_PREFIX, &host_key, envelope).is_err() {
            // Not from the host we trust (a changed or forged key): never run, never answer.
            tracing::error!(
                envelope = ?envelope.get("command_id"),
                "a command not signed by the pinned host key was refused"
            );
            return;
        }
        let (Some(command_id), Some(name)) = (
            envelope.get("command_id").and_then(Value::as_str),
            envelope.get("command").and_then(Value::as_str),
        ) else {
            return;
        };
        if envelope.get("server_id").and_then(Value::as_str) != Some(&self.config.server_id) {
            tracing::error!(command_id, "a command for another server was refused");
            return;
        }
        let (status, output) = match self.config.commands.get(name) {
            None => (
                "refused",
                format!("command {name:?} is not in this agent's allow-list"),
            ),
            Some(program) if program.is_empty() => ("refused", "empty allow-list entry".into()),
            Some(program) => {
                run_allowed(
                    program,
                    Duration::from_secs(self.config.command_timeout_seconds),
                )
                .await
            }
        };
        tracing::info!(command_id, command = ?name, status, "command handled");
        if let Err(e) = self.post_result(command_id, status, &output).await {
            tracing::warn!(command_id, error = %format!("{e:#}"), "the command result was not recorded");
        }
    }

    async fn post_result(
        &self,
        command_id: &str,
        status: &str,
        output: &str,
    ) -> anyhow::Result<()> {
        let key = super::keys::read_key(&self.config.key)?;
        let state = read_state(&self.config.state)?;
        let mut body = Map::new();
        body.insert("command_id".into(), command_id.into());
        body.insert("server_id".into(), self.config.server_id.clone().into());
        body.insert("key_version".into(), state.key_version.into());
        body.insert(
            "timestamp".into(),
            format_rfc3339_ms(crate::clock::now_ms()).into(),
        );
        body.insert("status".into(), status.into());
        body.insert("output".into(), json!(output));
        let signature = crate::commands::sign(crate::commands::RESULT_PREFIX, &key, &body)?;
        body.insert("signature".into(), signature.into());
        let path = format!("/v1/agent/commands/{command_id}/result");
        let response = self
            .http
            .post(super::endpoint(&self.config.url, &path))
            .json(&body)
            .send()
            .await?;
        super::read_response(response).await.map(|_| ())
    }
}

/// The longest command output sent back, in characters (the newest ones).
const MAX_OUTPUT_CHARS: usize = 4000;

/// Runs an allow-listed program (no shell) with a timeout; `ok` on exit 0, else `failed`,
/// with the end of its output.
async fn run_allowed(program: &[String], timeout: Duration) -> (&'static str, String) {
    let mut command = tokio::process::Command::new(&program[0]);
    command
        .args(&program[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => ("failed", format!("timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => ("failed", format!("cannot run {:?}: {e}", program[0])),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let skip = text.chars().count().saturating_sub(MAX_OUTPUT_CHARS);
            let text: String = text.chars().skip(skip).collect();
            let status = if out.status.success() { "ok" } else { "failed" };
            (status, text)
        }
    }
}

/// Reads the game fields: one JSON object from the command's stdout or the file.
async fn read_game(game: &GameSource, timeout_seconds: u64) -> anyhow::Result<Map<String, Value>> {
    let text = match (&game.command, &game.file) {
        (Some(program), _) if !program.is_empty() => {
            let run = tokio::process::Command::new(&program[0])
                .args(&program[1..])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(timeout_seconds), run)
                .await
                .context("the game command timed out")??;
            anyhow::ensure!(
                out.status.success(),
                "the game command failed: {}",
                out.status
            );
            String::from_utf8(out.stdout)?
        }
        (_, Some(file)) => tokio::fs::read_to_string(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?,
        _ => anyhow::bail!("[game] needs `command` or `file`"),
    };
    match serde_json::from_str(&text)? {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("the game fields must be one JSON object"),
    }
}

/// SIGTERM (and Ctrl-C) as a stream.
fn terminate_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while term.recv().await.is_some() {
                let _ = tx.send(()).await;
            }
        });
    }
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(()).await;
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AgentConfig {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        AgentConfig::load(&path).expect("loads")
    }

    #[test]
    fn the_backoff_doubles_with_jitter_up_to_the_cap() {
        let agent = Agent {
            config: config(
                "server_id = \"a\"\nbackoff_initial_ms = 100\nbackoff_max_seconds = 1\n",
            ),
            http: reqwest::Client::new(),
            system: metrics::SystemSampler::new().expect("sysinfo"),
        };
        for _ in 0..50 {
            let first = agent.backoff(1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = agent.backoff(3).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = agent.backoff(40).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }

    #[test]
    fn relative_paths_follow_the_config_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "server_id = \"a\"\n[commands]\nrestart = [\"true\"]\n",
        )
        .expect("w");
        let config = AgentConfig::load(&path).expect("loads");
        assert_eq!(config.key, dir.path().join("agent.key"));
        assert_eq!(config.commands["restart"], ["true"]);
        std::fs::write(&path, "server_id = \"a\"\nshell = true\n").expect("w");
        assert!(AgentConfig::load(&path).is_err());
    }

    #[test]
    fn the_state_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.state");
        assert_eq!(read_state(&path).expect("default").key_version, 1);
        let state = AgentState {
            key_version: 3,
            host_key: Some("k".into()),
        };
        write_state(&path, &state).expect("writes");
        assert_eq!(read_state(&path).expect("reads"), state);
    }
}
