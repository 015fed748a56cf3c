//! A small, bounded load generator for the scale-out measurement (docs/scale-out.md): registers
//! `--servers` servers through the first host, then for `--seconds` sends signed heartbeats from
//! `--concurrency` workers, spreading requests over every `--url` in turn, and prints the
//! accepted heartbeats per second. Each server belongs to one worker, so its heartbeats are sent
//! in timestamp order and every refusal is a real one. Loopback hosts only; it stops by itself.
//!
//! `vigil-load --url http://127.0.0.1:8081 --url http://127.0.0.1:8082 --servers 200
//!  --seconds 20 --concurrency 64` (admin token from `VIGIL_ADMIN_TOKEN`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use vigil_tests::Agent;

struct Args {
    urls: Vec<String>,
    servers: usize,
    seconds: u64,
    concurrency: usize,
    prefix: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        urls: Vec::new(),
        servers: 200,
        seconds: 20,
        concurrency: 64,
        prefix: format!("load-{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.urls.push(value()?.trim_end_matches('/').to_owned()),
            "--servers" => args.servers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("{e}"))?,
            "--prefix" => args.prefix = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.urls.is_empty() {
        return Err("give at least one --url".into());
    }
    if !args
        .urls
        .iter()
        .all(|u| u.starts_with("http://127.0.0.1:") || u.starts_with("http://localhost:"))
    {
        return Err("load is only sent to loopback hosts (http://127.0.0.1:PORT)".into());
    }
    args.seconds = args.seconds.clamp(1, 300);
    args.concurrency = args.concurrency.clamp(1, 1024).min(args.servers.max(1));
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let token = std::env::var("VIGIL_ADMIN_TOKEN").map_err(|_| "set VIGIL_ADMIN_TOKEN")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let mut agents = Vec::with_capacity(args.servers);
    for i in 0..args.servers {
        let agent = Agent::new(&format!("{}-{i}", args.prefix));
        let status = client
            .post(format!("{}/v1/admin/servers", args.urls[0]))
            .bearer_auth(&token)
            .json(&json!({"server_id": agent.server_id, "public_key": agent.public_key_b64()}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status();
        if !status.is_success() {
            return Err(format!("registering {} answered {status}", agent.server_id));
        }
        agents.push(agent);
    }
    // Every host learns of the new servers through NOTIFY; give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let agents = Arc::new(agents);
    let urls = Arc::new(args.urls.clone());
    let next_url = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (agents, urls, next_url, client) = (
            agents.clone(),
            urls.clone(),
            next_url.clone(),
            client.clone(),
        );
        let concurrency = args.concurrency;
        workers.push(tokio::spawn(async move {
            let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
            let mine: Vec<&Agent> = agents.iter().skip(worker).step_by(concurrency).collect();
            let mut turn = 0;
            while Instant::now() < deadline {
                let agent = mine[turn % mine.len()];
                turn += 1;
                let url = &urls[next_url.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let status = match client
                    .post(format!("{url}/v1/agent/heartbeat"))
                    .json(&agent.heartbeat(json!({"players_current": turn % 50})))
                    .send()
                    .await
                {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                *answers.entry(status).or_default() += 1;
            }
            answers
        }));
    }
    let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.await.map_err(|e| e.to_string())? {
            *answers.entry(status).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = answers.get(&202).copied().unwrap_or(0);
    println!(
        "hosts={} servers={} concurrency={} seconds={elapsed:.1} accepted={accepted} \
         accepted_per_second={:.0} answers={answers:?}",
        args.urls.len(),
        args.servers,
        args.concurrency,
        accepted as f64 / elapsed
    );
    Ok(())
}
