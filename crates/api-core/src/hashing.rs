//! A bound on password hashing. An argon2id hash holds 19 MiB and tens of
//! milliseconds of CPU. Unbounded, a burst of logins would queue hundreds
//! of hashes on the blocking pool, each thread keeping its own 19 MiB
//! allocator arena, and grow the process by gigabytes.
//!
//! So hashes run on a few threads of their own (2 × cores), one at a time
//! each, and a request waits at most [`PERMIT_WAIT`] for one of them; then
//! it is answered 503 with `Retry-After: 1`, never queued without bound.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};

/// How long a request waits for a hashing thread before it is answered 503.
const PERMIT_WAIT: Duration = Duration::from_secs(1);
/// What that 503 asks the client to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct HashingGate {
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for HashingGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingGate").field("available", &self.permits.available_permits()).finish()
    }
}

/// The right to run one hash, on the gate's threads; or, for paths no
/// request reaches (the `create-admin` command), on the blocking pool.
pub struct HashingPermit {
    gate: Option<(OwnedSemaphorePermit, mpsc::Sender<Job>)>,
}

impl HashingPermit {
    pub fn unbounded() -> Self {
        Self { gate: None }
    }

    /// Runs `hash` off the async runtime and waits for it. The permit is
    /// held until the hash is done, even if the caller has gone.
    pub async fn run<R: Send + 'static>(self, hash: impl FnOnce() -> R + Send + 'static) -> anyhow::Result<R> {
        let Some((permit, jobs)) = self.gate else {
            return Ok(tokio::task::spawn_blocking(hash).await?);
        };
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = done.send(hash());
        });
        jobs.send(job).map_err(|_| anyhow::anyhow!("the hashing threads are gone"))?;
        result.await.map_err(|_| anyhow::anyhow!("a hashing thread failed"))
    }
}

impl HashingGate {
    /// Two threads a core: every core busy, and no more memory than that.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::new(2 * cores)
    }

    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{n}")).spawn(move || loop {
                let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                match next {
                    Ok(job) => job(),
                    // Every gate (and so every sender) is gone.
                    Err(_) => return,
                }
            });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password hashing thread");
            }
        }
        Self { permits: Arc::new(Semaphore::new(threads)), jobs }
    }

    /// A permit within [`PERMIT_WAIT`], else 503 with `Retry-After: 1`.
    pub async fn admit(&self) -> ApiResult<HashingPermit> {
        match tokio::time::timeout(PERMIT_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(HashingPermit { gate: Some((permit, self.jobs.clone())) }),
            _ => Err(ApiError::Busy { retry_after: RETRY_AFTER }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_run_on_the_gates_threads_and_a_full_gate_answers_busy() {
        let gate = HashingGate::new(1);
        let name = gate.admit().await.unwrap().run(|| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(name.unwrap().as_deref(), Some("password-hash-0"));

        let held = gate.admit().await.unwrap();
        let refused = gate.admit().await.err().expect("no permit within a second");
        assert_eq!(refused.status_code(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        gate.admit().await.unwrap();
    }
}
