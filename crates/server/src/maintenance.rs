//! Housekeeping that keeps the database from growing without bound:
//! Idempotency-Key answers past their keeping time, sessions and refresh
//! tokens past their expiry, dashboard sessions past their lifetime or
//! idle limit, and rotation events older than `HISTORY_RETENTION_DAYS`. Every replica runs it; the deletes
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
    pub admin_sessions: u64,
    pub rotation_events: u64,
}

/// Deletes what is no longer needed as of `now`; rotation events older
/// than `history_retention`.
pub async fn purge(store: &Store, now: DateTime<Utc>, history_retention: Duration) -> StoreResult<Purged> {
    let keep = chrono::Duration::from_std(api_core::idempotency::KEEP_COMPLETED).unwrap_or(chrono::Duration::days(1));
    let idle =
        chrono::Duration::from_std(admin_dashboard::session::IDLE_LIMIT).unwrap_or(chrono::Duration::minutes(30));
    let history = chrono::Duration::from_std(history_retention).unwrap_or(chrono::Duration::days(30));
    Ok(Purged {
        idempotency_keys: store.purge_idempotency_keys(now - keep).await?,
        refresh_tokens: store.purge_expired_sessions(now).await?,
        admin_sessions: store.purge_admin_sessions(now, now - idle).await?,
        rotation_events: store.purge_rotation_events(now - history).await?,
    })
}

/// Purges at start-up and every [`PURGE_EVERY`] after.
pub async fn run(store: Store, history_retention: Duration) {
    loop {
        match purge(&store, Utc::now(), history_retention).await {
            Ok(purged)
                if purged.idempotency_keys + purged.refresh_tokens + purged.admin_sessions + purged.rotation_events
                    > 0 =>
            {
                tracing::info!(
                    idempotency_keys = purged.idempotency_keys,
                    refresh_tokens = purged.refresh_tokens,
                    admin_sessions = purged.admin_sessions,
                    rotation_events = purged.rotation_events,
                    "purged expired rows"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging expired rows failed"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}
