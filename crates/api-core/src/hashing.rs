//! A bound on concurrent password hashing. An argon2id hash holds 19 MiB
//! and tens of milliseconds of CPU; unbounded, a burst of logins would queue
//! hundreds of them on the blocking pool and grow the process by gigabytes.
//! Requests wait a little for a permit, then are told to come back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};

/// How long a request waits for a permit before it is answered 503.
const PERMIT_WAIT: Duration = Duration::from_secs(1);
/// What that 503 asks the client to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct HashingGate {
    permits: Arc<Semaphore>,
}

/// The right to run one hash; held by the blocking task that runs it, so a
/// client that leaves does not free it before the work ends.
#[derive(Debug)]
pub struct HashingPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl HashingPermit {
    /// For paths no request can reach (the `create-admin` command).
    pub fn unbounded() -> Self {
        Self { _permit: None }
    }
}

impl HashingGate {
    /// Twice the cores, so hashing keeps every core busy without queueing
    /// memory behind them.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::new(2 * cores)
    }

    pub fn new(permits: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(permits.max(1))) }
    }

    /// A permit within [`PERMIT_WAIT`], else 503 with `Retry-After: 1`.
    pub async fn admit(&self) -> ApiResult<HashingPermit> {
        match tokio::time::timeout(PERMIT_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(HashingPermit { _permit: Some(permit) }),
            _ => Err(ApiError::Busy { retry_after: RETRY_AFTER }),
        }
    }
}
