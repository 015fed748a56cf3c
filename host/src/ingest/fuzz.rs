//! Property tests over decode + canonicalise + verify (the input path's hardening suite).
//!
//! In the normal test run each property runs a small number of cases. For a long run, set
//! `VIGIL_FUZZ_SECONDS` (each property then runs until that many seconds have passed, with a
//! fresh seed per round) and read the printed execution counts:
//!
//! ```text
//! VIGIL_FUZZ_SECONDS=600 cargo test -p vigil --lib ingest::fuzz -- --nocapture
//! ```

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};

use super::decode::{MAX_BODY_BYTES, decode};
use super::gate::{FixedServers, Gate};
use super::signature::{public_key_of, sign_body, signed_message};
use super::verified::Identity;
use super::verifier::Verifier;
use super::{Admitted, Refusal};
use crate::clock::format_rfc3339_ms;
use crate::config::{Config, ConfigHandle};

/// The production gate over one known server, with the switches `adjust` sets, and
/// a runtime to drive it from the (synchronous) properties.
struct Bench {
    gate: Gate,
    runtime: tokio::runtime::Runtime,
}

impl Bench {
    fn new(identity: Identity, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        // The buckets are not under test here: thousands of cases name one server.
        config.rate_limit.per_server_per_minute = 0;
        config.rate_limit.per_ip_per_minute = 0;
        adjust(&mut config);
        let servers = std::sync::Arc::new(FixedServers::new([identity]));
        let verifier = Verifier::start(64).expect("verifier thread starts");
        Self {
            gate: Gate::new(ConfigHandle::new(config), verifier, servers),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        }
    }

    /// One `POST /v1/agent/heartbeat` with `body`, received at `at_ms`.
    fn admit(&self, body: &[u8], at_ms: i64) -> Result<Admitted, Refusal> {
        let request = axum::http::Request::post("/v1/agent/heartbeat")
            .body(axum::body::Body::from(body.to_vec()))
            .expect("request");
        self.runtime.block_on(self.gate.admit_at(request, at_ms))
    }
}

/// Runs `test` over `strategy`: a few cases normally, or for `VIGIL_FUZZ_SECONDS`.
fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("VIGIL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let cases: u32 = if budget.is_some() { 2000 } else { 64 };
    let started = Instant::now();
    let mut executions: u64 = 0;
    let mut round: u64 = 0;
    loop {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..16].copy_from_slice(&(started.elapsed().as_nanos() as u64).to_le_bytes());
        let config = Cases {
            cases,
            failure_persistence: None,
            ..Cases::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        executions += u64::from(cases);
        round += 1;
        match budget {
            Some(budget) if started.elapsed() < budget => continue,
            _ => break,
        }
    }
    if budget.is_some() {
        println!(
            "fuzz {name}: {executions} executions in {:.0} s, no failure",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Arbitrary JSON. With `wire`, numbers keep to the wire's rules (integers within ±(2^53−1),
/// so floats below 2^53 in magnitude); without, any finite double.
fn json_value(wire: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-9_007_199_254_740_991i64..=9_007_199_254_740_991).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", move |f| {
                f.is_finite() && (!wire || f.abs() < 9_007_199_254_740_991.0)
            })
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z\u{00e9}\u{2028}\u{1F600}\\\\\"]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Serialises `value` with object members in a shuffled order and random whitespace.
fn render(value: &Value, entropy: &mut impl Iterator<Item = u8>, out: &mut String) {
    let ws = |out: &mut String, e: &mut dyn Iterator<Item = u8>| {
        let pick = e.next().unwrap_or(0);
        out.push_str([" ", "", "\n", "\t", "  ", "\r\n", ""][usize::from(pick % 7)]);
    };
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(out, entropy);
                render(item, entropy, out);
                ws(out, entropy);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // Fisher-Yates with the entropy stream.
            for i in (1..members.len()).rev() {
                let j = usize::from(entropy.next().unwrap_or(0)) % (i + 1);
                members.swap(i, j);
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(out, entropy);
                out.push_str(&serde_json::to_string(k).expect("a string serialises"));
                ws(out, entropy);
                out.push(':');
                ws(out, entropy);
                render(v, entropy, out);
            }
            ws(out, entropy);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).expect("a value serialises")),
    }
}

fn canonical(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).expect("canonicalises")
}

#[test]
fn decode_and_check_never_panic_on_arbitrary_bytes() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let bench = Bench::new(
        Identity {
            server_id: "eu-1".into(),
            public_key: public_key_of(&key),
            key_version: 1,
            is_verified: true,
        },
        |config| config.trust.require_signature = false,
    );
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // Near-valid bodies: a valid prefix with arbitrary bytes spliced in.
        (prop::collection::vec(any::<u8>(), 0..64), 0usize..200).prop_map(|(junk, at)| {
            let mut body = br#"{"server_id":"eu-1","key_version":1,"timestamp":"2026-01-22T21:05:00Z","payload":{"a":[1,2,{"b":null}]},"signature":"AAAA"}"#.to_vec();
            let at = at.min(body.len());
            body.splice(at..at, junk);
            body
        }),
    ];
    run("arbitrary bytes", strategy, |bytes| {
        let _ = decode(&bytes);
        let _ = bench.admit(&bytes, 0);
        Ok(())
    });
}

#[test]
fn jcs_is_stable_under_member_order_and_whitespace() {
    let strategy = (
        json_value(false),
        prop::collection::vec(any::<u8>(), 64..256),
    );
    run("jcs stability", strategy, |(value, entropy)| {
        let mut text = String::new();
        render(&value, &mut entropy.into_iter().cycle(), &mut text);
        let reparsed: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("rendered text does not parse: {e}")))?;
        prop_assert_eq!(canonical(&reparsed), canonical(&value));
        Ok(())
    });
}

#[test]
fn signed_heartbeats_verify_after_reordering_and_fail_after_any_change() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let identity = Identity {
        server_id: "eu-1".into(),
        public_key: public_key_of(&key),
        key_version: 1,
        is_verified: true,
    };
    let public_key = identity.public_key.clone();
    let bench = Bench::new(identity, |config| {
        config.trust.max_clock_skew_seconds = u64::MAX;
    });
    let strategy = (
        json_value(true),
        json_value(true),
        prop::collection::vec(any::<u8>(), 64..256),
        "[a-z0-9]{1,12}",
    );
    run(
        "sign, reorder, verify",
        strategy,
        |(payload, os_info, entropy, map)| {
            let mut body = Map::new();
            body.insert("server_id".into(), "eu-1".into());
            body.insert("key_version".into(), 1.into());
            body.insert(
                "timestamp".into(),
                format_rfc3339_ms(1_769_115_900_000).into(),
            );
            body.insert("map_name".into(), map.clone().into());
            if payload.is_object() {
                body.insert("payload".into(), payload);
            }
            if os_info.is_object() {
                body.insert("os_info".into(), os_info);
            }
            let signature = sign_body(&key, &body).expect("signs");
            body.insert("signature".into(), signature.into());
            let mut text = String::new();
            render(
                &Value::Object(body.clone()),
                &mut entropy.iter().copied().cycle(),
                &mut text,
            );
            prop_assume!(text.len() <= MAX_BODY_BYTES);
            let accepted = bench.admit(text.as_bytes(), 1_769_115_900_000);
            // Generated members keep to every shape rule, so the reordered body must pass.
            if let Err(r) = accepted {
                return Err(TestCaseError::fail(format!("refused: {r:?}\n{text}")));
            }
            // Any change of a signed member breaks the signature.
            let mut changed = body.clone();
            changed.insert("map_name".into(), format!("{map}x").into());
            let message = signed_message(&changed).expect("canonicalises");
            let signature =
                super::signature::parse_signature(body["signature"].as_str().expect("string"))
                    .expect("decodes");
            prop_assert!(public_key.verify(&message, &signature).is_err());
            Ok(())
        },
    );
}
