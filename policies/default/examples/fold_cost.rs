//! What one `evaluate` of the default policy costs natively, without the component boundary:
//! folds `N` heartbeats 30 s apart (after a day of warm-up, so the minute ring is full) exactly
//! as the host calls the policy, and prints the time per event.
//!
//! `cargo run --release -p vigil-policy-default --example fold_cost [-- N]`; for a
//! load-independent count, run the binary under `valgrind --tool=callgrind` and divide the
//! instruction count by `N`.

use std::time::Instant;

use vigil_policy_default::DefaultPolicy;
use vigil_policy_sdk::{AuthKind, Event, Facts, Heartbeat, Metric, Params, Policy};

const T0: i64 = 1_790_000_000_000;

fn heartbeat(now_ms: i64, i: u64) -> Event {
    Event::Heartbeat(Heartbeat {
        received_at_ms: now_ms,
        sent_at_ms: now_ms,
        signed: true,
        auth: AuthKind::Signature,
        status: Some("online".into()),
        mode: Some("idle".into()),
        interval_seconds: Some(30),
        uptime_seconds: Some(3600 + i * 30),
        players_current: Some((i % 50) as u32),
        players_capacity: Some(64),
        agent_version: Some("1.0.3".into()),
        metrics: vec![
            Metric {
                name: "cpu_percent".into(),
                value: 23.5,
            },
            Metric {
                name: "memory_percent".into(),
                value: 67.2,
            },
        ],
        run: None,
    })
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let params = Params::defaults(&DefaultPolicy::describe().params);
    let facts = Facts {
        server_id: "eu-island-01".into(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: T0 - 2 * 86_400_000,
        schedule: None,
    };
    let warm_up = 2 * 2880;
    let events: Vec<(i64, Event)> = (0..warm_up + n)
        .map(|i| {
            let now = T0 + i as i64 * 30_000;
            (now, heartbeat(now, i))
        })
        .collect();
    let mut state: Option<Vec<u8>> = None;
    let mut fold = |(now, event): &(i64, Event)| {
        let evaluation = DefaultPolicy::evaluate(&params, &facts, state.as_deref(), *now, event)
            .expect("evaluates");
        state = Some(evaluation.state);
    };
    let (warm, measured) = events.split_at(warm_up as usize);
    warm.iter().for_each(&mut fold);
    let started = Instant::now();
    measured.iter().for_each(&mut fold);
    let elapsed = started.elapsed();
    println!(
        "{n} heartbeats in {:.3} s: {:.0} ns per evaluate ({:.0} evaluates/s); state {} bytes",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / n as f64,
        n as f64 / elapsed.as_secs_f64(),
        state.as_ref().map_or(0, Vec::len),
    );
}
