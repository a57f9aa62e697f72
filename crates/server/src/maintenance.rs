//! Housekeeping that keeps the database from growing without bound:
//! Idempotency-Key answers past their keeping time, and sessions and
//! refresh tokens past their expiry. Every replica runs it; the deletes
//! are idempotent, so running it on several at once only repeats work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{Store, StoreResult};

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// What one purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_keys: u64,
    pub refresh_tokens: u64,
}

/// Deletes what is no longer needed as of `now`.
pub async fn purge(store: &Store, now: DateTime<Utc>) -> StoreResult<Purged> {
    let keep = chrono::Duration::from_std(api_core::idempotency::KEEP_COMPLETED).unwrap_or(chrono::Duration::days(1));
    Ok(Purged {
        idempotency_keys: store.purge_idempotency_keys(now - keep).await?,
        refresh_tokens: store.purge_expired_sessions(now).await?,
    })
}

/// Purges at start-up and every [`PURGE_EVERY`] after.
pub async fn run(store: Store) {
    loop {
        match purge(&store, Utc::now()).await {
            Ok(purged) if purged.idempotency_keys + purged.refresh_tokens > 0 => {
                tracing::info!(
                    idempotency_keys = purged.idempotency_keys,
                    refresh_tokens = purged.refresh_tokens,
                    "purged expired rows"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging expired rows failed"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}
