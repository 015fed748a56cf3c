//! `POST /v1/agent/heartbeats`: many individually signed v1 heartbeats in one request, each
//! through the same steps as [`Gate::admit`], each with its own answer.
//!
//! **Format: NDJSON** (`application/x-ndjson`): one v1 body per line, exactly the bytes an
//! agent would post to the single route. Chosen over a JSON array because every item stays its
//! own JSON text: a line that is not JSON at all is refused alone (a JSON array with one broken
//! element would not even parse, failing its neighbours), each item's stored bytes are the
//! line as sent with no re-serialisation, and a relay forwards agents' bodies by joining them
//! with `\n`. A v1 body written by any JSON serialiser fits on one line (JSON strings cannot
//! hold a raw newline). A trailing `\r` is dropped and empty lines are skipped.
//!
//! **Bounds, refused whole** (problem+json, recorded like the single route's): a body over
//! [`MAX_BATCH_BODY_BYTES`] (413 `payload_too_large`), more than [`MAX_BATCH_ITEMS`] items
//! (413 `too_many_items`), no item (422 `empty_batch`). An item over the single route's 64 KiB
//! is refused alone (413 `payload_too_large`).
//!
//! **Budget**: the source's bucket is charged once per item, in order. The first token is taken
//! before the body is read (an empty bucket refuses the request whole, 429, without reading
//! it); every further item takes its own, and an item that finds the bucket empty is answered
//! 429 `rate_limited` alone (never recorded, as on the single route). The server's bucket is
//! charged per item once its signature verified, as on the single route.
//!
//! **Signatures**: each item is verified with `verify_strict`, on the shared verifier thread
//! (which takes up to 64 queued signatures at a time; the items of a batch are checked
//! concurrently, so they reach it together). ed25519-dalek's `verify_batch` is **not used**: it
//! checks one random linear combination of all the equations and does not apply the strict
//! checks, so a signature whose `R` has a small-order (torsion) component — which a key holder
//! can craft — passes a batch about one time in eight while `verify_strict` always refuses it.
//! Whether an item is stored would then depend on its neighbours and on chance, the batch
//! route would accept what the single route refuses, and a third party re-checking the public
//! history strictly would disagree with the host. Making a batch strict needs a per-signature
//! torsion check of `R`, which costs about as much as the strict verification it would save.
//! See [`super::super::verifier`].

use std::net::IpAddr;

use super::{Admitted, Gate, Source, Step, limited};
use crate::clock::now_ms;
use crate::config::access::RateLimitConfig;
use crate::ingest::decode::{MAX_BODY_BYTES, decode};
use crate::ingest::{Refusal, TrustRules};
use axum::extract::Request;

/// Most items one batch may carry.
pub const MAX_BATCH_ITEMS: usize = 500;

/// Largest batch body, in bytes (2 MiB: 500 items of 4 KiB; larger bodies go one by one).
pub const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The items of an NDJSON body: its lines, a trailing `\r` dropped, empty lines skipped.
pub fn split_items(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .collect()
}

impl Gate {
    /// Admits one `POST /v1/agent/heartbeats` request at the host clock's now.
    pub async fn admit_batch(
        &self,
        request: Request,
    ) -> Result<Vec<Result<Admitted, Refusal>>, Refusal> {
        self.admit_batch_at(request, now_ms()).await
    }

    /// [`Gate::admit_batch`] with the receive time given: one result per item, in order, or
    /// the refusal of the whole request (an empty budget, a body or item count over the bound).
    pub async fn admit_batch_at(
        &self,
        request: Request,
        received_at_ms: i64,
    ) -> Result<Vec<Result<Admitted, Refusal>>, Refusal> {
        let config = self.config.current();
        let rules = TrustRules::from(&config.trust);
        // The first item's token, before the body is read.
        let source = self.source(&request, received_at_ms)?;
        let bytes = self.body(request, MAX_BATCH_BODY_BYTES, &source).await?;
        let items = split_items(&bytes);
        if items.len() > MAX_BATCH_ITEMS {
            let detail = format!(
                "a batch carries at most {MAX_BATCH_ITEMS} heartbeats; this one has {}",
                items.len()
            );
            let refusal = Refusal::new(413, "too_many_items", detail, None);
            return Err(self.refused(refusal, &source, Some(&bytes)).await);
        }
        if items.is_empty() {
            let detail = "the batch holds no heartbeat (one v1 body per line, NDJSON)";
            let refusal = Refusal::new(422, "empty_batch", detail, None);
            return Err(self.refused(refusal, &source, Some(&bytes)).await);
        }
        // Charged in item order before anything runs concurrently, so the first items get the
        // tokens there are.
        let charged: Vec<Result<(), Refusal>> = (0..items.len())
            .map(|i| match i {
                0 => Ok(()),
                _ => self.charge_item(&config.rate_limit, source.ip),
            })
            .collect();
        let registration = config.trust.registration;
        let checks = items.iter().zip(charged).map(|(item, charged)| {
            let source = &source;
            async move {
                charged?;
                self.item(item, source, rules, registration).await
            }
        });
        Ok(futures_util::future::join_all(checks).await)
    }

    /// One more token of the source's bucket, for an item after the first.
    fn charge_item(&self, limits: &RateLimitConfig, ip: Option<IpAddr>) -> Result<(), Refusal> {
        match ip {
            Some(addr) => self
                .limits
                .check_ip(limits, addr)
                .map_err(|l| limited(l, None, ip)),
            None => Ok(()),
        }
    }

    /// Steps 3 to 9 of one item, exactly as [`Gate::admit_at`] runs them on a whole body.
    async fn item(
        &self,
        bytes: &[u8],
        source: &Source,
        rules: TrustRules,
        registration: crate::config::access::Registration,
    ) -> Result<Admitted, Refusal> {
        if bytes.len() > MAX_BODY_BYTES {
            let detail = format!("item exceeds {MAX_BODY_BYTES} bytes");
            let refusal = Refusal::new(413, "payload_too_large", detail, None);
            return Err(self.refused(refusal, source, Some(bytes)).await);
        }
        let decoded = match decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.refused(e.into(), source, Some(bytes)).await),
        };
        match self
            .heartbeat(decoded, bytes, source, rules, registration)
            .await
        {
            Ok(admitted) => Ok(admitted),
            Err(Step::Limited(refusal)) => Err(refusal),
            Err(Step::Refused(refusal)) => Err(self.refused(refusal, source, Some(bytes)).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_items;

    #[test]
    fn lines_are_items_crlf_and_empty_lines_tolerated() {
        let body = b"{\"a\":1}\r\n\n{\"b\":2}\n{broken\n";
        let items = split_items(body);
        assert_eq!(
            items,
            vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..], &b"{broken"[..]]
        );
        assert!(split_items(b"\n\r\n").is_empty());
        assert_eq!(split_items(b"{}"), vec![&b"{}"[..]]);
    }
}
