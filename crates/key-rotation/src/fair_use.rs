//! Per-user fair use, checked before key admission: GCRA at `rpm` per minute
//! with `burst`, plus the user's input tokens in a sliding minute.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use crate::clock::{Clock, SystemClock};
use crate::limiter::LimiterError;
use crate::redis_conn::RedisHandle;

const MINUTE_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    pub rpm: u32,
    pub burst: u32,
    pub tpm: u64,
}

/// What fair use reserved for one call, to be refunded if no key admitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTicket {
    pub user: String,
    pub entry_id: String,
    pub at_ms: u64,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDecision {
    Allowed(UserTicket),
    /// Over the user's limits until `retry_after`.
    Limited {
        retry_after: Duration,
    },
    /// Larger than the user's whole token allowance.
    TooLarge,
}

#[async_trait]
pub trait FairUse: Send + Sync {
    async fn admit(
        &self,
        user: &str,
        tokens: u64,
        limits: UserLimits,
        entry_id: &str,
    ) -> Result<UserDecision, LimiterError>;
    async fn refund(&self, ticket: &UserTicket) -> Result<(), LimiterError>;
}

fn interval_ms(limits: UserLimits) -> u64 {
    (MINUTE_MS / u64::from(limits.rpm.max(1))).max(1)
}

#[derive(Default)]
struct UserState {
    tat_ms: u64,
    tokens: VecDeque<(u64, String, u64)>,
}

pub struct MemoryFairUse {
    users: Mutex<HashMap<String, UserState>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryFairUse {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryFairUse {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { users: Mutex::new(HashMap::new()), clock }
    }
}

#[async_trait]
impl FairUse for MemoryFairUse {
    async fn admit(
        &self,
        user: &str,
        tokens: u64,
        limits: UserLimits,
        entry_id: &str,
    ) -> Result<UserDecision, LimiterError> {
        if tokens > limits.tpm {
            return Ok(UserDecision::TooLarge);
        }
        let now = self.clock.now_ms();
        let interval = interval_ms(limits);
        let tolerance = interval * u64::from(limits.burst.saturating_sub(1));
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let state = users.entry(user.to_string()).or_default();
        while state.tokens.front().is_some_and(|(at, _, _)| at + MINUTE_MS <= now) {
            state.tokens.pop_front();
        }
        let tat = state.tat_ms.max(now);
        let mut wait = (tat.saturating_sub(tolerance)).saturating_sub(now);
        let used: u64 = state.tokens.iter().map(|(_, _, t)| t).sum();
        if used + tokens > limits.tpm {
            let mut remaining = used;
            for (at, _, spent) in &state.tokens {
                remaining -= spent;
                if remaining + tokens <= limits.tpm {
                    wait = wait.max((at + MINUTE_MS).saturating_sub(now));
                    break;
                }
            }
        }
        if wait > 0 {
            return Ok(UserDecision::Limited { retry_after: Duration::from_millis(wait) });
        }
        state.tat_ms = tat + interval;
        state.tokens.push_back((now, entry_id.to_string(), tokens));
        Ok(UserDecision::Allowed(UserTicket {
            user: user.to_string(),
            entry_id: entry_id.to_string(),
            at_ms: now,
            interval_ms: interval,
        }))
    }

    async fn refund(&self, ticket: &UserTicket) -> Result<(), LimiterError> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = users.get_mut(&ticket.user) {
            state.tat_ms = state.tat_ms.saturating_sub(ticket.interval_ms);
            state.tokens.retain(|(_, id, _)| *id != ticket.entry_id);
        }
        Ok(())
    }
}

static USER_ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("fair_use.lua")));

/// Fair use shared by every replica. While Redis is unreachable it falls back
/// to this replica's own memory limits rather than letting users through.
pub struct RedisFairUse {
    redis: Arc<RedisHandle>,
    prefix: String,
    fallback: MemoryFairUse,
}

impl RedisFairUse {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        Self { redis, prefix: prefix.to_string(), fallback: MemoryFairUse::default() }
    }

    fn keys(&self, user: &str) -> (String, String) {
        let user = user.replace(['{', '}'], "_");
        (format!("{}:{{u:{user}}}:gcra", self.prefix), format!("{}:{{u:{user}}}:tokens", self.prefix))
    }
}

#[async_trait]
impl FairUse for RedisFairUse {
    async fn admit(
        &self,
        user: &str,
        tokens: u64,
        limits: UserLimits,
        entry_id: &str,
    ) -> Result<UserDecision, LimiterError> {
        if tokens > limits.tpm {
            return Ok(UserDecision::TooLarge);
        }
        let (gcra, window) = self.keys(user);
        let interval = interval_ms(limits);
        let mut invocation = USER_ADMIT.prepare_invoke();
        invocation
            .key(gcra)
            .key(window)
            .arg("admit")
            .arg(interval)
            .arg(interval * u64::from(limits.burst.saturating_sub(1)))
            .arg(limits.tpm)
            .arg(tokens)
            .arg(entry_id);
        match self.redis.invoke::<Vec<i64>>(&invocation).await {
            Ok(reply) => match reply.as_slice() {
                [1, at] => Ok(UserDecision::Allowed(UserTicket {
                    user: user.to_string(),
                    entry_id: entry_id.to_string(),
                    at_ms: u64::try_from(*at).unwrap_or(0),
                    interval_ms: interval,
                })),
                [0, wait] => Ok(UserDecision::Limited {
                    retry_after: Duration::from_millis(u64::try_from(*wait).unwrap_or(1).max(1)),
                }),
                other => Err(LimiterError::Unavailable(format!("unexpected fair-use reply {other:?}"))),
            },
            Err(err) => {
                tracing::warn!(error = %err, "fair use: Redis unreachable, using this replica's limits");
                self.fallback.admit(user, tokens, limits, entry_id).await
            }
        }
    }

    async fn refund(&self, ticket: &UserTicket) -> Result<(), LimiterError> {
        let (gcra, window) = self.keys(&ticket.user);
        let mut invocation = USER_ADMIT.prepare_invoke();
        invocation
            .key(gcra)
            .key(window)
            .arg("refund")
            .arg(ticket.interval_ms)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(&ticket.entry_id);
        if self.redis.invoke::<Vec<i64>>(&invocation).await.is_err() {
            self.fallback.refund(ticket).await?;
        }
        Ok(())
    }
}
