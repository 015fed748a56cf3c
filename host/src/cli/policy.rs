//! `vigil policy …`: ship versions through the admin API (push, activate, rollback, shadow)
//! and list them; locally, backtest a candidate on stored history (replay), run golden vectors,
//! and create, build and sign a policy crate as an author. It only drives the registry, runtime
//! and replay through the host's library; it never validates or folds anything itself.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::AdminTarget;
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
    /// List stored versions, the active one and recent activations (the directory).
    List {
        /// The host, and a credential for `[directory] require_key`.
        #[command(flatten)]
        target: super::ReadTarget,
        /// `table` or `json` (the table shows the stored versions; JSON also has the
        /// activations and refusals).
        #[command(flatten)]
        output: super::output::OutputArg,
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
    /// Start (`name@version` or digest) or stop (`--stop`) shadow evaluation on live events.
    Shadow {
        /// The stored candidate.
        #[arg(required_unless_present = "stop")]
        policy: Option<String>,
        /// Stop the running shadow.
        #[arg(long, conflicts_with = "policy")]
        stop: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Create a policy crate from the template (builds with plain
    /// `cargo build --target wasm32-wasip2 --release`).
    New {
        /// The policy's name (`[a-z0-9-]`); also the directory created.
        name: String,
        /// Where the `vigil-policy-sdk` crate is (default: the one this binary was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a policy crate for `wasm32-wasip2` (installs the target when missing).
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
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
            let mut request = target
                .client()?
                .post(path)
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
            let request = target
                .client()?
                .post("/v1/admin/policies/activate")
                .json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::Rollback { reason, target } => {
            let body = serde_json::json!({ "reason": reason });
            let request = target
                .client()?
                .post("/v1/admin/policies/rollback")
                .json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::List { target, output } => {
            use super::output::col;
            let mut answer = target.get("/v1/policies").await?;
            let active = answer["active"]["digest"].clone();
            if let Some(policies) = answer["policies"].as_array_mut() {
                for p in policies {
                    p["active"] = serde_json::Value::Bool(p["digest"] == active);
                }
            }
            return super::output::print(
                &answer,
                output.format(),
                "/policies",
                &[
                    col("NAME", "name"),
                    col("VERSION", "version"),
                    col("ACTIVE", "active"),
                    col("DIGEST", "digest"),
                    col("BYTES", "size_bytes"),
                    col("UPLOADED", "uploaded_at_ms"),
                    col("BY", "uploaded_by"),
                    col("SIGNER", "signer"),
                ],
            );
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
        PolicyCommand::Shadow {
            policy,
            stop,
            target,
        } => {
            let body = serde_json::json!({ "policy": if stop { None } else { policy } });
            let response = target
                .client()?
                .post("/v1/admin/policies/shadow")
                .json(&body)
                .send()
                .await?;
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                serde_json::json!({ "shadow": "stopped" })
            } else {
                super::read_response(response).await?
            }
        }
        PolicyCommand::New { name, sdk } => return new_policy(&name, sdk),
        PolicyCommand::Build { dir } => return build_policy(&dir),
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

const TEMPLATE_LIB: &str = r#"//! A Vigil scoring policy. `describe` says who it is; `evaluate` folds one event.

use vigil_policy_sdk::{
    Assessment, Confidence, Evaluation, Event, Facts, ParamSpec, Params, Policy, PolicyInfo,
    Status,
};

/// The policy.
pub struct MyPolicy;

impl Policy for MyPolicy {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "{{name}}".to_string(),
            version: "0.1.0".to_string(),
            // How much history a replay needs to rebuild the state.
            history_window_seconds: 3600,
            params: vec![ParamSpec::number("grace_seconds", "Silence before offline.", 300.0)],
        }
    }

    fn evaluate(
        params: &Params,
        _facts: &Facts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: &Event,
    ) -> Result<Evaluation, String> {
        let grace_ms = (params.number_or("grace_seconds", 300.0) * 1000.0) as i64;
        // State: the time of the last heartbeat (8 bytes, little-endian).
        let mut last = match state {
            Some(bytes) => Some(i64::from_le_bytes(
                bytes.try_into().map_err(|_| "bad state".to_string())?,
            )),
            None => None,
        };
        if let Event::Heartbeat(h) = event {
            last = Some(h.received_at_ms);
        }
        let mut assessment = match last {
            Some(at) if now_ms - at < grace_ms => {
                let mut a = Assessment::new(Status::Online, Confidence::Green);
                a.next_check_at_ms = Some(at + grace_ms);
                a
            }
            Some(_) => Assessment::new(Status::Offline, Confidence::Yellow),
            None => Assessment::new(Status::Unknown, Confidence::Yellow),
        };
        assessment.uptime_percent = if assessment.status == Status::Online { 100.0 } else { 0.0 };
        assessment.quality_score = assessment.uptime_percent;
        Ok(Evaluation {
            state: last.map(|at| at.to_le_bytes().to_vec()).unwrap_or_default(),
            assessment,
        })
    }
}

vigil_policy_sdk::export_policy!(MyPolicy);
"#;

fn new_policy(name: &str, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "a policy name is [a-z0-9-], at most 64 characters"
    );
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK is not at {} (use --sdk)", sdk.display()))?;
    let dir = Path::new(name);
    anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
             [dependencies]\nvigil-policy-sdk = {{ path = {:?} }}\n\n\
             [profile.release]\nopt-level = \"s\"\nstrip = true\n\n\
             # A crate of its own, outside any enclosing workspace.\n[workspace]\n",
            sdk.display().to_string()
        ),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        TEMPLATE_LIB.replace("{{name}}", name),
    )?;
    println!("created {name}/ — build it with `vigil policy build {name}`");
    Ok(())
}

fn build_policy(dir: &Path) -> anyhow::Result<()> {
    // rustup does not install a toolchain file's targets by itself here; a no-op when present.
    let _ = std::process::Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "cargo build failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"))
        .join("wasm32-wasip2/release");
    let built: Vec<PathBuf> = std::fs::read_dir(&target)
        .with_context(|| format!("reading {}", target.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    for path in &built {
        println!("{}", path.display());
    }
    anyhow::ensure!(!built.is_empty(), "no component was built");
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
pub(crate) fn parse_duration_ms(text: &str) -> anyhow::Result<i64> {
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
    let config = match config {
        Some(path) => crate::config::Config::load(&path)?,
        None => crate::config::Config::default(),
    };
    let url = database.unwrap_or_else(|| config.storage.url.clone());
    let store = crate::store::Store::open(&url, 2)
        .await
        .with_context(|| format!("opening {}", crate::redact(&url)))?;
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
    let now = crate::clock::now_ms();
    let since_ms = since
        .map(|s| parse_duration_ms(&s).map(|d| now - d))
        .transpose()?;
    let bar = super::output::progress(0, "replaying servers");
    let report = crate::engine::backtest::backtest(
        &store,
        &active,
        &candidate,
        since_ms,
        now,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .await?;
    bar.finish_and_clear();
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
