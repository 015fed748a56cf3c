//! `vigil bench`: a load generator for the agent endpoint.
//!
//! It registers N servers, pre-signs their heartbeats (so signing does not compete with the
//! host for CPU during the run), then drives K keep-alive connections against the host for a
//! fixed duration — closed loop (as fast as answers come) or open loop at a fixed rate (latency
//! measured from each request's scheduled time, so a stalled host cannot hide its queueing).
//! With `--spawn` it starts the host itself on a fresh SQLite database and reports the host's
//! CPU time and peak RSS. Every loop is bounded in count and time; it targets the URL given
//! (loopback by default) and stops by itself.
//!
//! `--batch N` sends the signed heartbeats N per request through the batch route
//! (`POST /v1/agent/heartbeats`); the accepted rate counts heartbeats, not requests.
//!
//! `--route healthchecks` drives the Healthchecks compat route instead (`POST /ping/{uuid}`
//! with a per-server ping token, nothing to sign); `--route both` measures the signed v1 route
//! and then the Healthchecks route against the same host and database, one report each.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use super::AdminClient;
use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::sign_body;

/// Arguments of `vigil bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The host's base URL (ignored with `--spawn`). Repeat it (or separate with commas) to
    /// spread the connections over several hosts sharing one database: servers are
    /// registered through the first, connection `i` sends to URL `i mod n`.
    #[arg(
        long,
        env = "VIGIL_URL",
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// Admin token of that host (to register the servers).
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Start a host (this binary, `serve`) on a temporary SQLite database, measure its CPU and
    /// peak RSS, and stop it afterwards.
    #[arg(long)]
    pub spawn: bool,
    /// TOML appended to the spawned host's configuration. The default turns the rate limits
    /// off: every request of a bench comes from one IP, which the limiter would stop first.
    #[arg(
        long,
        default_value = "[rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0"
    )]
    pub host_config: String,
    /// Servers to register and send for.
    #[arg(long, default_value_t = 10_000)]
    pub servers: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measured duration, seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Open loop: send this many heartbeats per second in total (default: closed loop).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Closed loop: heartbeats to pre-sign per second of run (the most the run can send).
    #[arg(long, default_value_t = 40_000)]
    pub max_rate: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Which route to load: `v1` (signed `POST /v1/agent/heartbeat`), `healthchecks`
    /// (`POST /ping/{uuid}`, the host needs `[compat.healthchecks] enabled = true`; a spawned
    /// one has it) or `both`, one after the other on the same host.
    #[arg(long, value_enum, default_value_t = Route::V1)]
    pub route: Route,
    /// Send the v1 heartbeats N at a time through the batch route (`POST
    /// /v1/agent/heartbeats`, NDJSON; N at most 500); rates and status counts are then per
    /// heartbeat, `requests` per HTTP request.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub batch: Option<u16>,
}

/// The route a bench loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Signed v1 heartbeats.
    V1,
    /// Healthchecks pings with ingest tokens.
    Healthchecks,
    /// The two, one after the other.
    Both,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    /// The route loaded (`v1` or `healthchecks`).
    pub route: Route,
    /// Servers.
    pub servers: usize,
    /// Connections.
    pub connections: usize,
    /// Open-loop target rate, if any.
    pub target_rate: Option<u64>,
    /// Heartbeats per request on the batch route (`--batch`), if any.
    pub batch: Option<u16>,
    /// Measured seconds.
    pub elapsed_seconds: f64,
    /// Requests sent.
    pub requests: u64,
    /// 202 answers per second (202 items with `--batch`).
    pub accepted_per_second: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: BTreeMap<String, f64>,
    /// Answers by status code (`transport` for connection errors).
    pub status_counts: BTreeMap<String, u64>,
    /// Host CPU use over the run, in cores (1.0 = one core busy), when spawned.
    pub host_cpu_cores: Option<f64>,
    /// Host peak RSS, MiB, when spawned.
    pub host_peak_rss_mib: Option<f64>,
    /// This load generator's CPU use over the run, in cores.
    pub generator_cpu_cores: f64,
}

struct SpawnedHost {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for SpawnedHost {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux platform Vigil targets.
    Some(ticks / 100.0)
}

fn peak_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn spawn_host(extra_config: &str) -> anyhow::Result<(SpawnedHost, String, String)> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = format!("bench-{}", hex::encode(rand::random::<[u8; 16]>()));
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\nurl = \"sqlite://{}\"\n{extra_config}\n",
            dir.path().join("bench.db").display()
        ),
    )?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&config)
        .env("VIGIL_ADMIN_TOKEN", &token)
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the host")?;
    Ok((
        SpawnedHost { child, _dir: dir },
        format!("http://127.0.0.1:{port}"),
        token,
    ))
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the host at {url} did not become ready within 60 s")
}

/// One server's requests: its pre-signed heartbeats (v1), or empty bodies to its ping URL.
struct Sender {
    /// The path requests go to (`/v1/agent/heartbeat` or `/ping/{uuid}`).
    path: String,
    bodies: Vec<bytes::Bytes>,
}

fn presign(keys: &[(String, SigningKey)], per_server: usize, base_ms: i64) -> Vec<Sender> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = keys.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, (id, key))| {
                            let bodies = (0..per_server)
                                .map(|n| {
                                    let mut body = Map::new();
                                    body.insert("server_id".into(), id.clone().into());
                                    body.insert("key_version".into(), 1.into());
                                    let at = base_ms + (n as i64) * 10 + (i as i64 % 10);
                                    body.insert("timestamp".into(), format_rfc3339_ms(at).into());
                                    body.insert("status".into(), "online".into());
                                    body.insert(
                                        "players_current".into(),
                                        ((n * 7 + i) % 64).into(),
                                    );
                                    body.insert("players_capacity".into(), 64.into());
                                    body.insert("map_name".into(), "The Island".into());
                                    body.insert("agent_version".into(), "1.0.3".into());
                                    body.insert("interval_seconds".into(), 30.into());
                                    body.insert("uptime_seconds".into(), (3600 + n).into());
                                    body.insert(
                                        "metrics".into(),
                                        json!({"cpu_percent": 23.5, "memory_percent": 67.2}),
                                    );
                                    let sig =
                                        sign_body(key, &body).expect("a map always canonicalises");
                                    body.insert("signature".into(), sig.into());
                                    bytes::Bytes::from(
                                        serde_json::to_vec(&Value::Object(body))
                                            .expect("serialises"),
                                    )
                                })
                                .collect();
                            Sender {
                                path: "/v1/agent/heartbeat".to_owned(),
                                bodies,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

async fn register(admin: &AdminClient, keys: &[(String, SigningKey)]) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let keys: Arc<Vec<(String, String)>> = Arc::new(
        keys.iter()
            .map(|(id, k)| (id.clone(), STANDARD.encode(k.verifying_key().as_bytes())))
            .collect(),
    );
    let bar = super::output::progress(keys.len() as u64, "registering servers");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (admin, next, keys, bar) = (admin.clone(), next.clone(), keys.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, public_key)) = keys.get(i) else {
                    return Ok(());
                };
                bar.inc(1);
                let r = admin
                    .post("/v1/admin/servers")
                    .json(&json!({"server_id": id, "public_key": public_key}))
                    .send()
                    .await?;
                if r.status() != reqwest::StatusCode::CREATED {
                    bail!(
                        "registering {id}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Mints a ping token for every server (`POST /v1/admin/servers/{id}/tokens`); the tokens in
/// the servers' order.
async fn mint_ping_tokens(
    admin: &AdminClient,
    keys: &[(String, SigningKey)],
) -> anyhow::Result<Vec<String>> {
    let ids: Arc<Vec<String>> = Arc::new(keys.iter().map(|(id, _)| id.clone()).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (admin, next, ids) = (admin.clone(), next.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut minted = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, anyhow::Error>(minted);
                };
                let r = admin
                    .post(&format!("/v1/admin/servers/{id}/tokens"))
                    .json(&json!({"kind": "ping"}))
                    .send()
                    .await?;
                if r.status() != reqwest::StatusCode::CREATED {
                    bail!(
                        "minting a ping token for {id}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                let answer: Value = r.json().await?;
                let token = answer["token"]
                    .as_str()
                    .context("the answer has no token")?
                    .to_owned();
                minted.push((i, token));
            }
        }));
    }
    let mut tokens = vec![String::new(); ids.len()];
    for t in tasks {
        for (i, token) in t.await?? {
            tokens[i] = token;
        }
    }
    Ok(tokens)
}

struct Tally {
    histogram: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    requests: u64,
}

async fn drive(
    url: String,
    senders: Vec<Arc<Sender>>,
    deadline: Instant,
    interval: Option<Duration>,
    phase: Duration,
    batch: Option<usize>,
) -> Tally {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .expect("client builds");
    let endpoints: Vec<String> = senders.iter().map(|s| format!("{url}{}", s.path)).collect();
    let mut tally = Tally {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        statuses: BTreeMap::new(),
        requests: 0,
    };
    let mut cursor = vec![0usize; senders.len()];
    // Open loop: connections are spread over the interval, so the host sees the rate as a
    // steady stream, not as bursts of one request per connection at the same instant.
    let mut next_send = Instant::now() + phase;
    let mut turn = 0usize;
    if let Some(size) = batch {
        let endpoint = format!("{url}/v1/agent/heartbeats");
        while Instant::now() < deadline && !senders.is_empty() {
            // The next `size` bodies, round robin over this connection's servers (each
            // server's in timestamp order, so the host sees no replay).
            let mut body = Vec::new();
            let mut items = 0;
            while items < size {
                if cursor
                    .iter()
                    .zip(&senders)
                    .all(|(c, s)| *c >= s.bodies.len())
                {
                    break;
                }
                let s = turn % senders.len();
                turn += 1;
                if let Some(one) = senders[s].bodies.get(cursor[s]) {
                    cursor[s] += 1;
                    body.extend_from_slice(one);
                    body.push(b'\n');
                    items += 1;
                }
            }
            if items == 0 {
                break;
            }
            let started = Instant::now();
            let answer = client
                .post(&endpoint)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                    let answer: Value = r.json().await.unwrap_or_default();
                    for item in answer["items"].as_array().into_iter().flatten() {
                        let status = item["status"].as_u64().unwrap_or(0).to_string();
                        *tally.statuses.entry(status).or_default() += 1;
                    }
                }
                Ok(r) => {
                    let status = r.status().as_u16().to_string();
                    let _ = r.bytes().await;
                    *tally.statuses.entry(status).or_default() += items as u64;
                }
                Err(_) => *tally.statuses.entry("transport".into()).or_default() += items as u64,
            }
            let micros = u64::try_from(started.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let _ = tally.histogram.record(micros.min(60_000_000));
            tally.requests += 1;
        }
        return tally;
    }
    while Instant::now() < deadline && !senders.is_empty() {
        let s = turn % senders.len();
        turn += 1;
        let Some(body) = senders[s].bodies.get(cursor[s]).cloned() else {
            if cursor
                .iter()
                .zip(&senders)
                .all(|(c, s)| *c >= s.bodies.len())
            {
                break;
            }
            continue;
        };
        cursor[s] += 1;
        let started = match interval {
            Some(step) => {
                tokio::time::sleep_until(next_send.into()).await;
                let scheduled = next_send;
                next_send += step;
                scheduled
            }
            None => Instant::now(),
        };
        let answer = client
            .post(&endpoints[s])
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let status = match answer {
            Ok(r) => {
                let code = r.status().as_u16().to_string();
                let _ = r.bytes().await;
                code
            }
            Err(_) => "transport".to_owned(),
        };
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = tally.histogram.record(micros.min(60_000_000));
        *tally.statuses.entry(status).or_default() += 1;
        tally.requests += 1;
    }
    tally
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.servers >= 1 && args.connections >= 1 && args.duration >= 1,
        "servers, connections and duration must be at least 1"
    );
    anyhow::ensure!(args.duration <= 600, "duration is at most 600 s");
    anyhow::ensure!(
        args.batch.is_none() || (args.route == Route::V1 && args.rate.is_none()),
        "--batch drives the signed v1 route, closed loop (no --route, no --rate)"
    );
    let (host, urls, token) = if args.spawn {
        let mut config = args.host_config.clone();
        if args.route != Route::V1 {
            config.push_str("\n[compat.healthchecks]\nenabled = true\n");
        }
        let (host, url, token) = spawn_host(&config)?;
        (Some(host), vec![url], Some(token))
    } else {
        let urls: Vec<String> = args
            .url
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        (None, urls, args.token.clone())
    };
    anyhow::ensure!(!urls.is_empty(), "--url names no host");
    for url in &urls {
        wait_ready(url).await?;
    }
    let url = urls[0].clone();
    let token = token
        .context("an admin token is needed to register servers: --token or VIGIL_ADMIN_TOKEN")?;

    let run_id = rand::random::<u32>();
    let keys: Vec<(String, SigningKey)> = (0..args.servers)
        .map(|i| {
            (
                format!("bench-{run_id:08x}-{i}"),
                SigningKey::generate(&mut rand::rngs::OsRng),
            )
        })
        .collect();
    let t = Instant::now();
    register(&AdminClient::new(&url, &token), &keys).await?;
    eprintln!(
        "registered {} servers in {:.1} s",
        keys.len(),
        t.elapsed().as_secs_f64()
    );

    let total = args
        .rate
        .unwrap_or(args.max_rate)
        .saturating_mul(args.duration);
    let per_server = usize::try_from(total.div_ceil(args.servers as u64))
        .unwrap_or(usize::MAX)
        .clamp(1, 20_000);
    let t = Instant::now();
    // Timestamps start 100 s in the past (well inside the default 300 s skew window) and step
    // 10 ms per heartbeat of a server.
    let senders = presign(&keys, per_server, crate::clock::now_ms() - 100_000);
    eprintln!(
        "pre-signed {} heartbeats in {:.1} s",
        per_server * keys.len(),
        t.elapsed().as_secs_f64()
    );

    let routes: &[Route] = match args.route {
        Route::Both => &[Route::V1, Route::Healthchecks],
        Route::V1 => &[Route::V1],
        Route::Healthchecks => &[Route::Healthchecks],
    };
    let tokens = if args.route == Route::V1 {
        Vec::new()
    } else {
        let t = Instant::now();
        let tokens = mint_ping_tokens(&AdminClient::new(&url, &token), &keys).await?;
        eprintln!(
            "minted {} ping tokens in {:.1} s",
            tokens.len(),
            t.elapsed().as_secs_f64()
        );
        tokens
    };
    let mut senders = Some(senders);
    let mut failed = None;
    let mut reports = Vec::new();
    for route in routes {
        let senders = match route {
            Route::Healthchecks => tokens
                .iter()
                .map(|token| Sender {
                    path: format!("/ping/{token}"),
                    bodies: vec![bytes::Bytes::new(); per_server],
                })
                .collect(),
            _ => senders.take().unwrap_or_default(),
        };
        let (report, checked) = measure(&args, *route, &urls, host.as_ref(), senders).await?;
        reports.push(report);
        if let Err(e) = checked {
            failed = Some(e);
        }
    }
    drop(host);
    if args.json {
        // One report, or with `--route both` an array of the two.
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            all => serde_json::to_string_pretty(all)?,
        };
        println!("{json}");
    }
    failed.map_or(Ok(()), Err)
}

/// One measured phase: `senders` spread over the connections for `--duration` seconds.
async fn measure(
    args: &BenchArgs,
    route: Route,
    urls: &[String],
    host: Option<&SpawnedHost>,
    senders: Vec<Sender>,
) -> anyhow::Result<(BenchReport, anyhow::Result<()>)> {
    let connections = args.connections.min(args.servers);
    let mut groups: Vec<Vec<Arc<Sender>>> = vec![Vec::new(); connections];
    for (i, sender) in senders.into_iter().enumerate() {
        groups[i % connections].push(Arc::new(sender));
    }
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(connections as f64 / rate.max(1) as f64));
    let host_pid = host.as_ref().map(|h| h.child.id().to_string());
    let host_cpu_before = host_pid.as_deref().and_then(cpu_seconds);
    let self_cpu_before = cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let tasks: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let phase =
                interval.map_or(Duration::ZERO, |step| step * i as u32 / connections as u32);
            tokio::spawn(drive(
                urls[i % urls.len()].clone(),
                g,
                deadline,
                interval,
                phase,
                args.batch.map(usize::from),
            ))
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut statuses = BTreeMap::new();
    let mut requests = 0;
    for task in tasks {
        let tally = task.await?;
        histogram
            .add(&tally.histogram)
            .context("merging latencies")?;
        for (k, v) in tally.statuses {
            *statuses.entry(k).or_insert(0) += v;
        }
        requests += tally.requests;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let host_cpu = host_pid
        .as_deref()
        .and_then(cpu_seconds)
        .zip(host_cpu_before)
        .map(|(after, before)| (after - before) / elapsed);
    let host_rss = host_pid.as_deref().and_then(peak_rss_mib);
    let generator_cpu = (cpu_seconds("self").unwrap_or(0.0) - self_cpu_before) / elapsed;
    let accepted = if route == Route::Healthchecks {
        "200"
    } else {
        "202"
    };

    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = BenchReport {
        route,
        servers: args.servers,
        connections,
        target_rate: args.rate,
        batch: args.batch,
        elapsed_seconds: elapsed,
        requests,
        accepted_per_second: statuses.get(accepted).copied().unwrap_or(0) as f64 / elapsed,
        latency_ms: BTreeMap::from([
            ("p50".to_owned(), ms(0.50)),
            ("p95".to_owned(), ms(0.95)),
            ("p99".to_owned(), ms(0.99)),
            ("max".to_owned(), histogram.max() as f64 / 1000.0),
        ]),
        status_counts: statuses,
        host_cpu_cores: host_cpu,
        host_peak_rss_mib: host_rss,
        generator_cpu_cores: generator_cpu,
    };
    if !args.json {
        println!(
            "{:?} route: {} servers, {} connections, {}: {:.1} s",
            report.route,
            report.servers,
            report.connections,
            report
                .target_rate
                .map_or("closed loop".to_owned(), |r| format!("open loop at {r}/s")),
            report.elapsed_seconds
        );
        if let Some(n) = report.batch {
            println!("batch route, {n} heartbeats per request (latency is per request)");
        }
        println!(
            "accepted/s: {:.0}   requests: {}",
            report.accepted_per_second, report.requests
        );
        println!(
            "latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            report.latency_ms["p50"],
            report.latency_ms["p95"],
            report.latency_ms["p99"],
            report.latency_ms["max"]
        );
        println!("status codes: {:?}", report.status_counts);
        if let (Some(cpu), Some(rss)) = (report.host_cpu_cores, report.host_peak_rss_mib) {
            println!("host: {cpu:.2} cores busy, peak RSS {rss:.0} MiB");
        }
        println!(
            "load generator: {:.2} cores busy",
            report.generator_cpu_cores
        );
    }
    let unexpected: u64 = report
        .status_counts
        .iter()
        .filter(|(k, _)| k.as_str() != accepted && !matches!(k.as_str(), "429" | "503"))
        .map(|(_, v)| v)
        .sum();
    let checked = if unexpected > 0 {
        Err(anyhow::anyhow!(
            "{unexpected} answers other than {accepted}/429/503"
        ))
    } else {
        Ok(())
    };
    Ok((report, checked))
}
