//! Micro-benchmarks of the ingest hot path: canonicalise + verify, one policy fold, a batch
//! write of 500 heartbeats, replay of in-memory history through the default policy, and one
//! `evaluate-run` call over decoded events (the policy-call cost per replayed event).
//!
//! `cargo bench -p vigil --bench hot_path` (add `-- <name>` to run one). The policy and replay
//! benches use the bundled default policy, or the component at `$VIGIL_BENCH_POLICY`.

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use vigil::clock::format_rfc3339_ms;
use vigil::config::PolicyConfig;
use vigil::engine::fold::{FoldEffects, fold_heartbeat};
use vigil::engine::replay::{replay, replay_onto_in_runs};
use vigil::ingest::decode::{DecodedHeartbeat, decode, decode_stored};
use vigil::ingest::signature::{parse_signature, public_key_of, sign_body, signed_message};
use vigil::policy::{
    DEFAULT_POLICY, LoadedPolicy, PolicyEvent, PolicyLimits, PolicyRuntime, ServerFacts, TimedEvent,
};
use vigil::store::{
    HeartbeatRow, HistoryEvent, NewServer, ServerRecord, Snapshot, SnapshotRow, Store, WriteBatch,
};

const T0: i64 = 1_790_000_000_000;

fn body(key: &SigningKey, server_id: &str, at_ms: i64) -> Vec<u8> {
    let mut body = Map::new();
    let fields = json!({
        "server_id": server_id, "key_version": 1, "timestamp": format_rfc3339_ms(at_ms),
        "status": "online", "players_current": 42, "players_capacity": 64,
        "map_name": "The Island", "agent_version": "1.0.3", "interval_seconds": 30,
        "uptime_seconds": 3600, "metrics": {"cpu_percent": 23.5, "memory_percent": 67.2},
    });
    if let Value::Object(f) = fields {
        body.extend(f);
    }
    let sig = sign_body(key, &body).expect("signs");
    body.insert("signature".into(), sig.into());
    serde_json::to_vec(&Value::Object(body)).expect("serialises")
}

/// The bundled default policy, or the component at `$VIGIL_BENCH_POLICY` (to compare two
/// builds of a policy on the same benches).
fn policy() -> Arc<LoadedPolicy> {
    let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default())).expect("engine");
    let bytes = match std::env::var_os("VIGIL_BENCH_POLICY") {
        Some(path) => std::fs::read(&path).expect("VIGIL_BENCH_POLICY is readable"),
        None => DEFAULT_POLICY.to_vec(),
    };
    runtime
        .load(&bytes, &BTreeMap::new())
        .expect("the policy loads")
}

fn server(id: &str) -> ServerRecord {
    ServerRecord {
        server_id: id.into(),
        display_name: None,
        cluster_id: None,
        public_key: String::new(),
        key_version: 1,
        is_verified: true,
        registered_at_ms: T0 - 86_400_000,
        admin: Default::default(),
        snapshot: Snapshot::unseen(),
    }
}

fn canonicalise_and_verify(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = public_key_of(&key);
    let raw = body(&key, "eu-island-01", T0);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode+canonicalise+verify", |b| {
        b.iter(|| {
            let d = decode(&raw).expect("valid");
            let message = signed_message(&d.body).expect("canonical");
            let sig = parse_signature(d.signature.as_deref().expect("signed")).expect("sig");
            public.verify(&message, &sig).expect("verifies");
        })
    });
    group.bench_function("decode+canonicalise", |b| {
        b.iter(|| {
            let d = decode(&raw).expect("valid");
            signed_message(&d.body).expect("canonical")
        })
    });
    group.finish();
}

fn policy_fold(c: &mut Criterion) {
    let policy = policy();
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut heartbeat = decode(&body(&key, "s", T0)).expect("valid");
    // A server with a day of history every 30 s, so the fold works on a realistic state (a
    // full minute ring). Each measured fold is the next heartbeat 30 s later: the steady state
    // of a live server (no ticks due in between).
    let mut server = server("s");
    let mut now = T0;
    let mut effects = FoldEffects::default();
    for _ in 0..2880 {
        now += 30_000;
        heartbeat.sent_at_ms = now;
        fold_heartbeat(
            &policy,
            &mut server,
            now,
            &heartbeat,
            vigil::store::AuthKind::Signature,
            &mut effects,
        );
    }
    assert!(effects.errors.is_empty(), "{:?}", effects.errors);
    // The load-independent cost: fuel (≈ WebAssembly instructions) of one steady-state call.
    let facts = vigil::engine::fold::facts_of(&server);
    let outcome = policy
        .evaluate(
            &facts,
            server.snapshot.policy_state.as_deref(),
            now + 30_000,
            PolicyEvent::Heartbeat {
                received_at_ms: now + 30_000,
                auth: vigil::policy::AuthKind::Signature,
                heartbeat: &heartbeat,
            },
        )
        .expect("evaluates");
    eprintln!(
        "policy/fold one heartbeat (default policy): {} fuel per evaluate, state {} bytes",
        outcome.fuel_used,
        outcome.state.len()
    );
    // One fold is one evaluation for the default policy (its deadline is 60 s away); another
    // policy (`VIGIL_BENCH_POLICY`) may ask for ticks in between, which are then measured too.
    if outcome
        .verdict
        .next_check_at_ms
        .is_some_and(|at| at <= now + 60_000)
    {
        eprintln!("note: this policy asks for ticks within 30 s; the bench includes them");
    }
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fold one heartbeat (default policy)", |b| {
        b.iter(|| {
            now += 30_000;
            heartbeat.sent_at_ms = now;
            let mut effects = FoldEffects::default();
            fold_heartbeat(
                &policy,
                &mut server,
                now,
                &heartbeat,
                vigil::store::AuthKind::Signature,
                &mut effects,
            );
            effects
        })
    });
    group.finish();
}

fn batch_write(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = rt
        .block_on(Store::open(
            &format!("sqlite://{}", dir.path().join("b.db").display()),
            4,
        ))
        .expect("store");
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = public_key_of(&key).to_base64();
    rt.block_on(async {
        for i in 0..500 {
            store
                .insert_server(&NewServer {
                    server_id: format!("s{i}"),
                    public_key: public.clone(),
                    fingerprint: String::new(),
                    display_name: None,
                    cluster_id: None,
                    registered_at_ms: T0,
                    added_by: "bench".into(),
                })
                .await
                .expect("insert");
        }
    });
    let policy = policy();
    let template = body(&key, "s0", T0);
    let text = String::from_utf8(template).expect("utf-8");
    let mut warm = server("s0");
    let mut effects = FoldEffects::default();
    fold_heartbeat(
        &policy,
        &mut warm,
        T0,
        &decode(text.as_bytes()).expect("ok"),
        vigil::store::AuthKind::Signature,
        &mut effects,
    );
    let mut seq = 0i64;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(500));
    group.sample_size(20);
    group.bench_function("commit 500 heartbeats + 500 snapshots (sqlite)", |b| {
        b.iter_batched(
            || {
                seq += 1;
                let mut batch = WriteBatch::default();
                for i in 0..500 {
                    batch.heartbeats.push(HeartbeatRow {
                        server_id: format!("s{i}"),
                        seq,
                        received_at_ms: T0 + seq,
                        sent_at_ms: T0 + seq,
                        key_version: 1,
                        signature: "x".repeat(88),
                        body: text.clone(),
                        policy_digest: policy.digest().to_owned(),
                        auth: vigil::store::AuthKind::Signature,
                        original_body: None,
                    });
                    batch.snapshots.push(SnapshotRow {
                        server_id: format!("s{i}"),
                        snapshot: warm.snapshot.clone(),
                    });
                }
                batch
            },
            |batch| rt.block_on(store.commit(&batch)).expect("commit"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn replay_rate(c: &mut Criterion) {
    let policy = policy();
    let key = SigningKey::from_bytes(&[7; 32]);
    let history: Vec<HistoryEvent> = (0..2_000)
        .map(|i| {
            let at = T0 + i * 30_000;
            let raw = body(&key, "r", at);
            let d = decode(&raw).expect("valid");
            HistoryEvent::Heartbeat(HeartbeatRow {
                server_id: "r".into(),
                seq: i + 1,
                received_at_ms: at,
                sent_at_ms: at,
                key_version: 1,
                signature: d.signature.expect("signed"),
                body: String::from_utf8(raw).expect("utf-8"),
                policy_digest: String::new(),
                auth: vigil::store::AuthKind::Signature,
                original_body: None,
            })
        })
        .collect();
    let identity = server("r");
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(history.len() as u64));
    group.sample_size(10);
    group.bench_function("replay 2000 heartbeats (default policy)", |b| {
        b.iter(|| replay(&policy, &identity, &history, None).expect("replays"))
    });
    // The same replay with one component call per event (a policy older than
    // `vigil:policy@1.2`, or `evaluate-run` unused).
    group.bench_function("replay 2000 heartbeats, one call per event", |b| {
        b.iter(|| {
            let mut server = identity.clone();
            let mut effects = FoldEffects::default();
            replay_onto_in_runs(&policy, &mut server, &history, &mut effects, 1).expect("replays");
            server
        })
    });
    // Two servers' histories replayed at once on two threads (each with its own instance),
    // the rate a rebuild spread over this machine's two cores could reach.
    group.throughput(Throughput::Elements(2 * history.len() as u64));
    group.bench_function("replay 2 x 2000 heartbeats on 2 threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                let other = scope.spawn(|| replay(&policy, &identity, &history, None));
                let here = replay(&policy, &identity, &history, None).expect("replays");
                (here, other.join().expect("joins").expect("replays"))
            })
        })
    });
    group.throughput(Throughput::Elements(history.len() as u64));
    // The host-side share of the above: parsing the stored JSON bodies, no policy call.
    group.bench_function("decode 2000 stored bodies (no policy)", |b| {
        b.iter(|| {
            history
                .iter()
                .map(|event| match event {
                    HistoryEvent::Heartbeat(row) => {
                        decode_stored(&row.body).expect("decodes").sent_at_ms
                    }
                    HistoryEvent::Rejected { .. } | HistoryEvent::HostResumed { .. } => 0,
                })
                .sum::<i64>()
        })
    });
    group.finish();
}

/// One `evaluate-run` call over 256 decoded heartbeats 30 s apart (no JSON, no host fold): the
/// policy-call cost per event in a replay. The tick variant lowers no heartbeat fields, so the
/// difference is what copying a heartbeat into the guest costs.
fn policy_run(c: &mut Criterion) {
    let policy = policy();
    if !policy.abi().folds_runs() {
        eprintln!("policy-run: the policy predates vigil:policy@1.2 (no evaluate-run); skipped");
        return;
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    let heartbeats: Vec<DecodedHeartbeat> = (0..256)
        .map(|i| decode(&body(&key, "r", T0 + i * 30_000)).expect("valid"))
        .collect();
    let at = |i: usize| T0 + i as i64 * 30_000;
    let events: Vec<TimedEvent<'_>> = heartbeats
        .iter()
        .enumerate()
        .map(|(i, heartbeat)| TimedEvent {
            now_ms: at(i),
            event: PolicyEvent::Heartbeat {
                received_at_ms: at(i),
                auth: vigil::policy::AuthKind::Signature,
                heartbeat,
            },
        })
        .collect();
    let ticks: Vec<TimedEvent<'_>> = (0..256)
        .map(|i| TimedEvent {
            now_ms: at(i),
            event: PolicyEvent::Tick,
        })
        .collect();
    let facts = ServerFacts {
        server_id: "r".into(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: T0 - 86_400_000,
        schedule: None,
    };
    let mut group = c.benchmark_group("policy-run");
    group.throughput(Throughput::Elements(256));
    for (name, events) in [
        ("evaluate-run, 256 heartbeats", &events),
        ("evaluate-run, 256 ticks", &ticks),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let run = policy.evaluate_run(&facts, None, events).expect("runs");
                assert_eq!(run.verdicts.len(), events.len(), "no tick falls due");
                run
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    canonicalise_and_verify,
    policy_fold,
    batch_write,
    replay_rate,
    policy_run
);
criterion_main!(benches);
