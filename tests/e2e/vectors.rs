//! The shared signature conformance vectors (copied into `tests/fixtures`): every vector
//! verifies through the real ingest checks, and any single-byte change fails.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use vigil::config::{Config, ConfigHandle};
use vigil::ingest::gate::FixedServers;
use vigil::ingest::signature::{PublicKey, parse_signature, public_key_of, signed_message};
use vigil::ingest::verified::Identity;
use vigil::ingest::verifier::Verifier;
use vigil::ingest::{Admitted, Gate, Refusal};

/// Posts `body` through the production admission gate, with `identity` the one registered
/// server. The vectors' timestamps are old: the clock check is opened wide instead of the
/// receive time moved, and rate limits are off (they are not under test here).
async fn admit(identity: Identity, body: &str) -> Result<Admitted, Refusal> {
    let mut config = Config::default();
    config.trust.max_clock_skew_seconds = u64::MAX;
    config.rate_limit.per_server_per_minute = 0;
    config.rate_limit.per_ip_per_minute = 0;
    let servers = Arc::new(FixedServers::new([identity]));
    let gate = Gate::new(
        ConfigHandle::new(config),
        Verifier::start(64).expect("verifier thread starts"),
        servers,
    );
    let request = axum::http::Request::post("/v1/agent/heartbeat")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    gate.admit_at(request, 0).await
}

fn vectors() -> Vec<Value> {
    let text = include_str!("../fixtures/heartbeat-signatures.json");
    let doc: Value = serde_json::from_str(text).expect("fixture is JSON");
    doc["vectors"].as_array().cloned().expect("vectors array")
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name}"))
}

#[tokio::test]
async fn every_vector_verifies_and_reproduces_key_fingerprint_message_and_signature() {
    let vectors = vectors();
    assert!(vectors.len() >= 3);
    for v in &vectors {
        let name = field(v, "name");
        let seed: [u8; 32] = STANDARD
            .decode(field(v, "private_key_seed_b64"))
            .expect("b64")
            .try_into()
            .expect("32");
        let key = SigningKey::from_bytes(&seed);
        let public = PublicKey::from_base64(field(v, "public_key_b64")).expect("key");
        assert_eq!(public_key_of(&key), public, "{name}: public key");
        assert_eq!(
            public.fingerprint(),
            field(v, "fingerprint"),
            "{name}: fingerprint"
        );
        let body: serde_json::Map<String, Value> =
            serde_json::from_str(field(v, "request_body")).expect("body");
        let message = signed_message(&body).expect("canonical");
        assert_eq!(
            message,
            field(v, "signed_message_utf8").as_bytes(),
            "{name}: signed message"
        );
        let signature = vigil::ingest::signature::sign_body(&key, &body).expect("signs");
        assert_eq!(signature, field(v, "signature_b64"), "{name}: signature");

        // Through the real ingest checks (the vectors' timestamps are old: no skew check here).
        let identity = Identity {
            server_id: body["server_id"].as_str().expect("id").into(),
            public_key: public.clone(),
            key_version: u32::try_from(body["key_version"].as_u64().expect("kv")).expect("u32"),
            is_verified: true,
        };
        admit(identity, field(v, "request_body"))
            .await
            .unwrap_or_else(|r| panic!("{name}: {r:?}"));
    }
}

#[tokio::test]
async fn any_single_byte_change_of_message_or_signature_fails() {
    for v in vectors() {
        let name = field(&v, "name");
        let public = PublicKey::from_base64(field(&v, "public_key_b64")).expect("key");
        let message = field(&v, "signed_message_utf8").as_bytes().to_vec();
        let sig_bytes = STANDARD.decode(field(&v, "signature_b64")).expect("b64");
        let signature = parse_signature(field(&v, "signature_b64")).expect("sig");
        public
            .verify(&message, &signature)
            .expect("the vector verifies");
        for i in 0..message.len() {
            let mut changed = message.clone();
            changed[i] ^= 0x01;
            assert!(
                public.verify(&changed, &signature).is_err(),
                "{name}: message byte {i}"
            );
        }
        for i in 0..sig_bytes.len() {
            let mut changed = sig_bytes.clone();
            changed[i] ^= 0x01;
            let changed = parse_signature(&STANDARD.encode(&changed)).expect("64 bytes");
            assert!(
                public.verify(&message, &changed).is_err(),
                "{name}: signature byte {i}"
            );
        }
        // A changed byte in the request body is caught at the ingest check too.
        let raw = field(&v, "request_body");
        let tampered = raw.replacen("eu-island-01", "eu-island-02", 1).replacen(
            "omv-mediaserver",
            "omv-mediaservex",
            1,
        );
        let claimed = serde_json::from_str::<Value>(&tampered).expect("json");
        let identity = Identity {
            server_id: claimed["server_id"].as_str().expect("id").into(),
            public_key: public.clone(),
            key_version: u32::try_from(claimed["key_version"].as_u64().expect("kv")).expect("u32"),
            is_verified: true,
        };
        let refused = admit(identity, &tampered).await.unwrap_err();
        assert_eq!(refused.code, "bad_signature", "{name}");
    }
}
