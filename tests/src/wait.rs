//! The one polling loop of the tests: ask again and again until the answer is the awaited one
//! or time is up.
//!
//! It owns waiting on the wall clock only; it never decides what a timeout means (the caller
//! asserts, returns the last answer or reports it). Waits on a notification (a watch channel, a
//! stream) are not polling and do not come here.

use std::time::{Duration, Instant};

/// Probes (`probe`) now and then every `every` until `done` holds for an answer (`Ok` with it)
/// or `limit` has passed since the start (`Err` with the last answer).
pub async fn wait_until<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let started = Instant::now();
    loop {
        let answer = probe().await;
        if done(&answer) {
            return Ok(answer);
        }
        if started.elapsed() >= limit {
            return Err(answer);
        }
        tokio::time::sleep(every).await;
    }
}
