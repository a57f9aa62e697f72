//! The rotation history: a bounded log of every reaction, shared by all
//! replicas when Redis is configured.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::redis_conn::RedisHandle;

pub const HISTORY_LIMIT: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEvent {
    pub at_ms: u64,
    /// `cooldown`, `disabled`, `enabled`, `reset`, `degraded`, `recovered`, ...
    pub kind: String,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    /// Never a secret: ids, reasons and durations only.
    pub detail: String,
}

#[async_trait]
pub trait EventLog: Send + Sync {
    async fn record(&self, event: RotationEvent);
    /// The newest `limit` events, newest first.
    async fn recent(&self, limit: usize) -> Vec<RotationEvent>;
}

#[derive(Default)]
pub struct MemoryEventLog {
    events: Mutex<VecDeque<RotationEvent>>,
}

#[async_trait]
impl EventLog for MemoryEventLog {
    async fn record(&self, event: RotationEvent) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.push_front(event);
        events.truncate(HISTORY_LIMIT);
    }

    async fn recent(&self, limit: usize) -> Vec<RotationEvent> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.iter().take(limit).cloned().collect()
    }
}

/// The history in a Redis list, so every replica writes and reads one log.
/// A Redis failure falls back to this replica's own memory log.
pub struct RedisEventLog {
    redis: Arc<RedisHandle>,
    key: String,
    fallback: MemoryEventLog,
}

impl RedisEventLog {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        Self { redis, key: format!("{prefix}:events"), fallback: MemoryEventLog::default() }
    }
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn record(&self, event: RotationEvent) {
        let Ok(json) = serde_json::to_string(&event) else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&self.key)
            .arg(&json)
            .ignore()
            .cmd("LTRIM")
            .arg(&self.key)
            .arg(0)
            .arg(HISTORY_LIMIT - 1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.key)
            .arg(7 * 86_400_000u64)
            .ignore();
        let stored = match self.redis.connection().await {
            Ok(mut connection) => tokio::time::timeout(self.redis.deadline(), pipe.query_async::<()>(&mut connection))
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        if !stored {
            self.fallback.record(event).await;
        }
    }

    async fn recent(&self, limit: usize) -> Vec<RotationEvent> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(&self.key).arg(0).arg(limit.saturating_sub(1));
        match self.redis.query::<Vec<String>>(&cmd).await {
            Ok(items) => items.iter().filter_map(|item| serde_json::from_str(item).ok()).collect(),
            Err(_) => self.fallback.recent(limit).await,
        }
    }
}
