//! Signature verification off the async executor.
//!
//! Request handlers hand `(message, signature, key)` to a dedicated verifier thread and await
//! the answer. The thread takes whatever is queued (up to [`MAX_BATCH`]) and checks each
//! signature with `verify_strict`, the same rule as every other check in the host.
//!
//! Why not ed25519 batch verification (about twice as fast per signature): it is not strict.
//! Its equation is a random linear combination, so a signature whose `R` carries a torsion
//! component (which the key holder can craft) passes a batch about one time in eight while a
//! single strict check always refuses it: whether a stored heartbeat verifies would depend on
//! which requests it happened to share a batch with, and a third party re-checking the public
//! history with a strict verifier would disagree with the host. Torsion in keys is refused at
//! registration and rotation ([`crate::crypto::PublicKey::from_base64`]); torsion in `R` can
//! only be refused by a per-signature check, which costs as much as the strict check itself.

use std::sync::mpsc;
use std::thread;

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::oneshot;

use super::signature::{PublicKey, SignatureError};

/// Most signatures taken off the queue at once.
pub const MAX_BATCH: usize = 64;

struct Job {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
    reply: oneshot::Sender<bool>,
}

/// A handle to the verifier thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Bounded so a flood queues at most `capacity` jobs; when full, callers verify inline.
    tx: mpsc::SyncSender<Job>,
}

impl Verifier {
    /// Starts the verifier thread; it ends when every handle is dropped.
    pub fn start(capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity.max(MAX_BATCH));
        thread::Builder::new()
            .name("vigil-verify".into())
            .spawn(move || run(&rx))?;
        Ok(Self { tx })
    }

    /// Verifies `signature` over `message` with `key`.
    pub async fn verify(
        &self,
        key: &PublicKey,
        message: Vec<u8>,
        signature: Signature,
    ) -> Result<(), SignatureError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            message,
            signature,
            key: *key.verifying_key(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => match answer.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SignatureError::Mismatch),
                // The thread is gone (shutdown): nothing was verified.
                Err(_) => Err(SignatureError::Mismatch),
            },
            Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => {
                key.verify(&job.message, &job.signature)
            }
        }
    }
}

fn run(rx: &mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for job in jobs.drain(..) {
            let ok = job.key.verify_strict(&job.message, &job.signature).is_ok();
            // A dropped receiver means the request went away; nothing to answer.
            let _ = job.reply.send(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::signature::public_key_of;
    use ed25519_dalek::{Signer, SigningKey};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_forged_signature_in_a_batch_fails_alone() {
        let verifier = Verifier::start(1024).expect("thread starts");
        let mut tasks = Vec::new();
        for i in 0..200u8 {
            let verifier = verifier.clone();
            tasks.push(tokio::spawn(async move {
                let key = SigningKey::from_bytes(&[i; 32]);
                let message = vec![i; 40];
                let signature = if i % 7 == 3 {
                    SigningKey::from_bytes(&[255 - i; 32]).sign(&message)
                } else {
                    key.sign(&message)
                };
                (
                    i,
                    verifier
                        .verify(&public_key_of(&key), message, signature)
                        .await,
                )
            }));
        }
        for task in tasks {
            let (i, result) = task.await.expect("task");
            assert_eq!(result.is_ok(), i % 7 != 3, "job {i}");
        }
    }
}
