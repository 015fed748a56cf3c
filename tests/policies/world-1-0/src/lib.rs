//! A test policy built the way a third party built one against `vigil:policy@1.0.0`: raw
//! wit-bindgen bindings of a frozen copy of the 1.0.0 WIT (`wit/policy.wit` in this crate,
//! never to be edited), no SDK. It exports only `describe` and the 1.0 `evaluate`, so the host
//! must hand it the parameters on every call (`tests/e2e/wit_versions.rs`).
//!
//! `evaluate` counts the events folded so far (the state is that count, a little-endian u64),
//! reports it as the score `events`, the number of parameters it received as the score
//! `params`, and its one parameter, `quality`, as the quality score.
//!
//! On other targets than wasm32 the crate is empty.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "policy",
    path: "wit",
});

// The world's `use` already brought `Param`, `PolicyInfo`, `Facts`, `Event` and `Evaluation`.
use vigil::policy::types::{Assessment, Confidence, ParamSpec, ParamValue, Score, Status};

struct Frozen;

impl Guest for Frozen {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "frozen-1-0".to_string(),
            version: "1.0.0".to_string(),
            history_window_seconds: 0,
            params: vec![ParamSpec {
                name: "quality".to_string(),
                description: "The quality score to report (0-100).".to_string(),
                default: ParamValue::Number(50.0),
            }],
        }
    }

    fn evaluate(
        params: Vec<Param>,
        _facts: Facts,
        state: Option<Vec<u8>>,
        now_ms: i64,
        _event: Event,
    ) -> Result<Evaluation, String> {
        let quality = params
            .iter()
            .find(|param| param.name == "quality")
            .and_then(|param| match param.value {
                ParamValue::Number(n) => Some(n),
                _ => None,
            })
            .ok_or("param quality is missing")?;
        let count = state
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_le_bytes)
            .wrapping_add(1);
        Ok(Evaluation {
            state: count.to_le_bytes().to_vec(),
            assessment: Assessment {
                status: Status::Online,
                confidence: Confidence::Green,
                uptime_percent: 100.0,
                quality_score: quality,
                scores: vec![
                    Score {
                        name: "events".to_string(),
                        value: count as f64,
                    },
                    Score {
                        name: "params".to_string(),
                        value: params.len() as f64,
                    },
                ],
                badges: Vec::new(),
                signals: Vec::new(),
                next_check_at_ms: Some(now_ms.saturating_add(60_000)),
            },
        })
    }
}

export!(Frozen);
