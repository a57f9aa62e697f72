//! Per-user fair use, checked before key admission: GCRA at `rpm` per minute
//! with `burst`, plus the user's input tokens in a sliding minute.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use crate::clock::{Clock, SystemClock};
use crate::config::BucketLimits;
use crate::limiter::{gcra, LimiterError, Window};
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
    tat_ms: Option<u64>,
    tokens: Window,
}

/// The user's limits in the shapes the shared limiter helpers take: GCRA
/// pacing at `rpm` per minute with `burst`, and a token window with no
/// request cap of its own.
fn as_bucket_limits(limits: UserLimits) -> (BucketLimits, BucketLimits) {
    let pacing = BucketLimits { rpm: limits.rpm.max(1), tpm: limits.tpm, rpd: None, burst: limits.burst.max(1) };
    let tokens = BucketLimits { rpm: u32::MAX, ..pacing };
    (pacing, tokens)
}

pub struct MemoryFairUse {
    users: Mutex<Users>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Users {
    by_name: HashMap<String, UserState>,
    last_sweep_ms: u64,
}

impl Users {
    /// Forgets, once a minute, the users whose minute has passed: no GCRA
    /// debt and no tokens in the window. Their state would say nothing, and
    /// keeping it would grow the map with every user ever seen.
    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep_ms) < MINUTE_MS {
            return;
        }
        self.last_sweep_ms = now;
        self.by_name.retain(|_, state| {
            state.tokens.prune(now, MINUTE_MS);
            state.tat_ms.is_some_and(|tat| tat > now) || state.tokens.requests() > 0
        });
    }
}

impl Default for MemoryFairUse {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryFairUse {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { users: Mutex::new(Users::default()), clock }
    }

    /// How many users' state this process keeps.
    pub fn tracked_users(&self) -> usize {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).by_name.len()
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
        let (pacing, token_limits) = as_bucket_limits(limits);
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users.sweep(now);
        let state = users.by_name.entry(user.to_string()).or_default();
        state.tokens.prune(now, MINUTE_MS);
        let (pacing_wait, next_tat) = gcra(state.tat_ms, &pacing, now, MINUTE_MS);
        let token_wait = state.tokens.wait_ms(&token_limits, tokens, now, MINUTE_MS).unwrap_or(u64::MAX);
        let wait = pacing_wait.max(token_wait);
        if wait > 0 {
            return Ok(UserDecision::Limited { retry_after: Duration::from_millis(wait) });
        }
        state.tat_ms = Some(next_tat);
        state.tokens.push(now, entry_id, tokens);
        let interval = interval_ms(limits);
        Ok(UserDecision::Allowed(UserTicket {
            user: user.to_string(),
            entry_id: entry_id.to_string(),
            at_ms: now,
            interval_ms: interval,
        }))
    }

    async fn refund(&self, ticket: &UserTicket) -> Result<(), LimiterError> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = users.by_name.get_mut(&ticket.user) {
            state.tat_ms = state.tat_ms.map(|tat| tat.saturating_sub(ticket.interval_ms));
            state.tokens.remove(&ticket.entry_id);
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
    /// Whether the last call fell back, so a busy spell logs once, not per call.
    falling_back: std::sync::atomic::AtomicBool,
}

impl RedisFairUse {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            fallback: MemoryFairUse::default(),
            falling_back: std::sync::atomic::AtomicBool::new(false),
        }
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
        let reply = self.redis.invoke::<Vec<i64>>(&invocation).await;
        let failed = reply.is_err();
        if self.falling_back.swap(failed, std::sync::atomic::Ordering::Relaxed) != failed {
            match &reply {
                Err(err) => tracing::warn!(error = %err, "fair use: Redis unreachable, using this replica's limits"),
                Ok(_) => tracing::info!("fair use: shared through Redis again"),
            }
        }
        match reply {
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
                tracing::debug!(error = %err, "fair use: Redis call failed");
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
