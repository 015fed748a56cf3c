//! Micro-benchmarks of the ingest hot path: canonicalise + verify, one policy fold, a batch
//! write of 500 heartbeats, and replay of in-memory history through the default policy.
//!
//! `cargo bench -p vigil --bench hot_path` (add `-- <name>` to run one).

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use vigil::config::PolicyConfig;
use vigil::engine::fold::{FoldEffects, fold_heartbeat};
use vigil::engine::replay::replay;
use vigil::ingest::decode::{decode, format_rfc3339_ms};
use vigil::ingest::signature::{parse_signature, public_key_of, sign_body, signed_message};
use vigil::policy::{DEFAULT_POLICY, LoadedPolicy, PolicyLimits, PolicyRuntime};
use vigil::store::sqlite::SqliteStore;
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

fn policy() -> Arc<LoadedPolicy> {
    let runtime = PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default())).expect("engine");
    runtime
        .load(DEFAULT_POLICY, &BTreeMap::new())
        .expect("default policy loads")
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
            let sig = parse_signature(&d.signature).expect("sig");
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
    let decoded: Vec<_> = (0..1000)
        .map(|i| decode(&body(&key, "s", T0 + i * 30_000)).expect("valid"))
        .collect();
    // A server with some history, so the fold works on a realistic state.
    let mut warm = server("s");
    let mut effects = FoldEffects::default();
    for (i, d) in decoded.iter().enumerate().take(500) {
        fold_heartbeat(
            &policy,
            &mut warm,
            T0 + i as i64 * 30_000,
            d,
            true,
            &mut effects,
        );
    }
    assert!(effects.errors.is_empty(), "{:?}", effects.errors);
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(1));
    let mut n = 500usize;
    group.bench_function("fold one heartbeat (default policy)", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |server| {
                n = if n + 1 >= decoded.len() { 500 } else { n + 1 };
                let mut effects = FoldEffects::default();
                fold_heartbeat(
                    &policy,
                    server,
                    T0 + n as i64 * 30_000,
                    &decoded[n],
                    true,
                    &mut effects,
                );
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn batch_write(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = rt
        .block_on(SqliteStore::open(
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
        true,
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
                signature: d.signature,
                body: String::from_utf8(raw).expect("utf-8"),
                policy_digest: String::new(),
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
    group.finish();
}

criterion_group!(
    benches,
    canonicalise_and_verify,
    policy_fold,
    batch_write,
    replay_rate
);
criterion_main!(benches);
