//! `vigil policy …`: ship versions through the admin API (push, activate, rollback), list
//! them, and sign components as an author.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::server::AdminTarget;
use crate::api::policies::SIGNATURE_HEADER;
use crate::policy::{digest_of, signing};

/// `vigil policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Upload a component (validated and stored; `--activate` also makes it active).
    Push {
        /// The `.wasm` component.
        file: PathBuf,
        /// Its signature file (default: `FILE.sig` when it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Activate it once stored.
        #[arg(long)]
        activate: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Activate a stored version: `sha256:<hex>` or `name@version`.
    Activate {
        /// Which version.
        policy: String,
        /// Recorded in the activation log.
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Activate the version that was active before the current one.
    Rollback {
        /// Recorded in the activation log.
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List stored versions, the active one and recent activations (public).
    List {
        /// The host's base URL.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Backtest: replay stored history through a candidate and diff it against the active
    /// version (nothing is written).
    Replay {
        /// The candidate component.
        #[arg(long)]
        policy: PathBuf,
        /// Only history this recent (`90s`, `30m`, `12h`, `7d`); default: each version's window.
        #[arg(long)]
        since: Option<String>,
        /// The database (default: the config's `[storage] url`, else `sqlite://vigil.db`).
        #[arg(long)]
        database: Option<String>,
        /// A config file (its `[storage] url`, limits and `[policy.params]` are used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A candidate parameter, `name=value` (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run golden vectors (event sequences in, expected assessments out) against a component.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// The vector file (JSON).
        #[arg(long)]
        vectors: PathBuf,
    },
    /// Sign a component as its author: writes `FILE.sig` (ed25519 over the digest).
    Sign {
        /// The author's private key (as written by `vigil keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The `.wasm` component.
        file: PathBuf,
    },
}

fn client(target: &AdminTarget, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
    let token = target
        .token
        .as_deref()
        .context("an admin token is needed: --token or VIGIL_ADMIN_TOKEN")?;
    Ok(reqwest::Client::new()
        .post(format!("{}{path}", target.url.trim_end_matches('/')))
        .bearer_auth(token))
}

fn sig_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// Runs a `vigil policy` subcommand.
pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    let answer = match command {
        PolicyCommand::Push {
            file,
            signature,
            activate,
            target,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let signature = match signature {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => std::fs::read_to_string(sig_path(&file)).ok(),
            };
            let path = if activate {
                "/v1/admin/policies?activate=true"
            } else {
                "/v1/admin/policies"
            };
            let mut request = client(&target, path)?
                .header("content-type", "application/wasm")
                .body(bytes);
            if let Some(sig) = signature {
                request = request.header(SIGNATURE_HEADER, sig.trim());
            }
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::Activate {
            policy,
            reason,
            target,
        } => {
            let body = serde_json::json!({ "policy": policy, "reason": reason });
            let request = client(&target, "/v1/admin/policies/activate")?.json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::Rollback { reason, target } => {
            let body = serde_json::json!({ "reason": reason });
            let request = client(&target, "/v1/admin/policies/rollback")?.json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::List { url } => {
            let url = format!("{}/v1/policies", url.trim_end_matches('/'));
            super::read_response(reqwest::get(&url).await?).await?
        }
        PolicyCommand::Replay {
            policy,
            since,
            database,
            config,
            params,
            json,
        } => return replay(policy, since, database, config, params, json).await,
        PolicyCommand::Test { file, vectors } => return test_vectors(&file, &vectors),
        PolicyCommand::Sign { key, file } => {
            let key = super::keys::read_key(&key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let digest = digest_of(&bytes);
            let out = sig_path(&file);
            std::fs::write(&out, format!("{}\n", signing::sign(&key, &digest)))
                .with_context(|| format!("writing {}", out.display()))?;
            serde_json::json!({
                "signature": out.display().to_string(),
                "digest": digest,
                "signer": signing::signer_of(&key),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn test_vectors(file: &Path, vectors: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(vectors)
        .with_context(|| format!("reading {}", vectors.display()))?;
    let vectors: crate::policy::vectors::VectorFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", vectors.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = crate::policy::PolicyRuntime::new(crate::policy::PolicyLimits::from(
        &crate::config::PolicyConfig::default(),
    ))?;
    let policy = runtime
        .load(&bytes, &vectors.params)
        .with_context(|| format!("loading {}", file.display()))?;
    let mismatches = crate::policy::vectors::run(&policy, &vectors);
    let d = policy.description();
    for m in &mismatches {
        println!("FAIL {}: {}", m.case, m.detail);
    }
    let failed: std::collections::BTreeSet<&str> =
        mismatches.iter().map(|m| m.case.as_str()).collect();
    println!(
        "{}@{}: {} of {} vectors passed",
        d.name,
        d.version,
        vectors.cases.len() - failed.len(),
        vectors.cases.len()
    );
    anyhow::ensure!(failed.is_empty(), "{} vector(s) failed", failed.len());
    Ok(())
}

/// Parses `90s`, `30m`, `12h`, `7d` into milliseconds.
fn parse_duration_ms(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .context("a duration needs a unit: s, m, h or d")?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .context("a duration starts with a whole number")?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => anyhow::bail!("unknown duration unit {other:?} (s, m, h or d)"),
    };
    n.checked_mul(unit_ms).context("duration too long")
}

fn parse_param(text: &str) -> anyhow::Result<(String, toml::Value)> {
    let (name, value) = text
        .split_once('=')
        .with_context(|| format!("--param {text:?}: expected NAME=VALUE"))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    };
    Ok((name.to_owned(), value))
}

/// Loads a component with the parameters it declares from `params`.
fn load_lenient(
    runtime: &crate::policy::PolicyRuntime,
    bytes: &[u8],
    params: &std::collections::BTreeMap<String, toml::Value>,
) -> anyhow::Result<std::sync::Arc<crate::policy::LoadedPolicy>> {
    let bare = runtime.load(bytes, &Default::default())?;
    let declared = params
        .iter()
        .filter(|(n, _)| bare.description().params.iter().any(|p| &p.name == *n))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(runtime.load(bytes, &declared)?)
}

async fn replay(
    candidate: PathBuf,
    since: Option<String>,
    database: Option<String>,
    config: Option<PathBuf>,
    params: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    use crate::store::Store;
    let config = match config {
        Some(path) => crate::config::Config::load(&path)?,
        None => crate::config::Config::default(),
    };
    let url = database.unwrap_or_else(|| config.storage.url.clone());
    let store = crate::store::sqlite::SqliteStore::open(&url, 2)
        .await
        .with_context(|| format!("opening {url}"))?;
    let runtime =
        crate::policy::PolicyRuntime::new(crate::policy::PolicyLimits::from(&config.policy))?;
    let active_digest = store
        .active_policy_digest()
        .await?
        .context("the database has no active policy (was a host ever started on it?)")?;
    let active_record = store
        .load_policy(&active_digest)
        .await?
        .with_context(|| format!("the active policy {active_digest} is not stored"))?;
    let active = load_lenient(&runtime, &active_record.component, &config.policy.params)
        .context("loading the active policy")?;
    let bytes =
        std::fs::read(&candidate).with_context(|| format!("reading {}", candidate.display()))?;
    let candidate_params = params
        .iter()
        .map(|p| parse_param(p))
        .collect::<anyhow::Result<_>>()?;
    let candidate = runtime
        .load(&bytes, &candidate_params)
        .with_context(|| format!("loading {}", candidate.display()))?;
    let now = crate::engine::now_ms();
    let since_ms = since
        .map(|s| parse_duration_ms(&s).map(|d| now - d))
        .transpose()?;
    let report =
        crate::engine::backtest::backtest(&store, &active, &candidate, since_ms, now).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("active:    {}", report.active);
    println!("candidate: {}", report.candidate);
    println!(
        "{} servers, {} events replayed; {} would change status or confidence",
        report.servers,
        report.events,
        report.changed.len()
    );
    for d in &report.changed {
        println!(
            "  {:<32} {} -> {}  {} -> {}  uptime {:+.1}  quality {:+.1}",
            d.server_id,
            d.status.0,
            d.status.1,
            d.confidence.0,
            d.confidence.1,
            d.uptime_delta,
            d.quality_delta
        );
    }
    for (name, dist) in [
        ("quality", report.quality_delta),
        ("uptime", report.uptime_delta),
    ] {
        println!(
            "{name} delta: min {:+.1}  p50 {:+.1}  p90 {:+.1}  max {:+.1}  mean {:+.2}",
            dist.min, dist.p50, dist.p90, dist.max, dist.mean
        );
    }
    for (id, why) in &report.failures {
        println!("  {id}: replay failed: {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_params_parse() {
        assert_eq!(parse_duration_ms("90s").ok(), Some(90_000));
        assert_eq!(parse_duration_ms("2h").ok(), Some(7_200_000));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("5w").is_err());
        assert_eq!(
            parse_param("grace_seconds=60").ok(),
            Some(("grace_seconds".into(), toml::Value::Integer(60)))
        );
        assert_eq!(
            parse_param("mode=fast").ok(),
            Some(("mode".into(), toml::Value::String("fast".into())))
        );
    }
}
