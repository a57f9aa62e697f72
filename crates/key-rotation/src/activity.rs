//! Who used the pool, and how it went: each key's successes, 429s, errors
//! and upstream latency, and each user's calls, input tokens and refusals,
//! summed over the last hour and the last day for the operators.
//!
//! Fair use and admission keep one-minute windows, too short for this, and
//! must stay lean; so these counts live apart from them. Recording only
//! adds to this replica's pending batch under a mutex (no I/O on the
//! request path); [`Activity::flush`], called every second in the
//! background and before every read, adds the batch to the shared state in
//! one round trip:
//! - per-minute counts, kept 65 minutes, answer "the last hour";
//! - per-hour counts, kept 25 hours, answer "the last day" (the current
//!   hour and the 23 before it);
//! - each key's last use.
//!
//! With Redis every replica adds to, and reads, the same counts; without,
//! they live in this process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::clock::Clock;
use crate::limiter::LimiterError;
use crate::redis_conn::RedisHandle;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// Minute counts kept: the hour, plus room for clocks of replicas that differ.
const MINUTES_KEPT: u64 = 65;
/// Hour counts kept: the day, plus the hour it began in.
const HOURS_KEPT: u64 = 25;
/// How often the background flush runs.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How an upstream call through a key ended, as the dashboard counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Success,
    RateLimited,
    Error,
}

impl CallClass {
    fn field(self) -> &'static str {
        match self {
            CallClass::Success => "ok",
            CallClass::RateLimited => "429",
            CallClass::Error => "err",
        }
    }
}

/// One key's calls over a span of time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyActivity {
    pub successes: u64,
    pub rate_limited: u64,
    pub errors: u64,
    /// Mean upstream latency of the span's calls, when there were any.
    pub mean_latency_ms: Option<u64>,
    #[serde(skip)]
    latency_total_ms: u64,
    #[serde(skip)]
    latency_samples: u64,
}

impl KeyActivity {
    pub fn calls(&self) -> u64 {
        self.successes + self.rate_limited + self.errors
    }
}

/// One user's AI calls over a span of time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserActivity {
    /// Calls a key was found for.
    pub requests: u64,
    /// Their estimated input tokens.
    pub tokens: u64,
    /// Calls refused with 429 (their fair use, or a full pool).
    pub rate_limited: u64,
}

/// The last hour and the last day of something.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourAndDay<T> {
    pub hour: T,
    pub day: T,
}

/// Everything the operators' pages show of the pool's use.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityReport {
    pub keys: BTreeMap<String, HourAndDay<KeyActivity>>,
    /// By user id.
    pub users: BTreeMap<String, HourAndDay<UserActivity>>,
    /// The gateway's share of those calls, by API token id.
    pub api_tokens: BTreeMap<String, HourAndDay<UserActivity>>,
    /// Each key's last use (ms since the epoch).
    pub last_used_ms: BTreeMap<String, u64>,
}

/// Counts not yet in the shared state: field → increment, key → last use.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    counts: HashMap<String, u64>,
    last_used: HashMap<String, u64>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.last_used.is_empty()
    }

    fn add(&mut self, field: String, by: u64) {
        *self.counts.entry(field).or_default() += by;
    }

    fn merge(&mut self, other: Batch) {
        for (field, by) in other.counts {
            self.add(field, by);
        }
        for (key, at) in other.last_used {
            let entry = self.last_used.entry(key).or_default();
            *entry = (*entry).max(at);
        }
    }
}

// Fields are `k|<key id>|<what>`, `u|<user id>|<what>` and
// `t|<API token id>|<what>`; the id sits between the first and the last
// `|`, so an id holding one still parses.
fn key_field(key_id: &str, what: &str) -> String {
    format!("k|{key_id}|{what}")
}

const USER: &str = "u";
const API_TOKEN: &str = "t";

fn caller_field(kind: &str, id: &str, what: &str) -> String {
    format!("{kind}|{id}|{what}")
}

/// Sums of fields over a span, folded into the report's shapes.
#[derive(Default)]
struct Totals {
    keys: BTreeMap<String, KeyActivity>,
    users: BTreeMap<String, UserActivity>,
    api_tokens: BTreeMap<String, UserActivity>,
}

impl Totals {
    fn from_counts(counts: &HashMap<String, u64>) -> Self {
        let mut totals = Totals::default();
        for (field, &value) in counts {
            let Some((kind, rest)) = field.split_once('|') else { continue };
            let Some((id, what)) = rest.rsplit_once('|') else { continue };
            match kind {
                "k" => {
                    let key = totals.keys.entry(id.to_string()).or_default();
                    match what {
                        "ok" => key.successes += value,
                        "429" => key.rate_limited += value,
                        "err" => key.errors += value,
                        "lat" => key.latency_total_ms += value,
                        "latn" => key.latency_samples += value,
                        _ => {}
                    }
                }
                USER | API_TOKEN => {
                    let callers = if kind == USER { &mut totals.users } else { &mut totals.api_tokens };
                    let user = callers.entry(id.to_string()).or_default();
                    match what {
                        "req" => user.requests += value,
                        "tok" => user.tokens += value,
                        "429" => user.rate_limited += value,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        for key in totals.keys.values_mut() {
            key.mean_latency_ms = key.latency_total_ms.checked_div(key.latency_samples);
        }
        totals
    }
}

/// Raw sums the backends return: the last hour's and the last day's
/// fields, and each key's last use.
#[derive(Debug, Default)]
pub struct RawActivity {
    pub hour: HashMap<String, u64>,
    pub day: HashMap<String, u64>,
    pub last_used: HashMap<String, u64>,
}

/// Where the counts are kept.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    async fn add(&self, now_ms: u64, batch: &Batch) -> Result<(), LimiterError>;
    async fn read(&self, now_ms: u64) -> Result<RawActivity, LimiterError>;
}

fn sum_into(total: &mut HashMap<String, u64>, counts: &HashMap<String, u64>) {
    for (field, value) in counts {
        *total.entry(field.clone()).or_default() += value;
    }
}

/// This process's counts, for a deployment without Redis.
#[derive(Default)]
pub struct MemoryActivity {
    inner: Mutex<MemoryCounts>,
}

#[derive(Default)]
struct MemoryCounts {
    minutes: BTreeMap<u64, HashMap<String, u64>>,
    hours: BTreeMap<u64, HashMap<String, u64>>,
    last_used: HashMap<String, u64>,
}

#[async_trait]
impl ActivityStore for MemoryActivity {
    async fn add(&self, now_ms: u64, batch: &Batch) -> Result<(), LimiterError> {
        let (minute, hour) = (now_ms / MINUTE_MS, now_ms / HOUR_MS);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        sum_into(inner.minutes.entry(minute).or_default(), &batch.counts);
        sum_into(inner.hours.entry(hour).or_default(), &batch.counts);
        for (key, &at) in &batch.last_used {
            let entry = inner.last_used.entry(key.clone()).or_default();
            *entry = (*entry).max(at);
        }
        inner.minutes.retain(|&m, _| m + MINUTES_KEPT > minute);
        inner.hours.retain(|&h, _| h + HOURS_KEPT > hour);
        Ok(())
    }

    async fn read(&self, now_ms: u64) -> Result<RawActivity, LimiterError> {
        let (minute, hour) = (now_ms / MINUTE_MS, now_ms / HOUR_MS);
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut raw = RawActivity { last_used: inner.last_used.clone(), ..RawActivity::default() };
        for counts in inner.minutes.range(minute.saturating_sub(59)..=minute).map(|(_, c)| c) {
            sum_into(&mut raw.hour, counts);
        }
        for counts in inner.hours.range(hour.saturating_sub(23)..=hour).map(|(_, c)| c) {
            sum_into(&mut raw.day, counts);
        }
        Ok(raw)
    }
}

/// The counts in Redis hashes every replica adds to.
pub struct RedisActivity {
    redis: Arc<RedisHandle>,
    prefix: String,
}

impl RedisActivity {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        Self { redis, prefix: format!("{prefix}:activity") }
    }

    fn minute_key(&self, minute: u64) -> String {
        format!("{}:m:{minute}", self.prefix)
    }

    fn hour_key(&self, hour: u64) -> String {
        format!("{}:h:{hour}", self.prefix)
    }

    fn last_used_key(&self) -> String {
        format!("{}:last_used", self.prefix)
    }
}

#[async_trait]
impl ActivityStore for RedisActivity {
    async fn add(&self, now_ms: u64, batch: &Batch) -> Result<(), LimiterError> {
        let (minute, hour) = (now_ms / MINUTE_MS, now_ms / HOUR_MS);
        let mut pipe = redis::pipe();
        for (key, ttl_ms) in
            [(self.minute_key(minute), MINUTES_KEPT * MINUTE_MS), (self.hour_key(hour), HOURS_KEPT * HOUR_MS)]
        {
            for (field, by) in &batch.counts {
                pipe.cmd("HINCRBY").arg(&key).arg(field).arg(*by).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        if !batch.last_used.is_empty() {
            // Last writer wins: replicas flush within a second of each other,
            // closer than the page shows.
            let mut hset = redis::cmd("HSET");
            hset.arg(self.last_used_key());
            for (key, at) in &batch.last_used {
                hset.arg(key).arg(*at);
            }
            pipe.add_command(hset).ignore();
        }
        self.redis.pipeline::<()>(&pipe).await?;
        Ok(())
    }

    async fn read(&self, now_ms: u64) -> Result<RawActivity, LimiterError> {
        let (minute, hour) = (now_ms / MINUTE_MS, now_ms / HOUR_MS);
        let mut pipe = redis::pipe();
        for m in minute.saturating_sub(59)..=minute {
            pipe.cmd("HGETALL").arg(self.minute_key(m));
        }
        for h in hour.saturating_sub(23)..=hour {
            pipe.cmd("HGETALL").arg(self.hour_key(h));
        }
        pipe.cmd("HGETALL").arg(self.last_used_key());
        let mut replies: Vec<HashMap<String, u64>> = self.redis.pipeline(&pipe).await?;
        let last_used = replies.pop().unwrap_or_default();
        let mut raw = RawActivity { last_used, ..RawActivity::default() };
        let minutes = usize::try_from(minute - minute.saturating_sub(59) + 1).unwrap_or(60);
        for (index, counts) in replies.iter().enumerate() {
            let total = if index < minutes { &mut raw.hour } else { &mut raw.day };
            sum_into(total, counts);
        }
        Ok(raw)
    }
}

/// The pool's activity counts: recorded without I/O, flushed in the background.
pub struct Activity {
    pending: Mutex<Batch>,
    store: Box<dyn ActivityStore>,
    clock: Arc<dyn Clock>,
}

/// A flush that fails keeps its batch for the next one, up to this many
/// fields; past it (a long Redis outage) the oldest counts are dropped
/// rather than memory grown without bound.
const MAX_PENDING_FIELDS: usize = 100_000;

impl Activity {
    pub fn new(store: Box<dyn ActivityStore>, clock: Arc<dyn Clock>) -> Self {
        Self { pending: Mutex::new(Batch::default()), store, clock }
    }

    pub fn in_memory(clock: Arc<dyn Clock>) -> Self {
        Self::new(Box::new(MemoryActivity::default()), clock)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An upstream call through `key_id` ended.
    pub fn key_call(&self, key_id: &str, class: CallClass) {
        let now = self.clock.now_ms();
        let mut pending = self.pending();
        pending.add(key_field(key_id, class.field()), 1);
        pending.last_used.insert(key_id.to_string(), now);
    }

    /// One upstream attempt through `key_id` took `elapsed`.
    pub fn key_latency(&self, key_id: &str, elapsed: Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let mut pending = self.pending();
        pending.add(key_field(key_id, "lat"), ms);
        pending.add(key_field(key_id, "latn"), 1);
    }

    /// A user's AI call: admitted with `tokens` estimated input tokens, or
    /// refused with a 429 (`rate_limited`).
    pub fn user_call(&self, user: &str, tokens: u64, rate_limited: bool) {
        self.caller_call(USER, user, tokens, rate_limited);
    }

    /// The same for the API token a gateway call came with, counted apart
    /// so operators see which of a user's tokens the traffic is.
    pub fn api_token_call(&self, token_id: i64, tokens: u64, rate_limited: bool) {
        self.caller_call(API_TOKEN, &token_id.to_string(), tokens, rate_limited);
    }

    fn caller_call(&self, kind: &str, id: &str, tokens: u64, rate_limited: bool) {
        let mut pending = self.pending();
        if rate_limited {
            pending.add(caller_field(kind, id, "429"), 1);
        } else {
            pending.add(caller_field(kind, id, "req"), 1);
            pending.add(caller_field(kind, id, "tok"), tokens);
        }
    }

    /// Adds what this replica recorded to the shared counts.
    pub async fn flush(&self) -> Result<(), LimiterError> {
        let batch = std::mem::take(&mut *self.pending());
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.store.add(self.clock.now_ms(), &batch).await;
        if result.is_err() {
            let mut pending = self.pending();
            if pending.counts.len() + batch.counts.len() <= MAX_PENDING_FIELDS {
                pending.merge(batch);
            }
        }
        result
    }

    /// The last hour and day of every key and user, as every replica sees
    /// them (this replica's pending counts flushed first).
    pub async fn report(&self) -> Result<ActivityReport, LimiterError> {
        if let Err(err) = self.flush().await {
            tracing::debug!(error = %err, "could not flush activity counts before reading them");
        }
        let raw = self.store.read(self.clock.now_ms()).await?;
        let hour = Totals::from_counts(&raw.hour);
        let day = Totals::from_counts(&raw.day);
        let mut report = ActivityReport { last_used_ms: raw.last_used.into_iter().collect(), ..Default::default() };
        for (key, activity) in day.keys {
            let hour = hour.keys.get(&key).copied().unwrap_or_default();
            report.keys.insert(key, HourAndDay { hour, day: activity });
        }
        for (user, activity) in day.users {
            let hour = hour.users.get(&user).copied().unwrap_or_default();
            report.users.insert(user, HourAndDay { hour, day: activity });
        }
        for (token, activity) in day.api_tokens {
            let hour = hour.api_tokens.get(&token).copied().unwrap_or_default();
            report.api_tokens.insert(token, HourAndDay { hour, day: activity });
        }
        Ok(report)
    }

    /// Flushes every [`FLUSH_EVERY`] until dropped.
    pub async fn flush_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            if let Err(err) = self.flush().await {
                tracing::debug!(error = %err, "could not flush activity counts; kept for the next try");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn the_hour_and_the_day_are_summed_apart() {
        let clock = ManualClock::new(10 * HOUR_MS);
        let activity = Activity::in_memory(Arc::new(clock.clone()));
        activity.key_call("flash|01", CallClass::Success);
        activity.key_latency("flash|01", Duration::from_millis(100));
        activity.user_call("7", 120, false);
        activity.api_token_call(3, 120, false);
        activity.flush().await.unwrap();
        clock.advance(2 * HOUR_MS);
        activity.key_call("flash|01", CallClass::RateLimited);
        activity.key_latency("flash|01", Duration::from_millis(300));
        activity.user_call("7", 0, true);
        let report = activity.report().await.unwrap();
        let key = report.keys["flash|01"];
        assert_eq!((key.hour.successes, key.hour.rate_limited), (0, 1));
        assert_eq!((key.day.successes, key.day.rate_limited), (1, 1));
        assert_eq!((key.hour.mean_latency_ms, key.day.mean_latency_ms), (Some(300), Some(200)));
        let user = report.users["7"];
        assert_eq!((user.day.requests, user.day.tokens, user.day.rate_limited), (1, 120, 1));
        assert_eq!((user.hour.requests, user.hour.rate_limited), (0, 1));
        let token = report.api_tokens["3"];
        assert_eq!((token.day.requests, token.day.tokens, token.hour.requests), (1, 120, 0));
        assert!(!report.users.contains_key("3"), "a token's counts are not a user's");
        assert_eq!(report.last_used_ms["flash|01"], 12 * HOUR_MS);

        clock.advance(25 * HOUR_MS);
        assert!(activity.report().await.unwrap().keys.is_empty(), "a day later nothing is left");
    }
}
