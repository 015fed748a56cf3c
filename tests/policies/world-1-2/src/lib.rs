//! A test policy built the way a third party built one against `vigil:policy@1.2.0`: raw
//! wit-bindgen bindings of a frozen copy of the 1.2.0 WIT (`wit/policy.wit` in this crate,
//! never to be edited), no SDK. It exports `describe`, `evaluate`, `configure`,
//! `evaluate-configured` and `evaluate-run`, but not the 1.3 `evaluate-ext` and
//! `evaluate-run-ext`, so the host must hand it the 1.2 records (`tests/e2e/wit_versions.rs`).
//!
//! Each evaluation counts the events folded so far (the state is that count, a little-endian
//! u64) and reports it as the score `events`, and its one parameter, `quality`, as the quality
//! score; `evaluate-run` folds its run until a deadline (a minute after each event) falls due. `evaluate-configured` before `configure` is an `err`.
//!
//! On other targets than wasm32 the crate is empty.

#![cfg(target_arch = "wasm32")]
// The export glue wit-bindgen generates for `evaluate-run` takes its flattened arguments.
#![allow(clippy::too_many_arguments)]

use std::cell::Cell;

wit_bindgen::generate!({
    world: "policy",
    path: "wit",
});

// The world's `use` already brought `Param`, `PolicyInfo`, `Facts`, `Event`, `Evaluation`,
// `TimedEvent` and `RunResult`.
use vigil::policy::types::{Assessment, Confidence, ParamSpec, ParamValue, Score, Status};

thread_local! {
    /// The `quality` parameter `configure` kept.
    static QUALITY: Cell<Option<f64>> = const { Cell::new(None) };
}

struct Frozen;

fn quality_of(params: &[Param]) -> Result<f64, String> {
    params
        .iter()
        .find(|param| param.name == "quality")
        .and_then(|param| match param.value {
            ParamValue::Number(n) => Some(n),
            _ => None,
        })
        .ok_or_else(|| "param quality is missing".to_string())
}

fn fold(quality: f64, state: Option<Vec<u8>>, now_ms: i64) -> Evaluation {
    let count = state
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
        .wrapping_add(1);
    Evaluation {
        state: count.to_le_bytes().to_vec(),
        assessment: Assessment {
            status: Status::Online,
            confidence: Confidence::Green,
            uptime_percent: 100.0,
            quality_score: quality,
            scores: vec![Score {
                name: "events".to_string(),
                value: count as f64,
            }],
            badges: Vec::new(),
            signals: Vec::new(),
            next_check_at_ms: Some(now_ms.saturating_add(60_000)),
        },
    }
}

impl Guest for Frozen {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "frozen-1-2".to_string(),
            version: "1.2.0".to_string(),
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
        Ok(fold(quality_of(&params)?, state, now_ms))
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        QUALITY.set(Some(quality_of(&params)?));
        Ok(())
    }

    fn evaluate_configured(
        _facts: Facts,
        state: Option<Vec<u8>>,
        now_ms: i64,
        _event: Event,
    ) -> Result<Evaluation, String> {
        let quality = QUALITY.get().ok_or("not configured")?;
        Ok(fold(quality, state, now_ms))
    }

    fn evaluate_run(_facts: Facts, state: Option<Vec<u8>>, events: Vec<TimedEvent>) -> RunResult {
        let Some(quality) = QUALITY.get() else {
            return RunResult {
                assessments: Vec::new(),
                state: None,
            };
        };
        let mut state = state;
        let mut assessments = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let evaluation = fold(quality, state, event.now_ms);
            let due = evaluation.assessment.next_check_at_ms;
            assessments.push(evaluation.assessment);
            state = Some(evaluation.state);
            // Stop where the host must fold a tick first.
            if let (Some(at), Some(next)) = (due, events.get(i + 1))
                && at <= next.now_ms
            {
                break;
            }
        }
        RunResult {
            state: state.filter(|_| !assessments.is_empty()),
            assessments,
        }
    }
}

export!(Frozen);
