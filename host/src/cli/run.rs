//! `vigil run -- CMD ARGS…`: the cron wrapper. Reports a signed `start`, runs the command with
//! its output passed through, then reports `success` or `fail` with the exit code, the
//! duration and the last 10 KiB of output; exits with the command's own status.
//!
//! With `--ping-url URL` it speaks the Healthchecks ping protocol instead, as runitor does:
//! `URL/start?rid=…`, then `URL/<exit status>?rid=…` with the output tail as the request body.
//! That works against Vigil's `[compat.healthchecks]` routes (a ping token, no key: weaker than
//! a signature) and against Healthchecks itself.
//!
//! The host never holds the job up: the command starts at once while `start` is posted in the
//! background, each report is tried a bounded number of times, and a host that cannot be
//! reached costs a warning on stderr, never the job's exit status.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock::format_rfc3339_ms;
use crate::ingest::decode::MAX_NESTED_STRING_CHARS;
use crate::ingest::signature::sign_body;

/// How much of the command's output (stdout and stderr interleaved, the newest bytes) goes
/// into the final report's payload.
pub const OUTPUT_TAIL_BYTES: usize = 10 * 1024;

/// Arguments of `vigil run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The host's base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The agent's private key file (base64 seed or PKCS#8 PEM).
    #[arg(long, default_value = "agent.key")]
    pub key: PathBuf,
    /// The server (job) this run reports for.
    #[arg(long, required_unless_present = "ping_url")]
    pub server_id: Option<String>,
    /// Or report unsigned to a Healthchecks-style ping URL (`https://host/ping/<uuid>`):
    /// `/start`, then `/<exit status>` with the output tail as the body.
    #[arg(long, conflicts_with_all = ["server_id", "key_version", "interval_seconds"])]
    pub ping_url: Option<String>,
    /// The version of the key.
    #[arg(long, default_value_t = 1)]
    pub key_version: u32,
    /// The job's period in seconds, declared as `interval_seconds` (a daily job: 86400), so
    /// the policy keeps it online between runs.
    #[arg(long)]
    pub interval_seconds: Option<u32>,
    /// Tries per report before giving up with a warning.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// Seconds each try may take.
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: u64,
    /// The command and its arguments (after `--`); run directly, no shell.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// `vigil run` ended: the process must exit with this status (the command's).
#[derive(Debug, thiserror::Error)]
#[error("the command exited with status {0}")]
pub struct ExitStatus(pub u8);

/// Runs the command between a `start` and an end report; returns the command's exit status
/// as an [`ExitStatus`] error when it is not 0.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let post = Poster {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_seconds.max(1)))
            .build()?,
        attempts: args.attempts.max(1),
    };
    let reporter = match (&args.ping_url, &args.server_id) {
        (Some(ping_url), _) => Reporter::Ping {
            post,
            url: ping_url.trim_end_matches('/').to_owned(),
        },
        (None, Some(server_id)) => Reporter::Signed(Box::new(Signer {
            post,
            url: super::endpoint(&args.url, "/v1/agent/heartbeat"),
            key: super::keys::read_key(&args.key)?,
            server_id: server_id.clone(),
            key_version: args.key_version,
            interval_seconds: args.interval_seconds,
        })),
        (None, None) => anyhow::bail!("--server-id or --ping-url is required"),
    };
    // 16 hex digits: a run id both the v1 wire and Healthchecks' `rid` accept.
    let run_id = format!("{:016x}", rand::random::<u64>());
    let started_ms = crate::clock::now_ms();
    let started = Instant::now();

    let start_report = {
        let reporter = reporter.clone();
        let run_id = run_id.clone();
        tokio::spawn(async move { reporter.start(started_ms, &run_id).await })
    };

    let (code, tail) = match spawn_and_wait(&args.command).await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("vigil run: cannot run {:?}: {e}", args.command[0]);
            // The shell's status for a command that cannot be found or executed.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            (
                code,
                format!("vigil run: cannot run {:?}: {e}", args.command[0]).into_bytes(),
            )
        }
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    // The end must be signed later than the start (the host refuses a timestamp that is not
    // later than the last accepted one), so it waits for the start's report to finish.
    let _ = start_report.await;
    let ended_ms = crate::clock::now_ms().max(started_ms.saturating_add(1));
    reporter
        .end(ended_ms, &run_id, code, duration_ms, &tail)
        .await;
    if code == 0 {
        Ok(())
    } else {
        Err(ExitStatus(u8::try_from(code.clamp(0, 255)).unwrap_or(1)).into())
    }
}

/// Spawns `command` (no shell), copies its stdout and stderr through to ours as they come and
/// keeps the newest [`OUTPUT_TAIL_BYTES`] of both; returns its exit code (128 + the signal
/// number when a signal ended it, as shells report it) and that tail.
async fn spawn_and_wait(command: &[String]) -> std::io::Result<(i32, Vec<u8>)> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(Tail::default()));
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pass_through(out, tokio::io::stdout(), tail.clone())));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(pass_through(err, tokio::io::stderr(), tail.clone())));
    let status = child.wait().await?;
    for task in [stdout, stderr].into_iter().flatten() {
        let _ = task.await;
    }
    let code = status.code().unwrap_or_else(|| {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            128 + status.signal().unwrap_or(0)
        }
        #[cfg(not(unix))]
        {
            1
        }
    });
    let tail = tail.lock().map(|t| t.bytes()).unwrap_or_default();
    Ok((code, tail))
}

/// The newest bytes of the output, at most [`OUTPUT_TAIL_BYTES`].
#[derive(Debug, Default)]
struct Tail(std::collections::VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
        let excess = (self.0.len() + bytes.len()).saturating_sub(OUTPUT_TAIL_BYTES);
        self.0.drain(..excess);
        self.0.extend(bytes);
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.iter().copied().collect()
    }
}

async fn pass_through(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    tail: std::sync::Arc<std::sync::Mutex<Tail>>,
) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut tail) = tail.lock() {
                    tail.push(&buffer[..n]);
                }
                // Our own stdout closed (a pipe to `head`, say) must not stop the job.
                let _ = to.write_all(&buffer[..n]).await;
                let _ = to.flush().await;
            }
        }
    }
}

/// The final report's payload: `{"output_tail": [..]}`, the tail as text (invalid UTF-8
/// replaced) in pieces of at most [`MAX_NESTED_STRING_CHARS`] characters, the wire's limit on a
/// string inside `payload`.
pub fn output_payload(tail: &[u8]) -> Value {
    let text = String::from_utf8_lossy(tail);
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<Value> = chars
        .chunks(MAX_NESTED_STRING_CHARS)
        .map(|piece| Value::String(piece.iter().collect()))
        .collect();
    json!({ "output_tail": pieces })
}

/// Where a run's reports go.
#[derive(Clone)]
enum Reporter {
    /// Signed v1 heartbeats with a `run` member.
    Signed(Box<Signer>),
    /// Healthchecks pings: unsigned, the ping URL is the credential.
    Ping {
        /// Posts with retries.
        post: Poster,
        /// `https://host/ping/<uuid>`, without a trailing `/`.
        url: String,
    },
}

impl Reporter {
    async fn start(&self, at_ms: i64, run_id: &str) {
        match self {
            Reporter::Signed(signer) => {
                let run = json!({ "phase": "start", "run_id": run_id });
                signer.report(at_ms, run, None).await;
            }
            Reporter::Ping { post, url } => {
                let shown = without_secret(url);
                let url = format!("{url}/start?rid={run_id}");
                post.send("start", &shown, || post.http.post(&url)).await;
            }
        }
    }

    async fn end(&self, at_ms: i64, run_id: &str, code: i32, duration_ms: u64, tail: &[u8]) {
        match self {
            Reporter::Signed(signer) => {
                let phase = if code == 0 { "success" } else { "fail" };
                let run = json!({
                    "phase": phase, "exit_code": code, "duration_ms": duration_ms, "run_id": run_id,
                });
                signer.report(at_ms, run, Some(output_payload(tail))).await;
            }
            Reporter::Ping { post, url } => {
                // Healthchecks takes exit statuses 0–255 (0 is success); anything outside
                // that range is a failure.
                let status = u8::try_from(code).unwrap_or(1);
                let phase = if status == 0 { "success" } else { "fail" };
                let shown = without_secret(url);
                let url = format!("{url}/{status}?rid={run_id}");
                let body = tail.to_vec();
                post.send(phase, &shown, || {
                    post.http
                        .post(&url)
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(body.clone())
                })
                .await;
            }
        }
    }
}

/// A ping URL as a warning may show it: its path holds the credential, so only the origin.
fn without_secret(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!("{}/…", parsed.origin().ascii_serialization()),
        Err(_) => "the ping URL".into(),
    }
}

/// Posts a report, retrying what a retry can fix.
#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    attempts: u32,
}

impl Poster {
    /// Sends `request()` up to `attempts` times (200 ms, 400 ms, … apart), retrying a refused
    /// connection, a timeout, a 429 or a 5xx; gives up with a warning on stderr naming the
    /// `phase` report. Never fails: the job's outcome does not depend on the host.
    async fn send(&self, phase: &str, shown: &str, request: impl Fn() -> reqwest::RequestBuilder) {
        let mut last_error = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << (attempt - 1).min(5))).await;
            }
            match request().send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let code = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_else(|| text.chars().take(80).collect());
                    last_error = format!("{status} {code}");
                    // A refusal (bad key, unknown server, …) will not change on a retry.
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        break;
                    }
                }
                // Without the URL: a ping URL's path is its credential (`shown` names the host).
                Err(e) => last_error = e.without_url().to_string(),
            }
        }
        eprintln!("vigil run: warning: the {phase} report did not reach {shown}: {last_error}");
    }
}

/// Signs and posts a run's reports as v1 heartbeats.
#[derive(Clone)]
struct Signer {
    post: Poster,
    url: String,
    key: SigningKey,
    server_id: String,
    key_version: u32,
    interval_seconds: Option<u32>,
}

impl Signer {
    async fn report(&self, at_ms: i64, run: Value, payload: Option<Value>) {
        let mut body = Map::new();
        body.insert("server_id".into(), self.server_id.clone().into());
        body.insert("key_version".into(), self.key_version.into());
        body.insert("timestamp".into(), format_rfc3339_ms(at_ms).into());
        body.insert("status".into(), "online".into());
        body.insert(
            "agent_version".into(),
            format!("vigil-run/{}", env!("CARGO_PKG_VERSION")).into(),
        );
        if let Some(interval) = self.interval_seconds {
            body.insert("interval_seconds".into(), interval.into());
        }
        let phase = run["phase"].as_str().unwrap_or("?").to_owned();
        body.insert("run".into(), run);
        if let Some(payload) = payload {
            body.insert("payload".into(), payload);
        }
        let signature = match sign_body(&self.key, &body) {
            Ok(signature) => signature,
            Err(e) => {
                eprintln!("vigil run: warning: cannot sign the {phase} report: {e}");
                return;
            }
        };
        body.insert("signature".into(), signature.into());
        let body = Value::Object(body);
        self.post
            .send(&phase, &self.url, || {
                self.post.http.post(&self.url).json(&body)
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_never_shows_the_ping_token() {
        let shown =
            without_secret("https://hc.example:8443/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278");
        assert_eq!(shown, "https://hc.example:8443/…");
        assert_eq!(without_secret("not a url/ping/secret"), "the ping URL");
    }

    #[test]
    fn the_tail_keeps_the_newest_ten_kib() {
        let mut tail = Tail::default();
        tail.push(b"old");
        tail.push(&vec![b'x'; OUTPUT_TAIL_BYTES - 1]);
        tail.push(b"new");
        let bytes = tail.bytes();
        assert_eq!(bytes.len(), OUTPUT_TAIL_BYTES);
        assert!(bytes.ends_with(b"xnew"));
        assert!(!bytes.starts_with(b"o"));
        let mut big = Tail::default();
        big.push(&vec![b'y'; 3 * OUTPUT_TAIL_BYTES]);
        assert_eq!(big.bytes().len(), OUTPUT_TAIL_BYTES);
    }

    #[test]
    fn the_payload_fits_the_wire_limits() {
        let payload = output_payload(&vec![b'z'; OUTPUT_TAIL_BYTES]);
        let pieces = payload["output_tail"].as_array().expect("a list");
        assert_eq!(pieces.len(), 3);
        assert!(
            pieces
                .iter()
                .all(|p| p.as_str().expect("text").chars().count() <= MAX_NESTED_STRING_CHARS)
        );
        assert_eq!(output_payload(b"\xff ok")["output_tail"][0], "\u{fffd} ok");
        assert_eq!(output_payload(b"")["output_tail"], json!([]));
    }
}
