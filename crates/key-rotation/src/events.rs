//! The rotation history: every reaction of the pool. The server keeps it
//! in the database (`api_core::rotation_history`), shared by every replica
//! and kept for days; [`MemoryEventLog`] is the bounded log of a pool on
//! its own (tests, benchmarks).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
    /// Who acted: [`POOL_ACTOR`] for the pool's own reactions,
    /// `admin:<username>` for an operator's, `cli` for `algoagent keys`.
    #[serde(default = "pool_actor")]
    pub actor: String,
}

/// The actor of the pool's own reactions.
pub const POOL_ACTOR: &str = "pool";

fn pool_actor() -> String {
    POOL_ACTOR.to_string()
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
