//! `vigil server …`: register (one or a fleet from a file), verify, edit, schedule, pause,
//! resume, retire and list servers, set maintenance windows, queue commands and manage keys
//! and ingest tokens
//! through the admin API. It never opens the database (`vigil admin` does).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::AdminTarget;
use crate::ingest::signature::public_key_of;

/// `vigil server` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Register a server with its agent's public key.
    Add {
        /// The server's identifier.
        server_id: String,
        /// The agent's public key (base64), as printed by `vigil keygen`.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        public_key: Option<String>,
        /// Or the agent's private key file, to take its public half.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Human-friendly name.
        #[arg(long)]
        display_name: Option<String>,
        /// Cluster.
        #[arg(long)]
        cluster_id: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Mark a server as verified by an operator.
    Verify {
        /// The server's identifier.
        server_id: String,
        /// Withdraw verification instead.
        #[arg(long)]
        revoke: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Queue a command for a server; its next accepted heartbeat's reply carries it, signed
    /// by the host key.
    Command {
        /// The server's identifier.
        server_id: String,
        /// The command name (`^[a-z0-9][a-z0-9._-]{0,63}$`).
        command: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Seconds until the command expires undelivered.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Rotate a server's key as an operator: the new key becomes version N+1, heartbeats signed
    /// with older versions are refused (409 `key_version_mismatch`).
    RotateKey {
        /// The server's identifier.
        server_id: String,
        /// The new public key (base64).
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        public_key: Option<String>,
        /// Or the agent's new private key file, to take its public half.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show a server's key history.
    Keys {
        /// The server's identifier.
        server_id: String,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Edit a server's display name, cluster or labels (only the options given change).
    Edit {
        /// The server's identifier.
        server_id: String,
        /// New display name (`""` clears it).
        #[arg(long)]
        display_name: Option<String>,
        /// New cluster (`""` clears it).
        #[arg(long)]
        cluster_id: Option<String>,
        /// A label `name=value`; repeat for several. Replaces the whole label set.
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Pause a server: status `paused`, no alerts, no deadlines (heartbeats are still stored).
    Pause {
        /// The server's identifier.
        server_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Set when a server is expected to report (a cron job, a backup): a period or a cron
    /// expression in an IANA zone, a grace, and the longest a run may take; `--clear` removes
    /// it. The policy sees it from the server's next event on.
    Schedule {
        /// The server's identifier.
        server_id: String,
        /// A five-field cron expression, e.g. "0 3 * * *".
        #[arg(long, conflicts_with_all = ["period", "clear"], required_unless_present_any = ["period", "clear"])]
        cron: Option<String>,
        /// The IANA time zone the cron expression is read in (default UTC).
        #[arg(long, requires = "cron")]
        tz: Option<String>,
        /// Every this long instead of a cron expression: 90s, 30m, 12h, 7d (up to 30 days).
        #[arg(long, conflicts_with = "clear")]
        period: Option<String>,
        /// How late a report may be: 90s, 30m, 1h, ... (default 0).
        #[arg(long, default_value = "0s", conflicts_with = "clear")]
        grace: String,
        /// The longest a run may take from its start, e.g. 2h.
        #[arg(long, conflicts_with = "clear")]
        max_run: Option<String>,
        /// Remove the schedule.
        #[arg(long)]
        clear: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Resume a paused server.
    Resume {
        /// The server's identifier.
        server_id: String,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Retire a server for good: hidden from the directory and rankings, history kept, the id
    /// stays taken.
    Retire {
        /// The server's identifier.
        server_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show the operator actions on a server (who, when, what).
    Audit {
        /// The server's identifier.
        server_id: String,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Mute a server's (or a cluster's) alerts from START to END (RFC 3339).
    Maintenance {
        /// The server's identifier (or use --cluster-id).
        #[arg(required_unless_present = "cluster_id", conflicts_with = "cluster_id")]
        server_id: Option<String>,
        /// The cluster instead of one server.
        #[arg(long)]
        cluster_id: Option<String>,
        /// Start, RFC 3339.
        #[arg(long)]
        start: String,
        /// End, RFC 3339.
        #[arg(long)]
        end: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Register a fleet from a CSV file (header `server_id,public_key[,display_name][,cluster_id]`)
    /// or a JSON array of `{"server_id","public_key","display_name"?,"cluster_id"?}`; prints one
    /// answer per row and fails if any row failed.
    Import {
        /// The file (`.json` is read as JSON, anything else as CSV).
        file: PathBuf,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Mint, list or revoke a server's ingest tokens (credentials for clients that cannot
    /// sign: Healthchecks pings, Uptime Kuma pushes, HomelabCmd agents).
    #[command(subcommand)]
    Token(TokenCommand),
    /// List servers (the directory; the first page, in its default order).
    List {
        /// The host, and a credential for `[directory] require_key`.
        #[command(flatten)]
        target: super::ReadTarget,
        /// `table` or `json`.
        #[command(flatten)]
        output: super::output::OutputArg,
    },
}

/// `vigil server token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token and print it once (only its hash is stored).
    Add {
        /// The server's identifier.
        server_id: String,
        /// `ping` (a Healthchecks ping UUID), `push` (an Uptime Kuma push token) or `agent` (a
        /// HomelabCmd agent token).
        #[arg(long, value_enum)]
        kind: crate::store::TokenKind,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List a server's tokens (kinds, prefixes, revocation; never secrets).
    List {
        /// The server's identifier.
        server_id: String,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
        /// `table` or `json`.
        #[command(flatten)]
        output: super::output::OutputArg,
    },
    /// Revoke a token by its id (from `list`); refused from the next request on.
    Revoke {
        /// The server's identifier.
        server_id: String,
        /// The token's id.
        token_id: i64,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Runs a `vigil server` subcommand.
pub async fn run(command: ServerCommand) -> anyhow::Result<()> {
    let answer = match command {
        ServerCommand::Add {
            server_id,
            public_key,
            key,
            display_name,
            cluster_id,
            target,
        } => {
            let public_key = match (public_key, key) {
                (Some(k), _) => k,
                (None, Some(path)) => public_key_of(&super::keys::read_key(&path)?).to_base64(),
                (None, None) => anyhow::bail!("--public-key or --key is required"),
            };
            let body = serde_json::json!({
                "server_id": server_id, "public_key": public_key,
                "display_name": display_name, "cluster_id": cluster_id,
            });
            super::read_response(
                target
                    .client()?
                    .post("/v1/admin/servers")
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?
        }
        ServerCommand::Verify {
            server_id,
            revoke,
            target,
        } => {
            let path = format!("/v1/admin/servers/{server_id}/verify");
            let body = serde_json::json!({ "verified": !revoke });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Command {
            server_id,
            command,
            args,
            ttl_seconds,
            target,
        } => {
            let args: serde_json::Value =
                serde_json::from_str(&args).context("--args must be a JSON object")?;
            let path = format!("/v1/admin/servers/{server_id}/commands");
            let body =
                serde_json::json!({ "command": command, "args": args, "ttl_seconds": ttl_seconds });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::RotateKey {
            server_id,
            public_key,
            key,
            target,
        } => {
            let public_key = match (public_key, key) {
                (Some(k), _) => k,
                (None, Some(path)) => public_key_of(&super::keys::read_key(&path)?).to_base64(),
                (None, None) => anyhow::bail!("--public-key or --key is required"),
            };
            let path = format!("/v1/admin/servers/{server_id}/keys");
            let body = serde_json::json!({ "public_key": public_key });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Keys { server_id, target } => {
            let path = format!("/v1/admin/servers/{server_id}/keys");
            super::read_response(target.client()?.get(&path).send().await?).await?
        }
        ServerCommand::Edit {
            server_id,
            display_name,
            cluster_id,
            labels,
            clear_labels,
            target,
        } => {
            let mut body = serde_json::Map::new();
            let clearable = |v: String| {
                if v.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(v)
                }
            };
            if let Some(name) = display_name {
                body.insert("display_name".into(), clearable(name));
            }
            if let Some(cluster) = cluster_id {
                body.insert("cluster_id".into(), clearable(cluster));
            }
            if clear_labels || !labels.is_empty() {
                let mut map = serde_json::Map::new();
                for label in labels {
                    let (name, value) = label
                        .split_once('=')
                        .with_context(|| format!("--label {label:?} is not NAME=VALUE"))?;
                    map.insert(name.to_owned(), value.into());
                }
                body.insert("labels".into(), map.into());
            }
            anyhow::ensure!(
                !body.is_empty(),
                "nothing to change: give --display-name, --cluster-id or --label"
            );
            let path = format!("/v1/admin/servers/{server_id}");
            let client = target.client()?;
            super::read_response(client.patch(&path).json(&body).send().await?).await?
        }
        ServerCommand::Pause {
            server_id,
            reason,
            target,
        } => {
            let path = format!("/v1/admin/servers/{server_id}/pause");
            let body = serde_json::json!({ "reason": reason });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Schedule {
            server_id,
            cron,
            tz,
            period,
            grace,
            max_run,
            clear,
            target,
        } => {
            let path = format!("/v1/admin/servers/{server_id}/schedule");
            let client = target.client()?;
            if clear {
                super::read_response(client.delete(&path).send().await?).await?
            } else {
                let seconds = |text: &str| -> anyhow::Result<u64> {
                    Ok(u64::try_from(super::policy::parse_duration_ms(text)?).unwrap_or(0) / 1_000)
                };
                let mut body = serde_json::json!({ "grace_seconds": seconds(&grace)? });
                if let Some(cron) = cron {
                    body["cron"] = serde_json::json!(cron);
                    if let Some(tz) = tz {
                        body["tz"] = serde_json::json!(tz);
                    }
                }
                if let Some(period) = period {
                    body["period_seconds"] = serde_json::json!(seconds(&period)?);
                }
                if let Some(max_run) = max_run {
                    body["max_run_seconds"] = serde_json::json!(seconds(&max_run)?);
                }
                super::read_response(client.put(&path).json(&body).send().await?).await?
            }
        }
        ServerCommand::Resume { server_id, target } => {
            let path = format!("/v1/admin/servers/{server_id}/resume");
            super::read_response(target.client()?.post(&path).send().await?).await?
        }
        ServerCommand::Retire {
            server_id,
            reason,
            target,
        } => {
            let path = format!("/v1/admin/servers/{server_id}/retire");
            let body = serde_json::json!({ "reason": reason });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Audit { server_id, target } => {
            let path = format!("/v1/admin/servers/{server_id}/audit");
            super::read_response(target.client()?.get(&path).send().await?).await?
        }
        ServerCommand::Maintenance {
            server_id,
            cluster_id,
            start,
            end,
            reason,
            target,
        } => {
            let body = serde_json::json!({
                "server_id": server_id, "cluster_id": cluster_id,
                "start": start, "end": end, "reason": reason,
            });
            let client = target.client()?;
            super::read_response(
                client
                    .post("/v1/admin/maintenance")
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?
        }
        ServerCommand::Import { file, target } => return import(&file, &target).await,
        ServerCommand::Token(TokenCommand::Add {
            server_id,
            kind,
            target,
        }) => {
            let path = format!("/v1/admin/servers/{server_id}/tokens");
            let body = serde_json::json!({ "kind": kind });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Token(TokenCommand::List {
            server_id,
            target,
            output,
        }) => {
            use super::output::col;
            let path = format!("/v1/admin/servers/{server_id}/tokens");
            let answer = super::read_response(target.client()?.get(&path).send().await?).await?;
            return super::output::print(
                &answer,
                output.format(),
                "/tokens",
                &[
                    col("ID", "id"),
                    col("KIND", "kind"),
                    col("PREFIX", "prefix"),
                    col("CREATED", "created_at"),
                    col("BY", "created_by"),
                    col("REVOKED", "revoked_at"),
                ],
            );
        }
        ServerCommand::Token(TokenCommand::Revoke {
            server_id,
            token_id,
            target,
        }) => {
            let path = format!("/v1/admin/servers/{server_id}/tokens/{token_id}");
            super::read_response(target.client()?.delete(&path).send().await?).await?
        }
        ServerCommand::List { target, output } => {
            use super::output::col;
            let answer = target.get("/v1/servers").await?;
            return super::output::print(
                &answer,
                output.format(),
                "/servers",
                &[
                    col("SERVER", "server_id"),
                    col("NAME", "display_name"),
                    col("STATUS", "effective_status"),
                    col("CONFIDENCE", "confidence"),
                    col("UPTIME %", "uptime_percent"),
                    col("QUALITY", "quality_score"),
                    col("LAST SEEN", "last_seen_at"),
                    col("VERIFIED", "is_verified"),
                ],
            );
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// One row of an import file.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct ImportRow {
    server_id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

/// Reads an import file: a JSON array, or CSV with a header row (empty cells are absent).
fn read_import(path: &std::path::Path) -> anyhow::Result<Vec<ImportRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array of servers", path.display()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (line, record) in reader.deserialize::<ImportRow>().enumerate() {
        let mut row = record.with_context(|| format!("{} row {}", path.display(), line + 1))?;
        row.display_name = row.display_name.filter(|v| !v.is_empty());
        row.cluster_id = row.cluster_id.filter(|v| !v.is_empty());
        rows.push(row);
    }
    Ok(rows)
}

/// `vigil server import FILE`: registers the rows in requests of the API's largest list,
/// prints one line per row (JSON), and fails when any row failed.
async fn import(path: &std::path::Path, target: &AdminTarget) -> anyhow::Result<()> {
    let rows = read_import(path)?;
    let client = target.client()?;
    let (mut created, mut failed) = (0u64, 0u64);
    let bar = super::output::progress(rows.len() as u64, "importing servers");
    for chunk in rows.chunks(crate::api::admin::MAX_IMPORT_ROWS) {
        let answer =
            super::read_response(client.post("/v1/admin/servers").json(&chunk).send().await?)
                .await?;
        bar.inc(chunk.len() as u64);
        for result in answer["results"].as_array().into_iter().flatten() {
            if result["status"] == 201 {
                created += 1;
            } else {
                failed += 1;
            }
            bar.suspend(|| println!("{result}"));
        }
    }
    bar.finish_and_clear();
    eprintln!("{created} registered, {failed} refused");
    anyhow::ensure!(failed == 0, "{failed} of {} rows were refused", rows.len());
    Ok(())
}
