//! The rotation history in the database: every replica's cooldowns,
//! disables, probes, reloads and operators' actions, kept
//! `HISTORY_RETENTION_DAYS` and paged by the dashboard.
//!
//! Recording happens on the pool's reaction path, so it only appends to a
//! buffer; [`DatabaseEventLog::flush`] writes the buffer in one
//! transaction, every half second in the background and before every read.
//! A write that fails keeps its events for the next one, up to
//! [`MAX_BUFFERED`]: a database outage costs history, never a request.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use key_rotation::events::{EventLog, RotationEvent};
use store::operators::{EventFilter, NewRotationEvent, RotationEventRow};
use store::{Store, StoreResult};

/// How often buffered events are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(500);
/// Events held while the database is unreachable; older ones are dropped.
pub const MAX_BUFFERED: usize = 10_000;

pub struct DatabaseEventLog {
    store: Store,
    buffer: Mutex<Vec<NewRotationEvent>>,
}

fn at(ms: u64) -> DateTime<Utc> {
    i64::try_from(ms).ok().and_then(|ms| Utc.timestamp_millis_opt(ms).single()).unwrap_or_else(Utc::now)
}

impl DatabaseEventLog {
    pub fn new(store: Store) -> Self {
        Self { store, buffer: Mutex::new(Vec::new()) }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Vec<NewRotationEvent>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is buffered.
    pub async fn flush(&self) -> StoreResult<()> {
        let events = std::mem::take(&mut *self.buffer());
        if events.is_empty() {
            return Ok(());
        }
        let written = self.store.insert_rotation_events(&events).await;
        if written.is_err() {
            let mut buffer = self.buffer();
            let mut kept = events;
            kept.append(&mut buffer);
            let excess = kept.len().saturating_sub(MAX_BUFFERED);
            kept.drain(..excess);
            *buffer = kept;
        }
        written
    }

    /// Writes every [`WRITE_EVERY`] until dropped.
    pub async fn write_forever(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(WRITE_EVERY).await;
            if let Err(err) = self.flush().await {
                tracing::warn!(error = %err, "could not write the rotation history; kept for the next try");
            }
        }
    }

    /// One page of the history, newest first (this replica's buffer
    /// written first, so its own latest events are on it).
    pub async fn page(
        &self,
        filter: &EventFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<RotationEventRow>)> {
        if let Err(err) = self.flush().await {
            tracing::warn!(error = %err, "could not write the rotation history before reading it");
        }
        self.store.rotation_events_page(filter, limit, offset).await
    }
}

#[async_trait]
impl EventLog for DatabaseEventLog {
    async fn record(&self, event: RotationEvent) {
        let mut buffer = self.buffer();
        if buffer.len() >= MAX_BUFFERED {
            buffer.remove(0);
        }
        buffer.push(NewRotationEvent {
            at: at(event.at_ms),
            kind: event.kind,
            key_id: event.key_id,
            project: event.project,
            model: event.model,
            detail: event.detail,
            actor: event.actor,
        });
    }

    async fn recent(&self, limit: usize) -> Vec<RotationEvent> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self.page(&EventFilter::default(), limit, 0).await {
            Ok((_, rows)) => rows
                .into_iter()
                .map(|row| RotationEvent {
                    at_ms: u64::try_from(row.at.timestamp_millis()).unwrap_or_default(),
                    kind: row.kind,
                    key_id: row.key_id,
                    project: row.project,
                    model: row.model,
                    detail: row.detail,
                    actor: row.actor,
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the rotation history");
                Vec::new()
            }
        }
    }
}
