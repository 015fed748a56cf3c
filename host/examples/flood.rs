//! A bounded loopback flood of forged heartbeats, to measure what rejecting them costs a host.
//!
//! ```text
//! cargo run --release -p vigil --example flood -- URL SERVER_ID [REQUESTS] [CONCURRENCY] [MAX_SECONDS] [HOST_PID]
//! ```
//! Each request claims `SERVER_ID` with a fresh timestamp but is signed by a random key (so the
//! host must refuse it: 401 `bad_signature`, or 429 once a bucket is empty). Stops after
//! `REQUESTS` (default 20000) or `MAX_SECONDS` (default 30), whichever comes first, and prints
//! the answers per status, requests/s, and — given the host's PID — the host's CPU seconds
//! (from /proc) per 1000 requests. Only loopback URLs are accepted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Map, Value};
use vigil::clock::format_rfc3339_ms;
use vigil::ingest::signature::sign_body;

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    anyhow::ensure!(
        url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost"),
        "loopback URLs only"
    );
    let server_id = args.get(1).cloned().unwrap_or_else(|| "victim".into());
    let total: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let max_time = Duration::from_secs(args.get(4).and_then(|s| s.parse().ok()).unwrap_or(30));
    let pid: Option<u32> = args.get(5).and_then(|s| s.parse().ok());

    // Pre-sign a pool of forged bodies so the load tool's own signing does not limit the rate.
    let forger = SigningKey::generate(&mut rand::rngs::OsRng);
    let now = vigil::clock::now_ms();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..1024)
            .map(|i| {
                let mut body = Map::new();
                body.insert("server_id".into(), Value::from(server_id.clone()));
                body.insert("key_version".into(), 1.into());
                body.insert("timestamp".into(), format_rfc3339_ms(now + i).into());
                body.insert("status".into(), "online".into());
                let signature = sign_body(&forger, &body).expect("signs");
                body.insert("signature".into(), signature.into());
                serde_json::to_vec(&body).expect("serialises")
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let endpoint = format!("{}/v1/agent/heartbeat", url.trim_end_matches('/'));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cpu_before = pid.and_then(cpu_seconds);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, endpoint, bodies, next) = (
            client.clone(),
            endpoint.clone(),
            bodies.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() >= max_time {
                    break;
                }
                let body = bodies[(i % bodies.len() as u64) as usize].clone();
                let status = match client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *counts.entry(status).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.await? {
            *counts.entry(status).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent: u64 = counts.values().sum();
    println!(
        "sent {sent} forged heartbeats in {elapsed:.2} s: {:.0} requests/s",
        sent as f64 / elapsed
    );
    for (status, n) in &counts {
        println!("  status {status}: {n}");
    }
    if let (Some(before), Some(after)) = (cpu_before, pid.and_then(cpu_seconds)) {
        let cpu = after - before;
        println!(
            "host CPU: {cpu:.2} s ({:.0}% of one core), {:.1} ms per 1000 requests",
            cpu / elapsed * 100.0,
            cpu / sent as f64 * 1e6
        );
    }
    Ok(())
}
