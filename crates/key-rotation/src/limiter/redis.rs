//! The shared limiter: every replica admits through one Redis, one Lua script
//! per admission, with Redis `TIME` as the only clock.
//!
//! Per bucket there are two keys, a window log and a state hash (token
//! total, GCRA, day counters, cooldown), plus a lease set per key and one
//! hash of disabled keys per model. Every key an admission touches carries
//! the model as its hash tag, so one call stays in one Cluster slot. Every
//! key has a TTL.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::Script;

use super::{
    AdmitRequest, BucketUsage, Decision, Lasting, Limiter, LimiterError, LimiterSnapshot, Pick, Restriction,
    SnapshotRequest, Ticket,
};

/// What `restrict.lua` answers for the end of a disable only an operator lifts.
const UNTIL_OPERATOR: i64 = -1;

/// A disable as the model's hash stores it: `<until ms>|<reason>`, or
/// `op|<reason>` until an operator lifts it. `None` once it has run out.
fn restriction_of(stored: &str, now_ms: u64) -> Option<Restriction> {
    let (until, reason) = stored.split_once('|')?;
    if until == "op" {
        return Some(Restriction::until_operator(reason));
    }
    let until_ms = until.parse::<u64>().ok()?;
    (until_ms > now_ms).then(|| Restriction::timed(until_ms, reason))
}
use crate::pacific;
use crate::redis_conn::{RedisError, RedisHandle};

/// Each script starts with the shared bucket helpers.
fn with_helpers(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("window.lua")))
}

static ADMIT: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("admit.lua")));
static TICKET: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("ticket.lua")));
static RESTRICT: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("restrict.lua")));
static REPLAY: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("replay.lua")));
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| with_helpers(include_str!("snapshot.lua")));

/// Redis key names. Braces in ids would break the hash tag, so they are
/// replaced; colons are fine inside a segment.
#[derive(Debug, Clone)]
pub struct KeyNames {
    prefix: String,
}

fn clean(segment: &str) -> String {
    segment.replace(['{', '}'], "_")
}

impl KeyNames {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    fn tagged(&self, model: &str, kind: &str, id: &str) -> String {
        format!("{}:{{m:{}}}:{kind}:{}", self.prefix, clean(model), clean(id))
    }

    pub fn window(&self, model: &str, project: &str) -> String {
        self.tagged(model, "win", project)
    }
    pub fn state(&self, model: &str, project: &str) -> String {
        self.tagged(model, "st", project)
    }
    pub fn leases(&self, model: &str, key_id: &str) -> String {
        self.tagged(model, "lease", key_id)
    }
    pub fn disabled_keys(&self, model: &str) -> String {
        format!("{}:{{m:{}}}:off", self.prefix, clean(model))
    }
    pub fn round_robin(&self, model: &str) -> String {
        format!("{}:{{m:{}}}:rr", self.prefix, clean(model))
    }
    /// Marks which candidate an admission took, for one window, so an
    /// admission whose reply was lost can be found and withdrawn.
    pub fn admission_marker(&self, model: &str, entry_id: &str) -> String {
        self.tagged(model, "adm", entry_id)
    }
    pub fn lock(&self, name: &str) -> String {
        format!("{}:lock:{}", self.prefix, clean(name))
    }

    /// Every key one admission over `request` touches, in script order.
    pub fn admission_keys(&self, request: &AdmitRequest) -> Vec<String> {
        let mut keys = Vec::with_capacity(request.candidates.len() * 3 + 3);
        for c in &request.candidates {
            keys.push(self.window(&c.model, &c.project));
            keys.push(self.state(&c.model, &c.project));
            keys.push(self.leases(&c.model, &c.key_id));
        }
        let model = request.candidates.first().map_or("", |c| c.model.as_str());
        keys.push(self.disabled_keys(model));
        keys.push(self.round_robin(model));
        keys.push(self.admission_marker(model, &request.entry_id));
        keys
    }
}

#[derive(Clone)]
pub struct RedisLimiter {
    redis: Arc<RedisHandle>,
    names: KeyNames,
}

/// When to look for an admission whose reply was lost: after the script has
/// surely run (calls on one connection run in order), then twice more in
/// case Redis is still slow.
const WITHDRAW_AFTER_MS: [u64; 3] = [50, 250, 1_000];

/// A cooldown or disable change, pushed to every replica's local limiter so
/// that a replica that later loses Redis still honours it. Admission never
/// depends on the push: the script reads the shared keys itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RestrictionChange {
    CoolDown { model: String, project: String, duration_ms: u64, reason: String },
    ClearCooldown { model: String, project: String },
    Disable { model: String, key_id: String, lasting: Lasting, reason: String },
    Enable { model: String, key_id: String },
}

impl RestrictionChange {
    /// Applies the change to a local limiter.
    pub async fn apply(&self, local: &dyn Limiter) -> Result<(), LimiterError> {
        match self {
            RestrictionChange::CoolDown { model, project, duration_ms, reason } => {
                local.cool_down(model, project, *duration_ms, reason).await
            }
            RestrictionChange::ClearCooldown { model, project } => local.clear_cooldown(model, project).await,
            RestrictionChange::Disable { model, key_id, lasting, reason } => {
                local.disable(model, key_id, *lasting, reason).await
            }
            RestrictionChange::Enable { model, key_id } => local.enable(model, key_id).await,
        }
    }
}

impl From<RedisError> for LimiterError {
    fn from(err: RedisError) -> Self {
        LimiterError::Unavailable(err.to_string())
    }
}

fn today() -> (u64, u64) {
    pacific::day_bounds_ms(crate::clock::Clock::now_ms(&crate::clock::SystemClock))
}

impl RedisLimiter {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        Self { redis, names: KeyNames::new(prefix) }
    }

    pub fn names(&self) -> &KeyNames {
        &self.names
    }

    pub fn handle(&self) -> &Arc<RedisHandle> {
        &self.redis
    }

    /// The pub/sub channel restriction changes are announced on.
    pub fn restrictions_channel(&self) -> String {
        format!("{}:restrictions", self.names.prefix)
    }

    async fn announce(&self, change: &RestrictionChange) {
        let Ok(message) = serde_json::to_string(change) else {
            return;
        };
        if let Err(err) = self.redis.publish(&self.restrictions_channel(), &message).await {
            // Harmless: the shared key already holds the change.
            tracing::debug!(error = %err, "could not announce a restriction change");
        }
    }

    /// Writes admissions made while Redis was unreachable into the shared
    /// windows, so a recovered (or restarted) Redis counts them too.
    pub async fn replay(&self, tickets: &[(Ticket, u64)]) -> Result<(), LimiterError> {
        let mut by_bucket: std::collections::BTreeMap<(&str, &str), Vec<&(Ticket, u64)>> = Default::default();
        for entry in tickets {
            by_bucket.entry((&entry.0.model, &entry.0.project)).or_default().push(entry);
        }
        for ((model, project), entries) in by_bucket {
            let window_ms = entries.iter().map(|(_, w)| *w).max().unwrap_or(0);
            let mut invocation = REPLAY.prepare_invoke();
            invocation.key(self.names.window(model, project)).key(self.names.state(model, project)).arg(window_ms);
            for (ticket, _) in entries {
                invocation
                    .arg(ticket.admitted_at_ms)
                    .arg(format!("{}:{}", ticket.entry_id, ticket.tokens))
                    .arg(ticket.tokens);
            }
            self.redis.invoke::<i64>(&invocation).await?;
        }
        Ok(())
    }

    /// Withdraws the admission `request` made if it was made: for a call
    /// that missed its deadline after Redis had run the script. Without
    /// this, each such call would hold a unit of quota that no request uses
    /// for a whole window (measured: about 10% of goodput on a saturated
    /// machine). Returns whether there was one.
    pub async fn withdraw(&self, request: &AdmitRequest) -> Result<bool, LimiterError> {
        let Some(model) = request.candidates.first().map(|c| c.model.as_str()) else {
            return Ok(false);
        };
        let mut getdel = redis::cmd("GETDEL");
        getdel.arg(self.names.admission_marker(model, &request.entry_id));
        let Some(marker) = self.redis.query::<Option<String>>(&getdel).await? else {
            return Ok(false);
        };
        let parsed =
            marker.split_once(':').and_then(|(index, at)| Some((index.parse::<usize>().ok()?, at.parse().ok()?)));
        let Some((candidate, admitted_at_ms)) =
            parsed.and_then(|(index, at)| Some((request.candidates.get(index.checked_sub(1)?)?, at)))
        else {
            return Err(LimiterError::Unavailable(format!("malformed admission marker {marker:?}")));
        };
        let ticket = Ticket {
            key_id: candidate.key_id.clone(),
            model: candidate.model.clone(),
            project: candidate.project.clone(),
            entry_id: request.entry_id.clone(),
            tokens: request.tokens,
            admitted_at_ms,
            day_start_ms: today().0,
            leased: candidate.max_in_flight.is_some(),
            pacing_interval_ms: super::pacing_interval_ms(&candidate.limits, request.window_ms),
            window_requests: 0,
            window_tokens: 0,
        };
        self.refund(&ticket).await?;
        Ok(true)
    }

    /// Withdraws a possibly made admission in the background.
    fn withdraw_later(&self, request: &AdmitRequest) {
        let (limiter, request) = (self.clone(), request.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut waited = 0;
            for at in WITHDRAW_AFTER_MS {
                tokio::time::sleep(std::time::Duration::from_millis(at - waited)).await;
                waited = at;
                match limiter.withdraw(&request).await {
                    Ok(true) => {
                        tracing::debug!(entry = %request.entry_id, "withdrew an admission whose reply was lost");
                        return;
                    }
                    Ok(false) => return,
                    Err(err) => tracing::debug!(error = %err, "could not check for a lost admission yet"),
                }
            }
        });
    }

    async fn ticket_op(&self, ticket: &Ticket, op: &str, tokens: u64, window_ms: u64) -> Result<(), LimiterError> {
        let mut invocation = TICKET.prepare_invoke();
        invocation
            .key(self.names.window(&ticket.model, &ticket.project))
            .key(self.names.state(&ticket.model, &ticket.project))
            .key(self.names.leases(&ticket.model, &ticket.key_id))
            .arg(op)
            .arg(&ticket.entry_id)
            .arg(ticket.admitted_at_ms)
            .arg(tokens)
            .arg(ticket.pacing_interval_ms)
            .arg(ticket.day_start_ms)
            .arg(window_ms);
        self.redis.invoke::<i64>(&invocation).await?;
        Ok(())
    }

    async fn restrict(&self, key: String, args: &[&str]) -> Result<(i64, String, u64), LimiterError> {
        let mut invocation = RESTRICT.prepare_invoke();
        invocation.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        Ok(self.redis.invoke(&invocation).await?)
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn admit(&self, request: &AdmitRequest) -> Result<Decision, LimiterError> {
        if request.candidates.is_empty() {
            return Ok(Decision::NoRoom { retry_after_ms: None });
        }
        // The day is computed from this replica's clock; at worst a few
        // milliseconds around midnight land in the neighbouring day.
        let (day_start, day_end) = today();
        let mut invocation = ADMIT.prepare_invoke();
        for key in self.names.admission_keys(request) {
            invocation.key(key);
        }
        invocation
            .arg(request.candidates.len())
            .arg(request.tokens)
            .arg(u8::from(request.pick == Pick::LeastLoaded))
            .arg(u8::from(request.rotate))
            .arg(request.window_ms)
            .arg(request.lease_ttl_ms)
            .arg(&request.entry_id)
            .arg(day_start)
            .arg(day_end);
        for c in &request.candidates {
            invocation
                .arg(&c.key_id)
                .arg(c.limits.rpm)
                .arg(c.limits.tpm)
                .arg(c.limits.rpd.unwrap_or(0))
                .arg(c.limits.burst)
                .arg(c.max_in_flight.unwrap_or(0));
        }
        let reply: Vec<i64> = match self.redis.invoke(&invocation).await {
            Ok(reply) => reply,
            Err(err) => {
                // A missed deadline or a dropped connection may have lost the
                // reply to an admission Redis made; a refused connection
                // never reached it, so there is nothing to look for.
                let never_sent = matches!(&err, RedisError::Redis(cause) if cause.is_connection_refusal());
                if !never_sent {
                    self.withdraw_later(request);
                }
                return Err(err.into());
            }
        };
        match reply.as_slice() {
            [1, index, now_ms, requests, tokens] => {
                let candidate = usize::try_from(*index - 1)
                    .ok()
                    .and_then(|i| request.candidates.get(i))
                    .ok_or_else(|| LimiterError::Unavailable(format!("script chose candidate {index}")))?;
                Ok(Decision::Admitted(Ticket {
                    key_id: candidate.key_id.clone(),
                    model: candidate.model.clone(),
                    project: candidate.project.clone(),
                    entry_id: request.entry_id.clone(),
                    tokens: request.tokens,
                    admitted_at_ms: u64::try_from(*now_ms).unwrap_or(0),
                    day_start_ms: day_start,
                    leased: candidate.max_in_flight.is_some(),
                    pacing_interval_ms: super::pacing_interval_ms(&candidate.limits, request.window_ms),
                    window_requests: u32::try_from(*requests).unwrap_or(u32::MAX),
                    window_tokens: u64::try_from(*tokens).unwrap_or(0),
                }))
            }
            [0, wait] => Ok(Decision::NoRoom { retry_after_ms: u64::try_from(*wait).ok() }),
            other => Err(LimiterError::Unavailable(format!("unexpected admission reply {other:?}"))),
        }
    }

    async fn reconcile(&self, ticket: &Ticket, actual_tokens: u64, window_ms: u64) -> Result<(), LimiterError> {
        self.ticket_op(ticket, "reconcile", actual_tokens, window_ms).await
    }

    async fn release(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        if !ticket.leased {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.names.leases(&ticket.model, &ticket.key_id)).arg(&ticket.entry_id);
        self.redis.query::<i64>(&cmd).await?;
        Ok(())
    }

    async fn refund(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        // A refund only removes: no window length is needed.
        self.ticket_op(ticket, "refund", 0, 0).await
    }

    async fn cool_down(&self, model: &str, project: &str, duration_ms: u64, reason: &str) -> Result<(), LimiterError> {
        let duration = duration_ms.max(1).to_string();
        self.restrict(self.names.state(model, project), &["cool", &duration, reason]).await?;
        self.announce(&RestrictionChange::CoolDown {
            model: model.into(),
            project: project.into(),
            duration_ms,
            reason: reason.into(),
        })
        .await;
        Ok(())
    }

    async fn disable(&self, model: &str, key_id: &str, lasting: Lasting, reason: &str) -> Result<(), LimiterError> {
        // "op" marks a disable only an operator lifts; it is kept without expiry.
        let duration = match lasting {
            Lasting::Ms(duration_ms) => duration_ms.max(1).to_string(),
            Lasting::UntilOperator => "op".to_string(),
        };
        self.restrict(self.names.disabled_keys(model), &["disable", key_id, &duration, reason]).await?;
        self.announce(&RestrictionChange::Disable {
            model: model.into(),
            key_id: key_id.into(),
            lasting,
            reason: reason.into(),
        })
        .await;
        Ok(())
    }

    async fn enable(&self, model: &str, key_id: &str) -> Result<(), LimiterError> {
        self.restrict(self.names.disabled_keys(model), &["enable", key_id]).await?;
        self.announce(&RestrictionChange::Enable { model: model.into(), key_id: key_id.into() }).await;
        Ok(())
    }

    async fn clear_cooldown(&self, model: &str, project: &str) -> Result<(), LimiterError> {
        self.restrict(self.names.state(model, project), &["uncool"]).await?;
        self.announce(&RestrictionChange::ClearCooldown { model: model.into(), project: project.into() }).await;
        Ok(())
    }

    async fn usage(&self, model: &str, project: &str, window_ms: u64) -> Result<BucketUsage, LimiterError> {
        let request =
            SnapshotRequest { window_ms, buckets: vec![(model.to_string(), project.to_string())], keys: Vec::new() };
        let mut snapshot = self.snapshot(&request).await?;
        snapshot
            .buckets
            .pop()
            .ok_or_else(|| LimiterError::Unavailable("the bucket is missing from the snapshot".into()))
    }

    /// One script call per model (a model's keys share one Cluster slot),
    /// all sent at once on the multiplexed connection: one round trip
    /// however many keys.
    async fn snapshot(&self, request: &SnapshotRequest) -> Result<LimiterSnapshot, LimiterError> {
        type BucketReply = (u32, u64, u32, u64, String);
        let (day_start, _) = today();
        let mut models: Vec<&str> = request.buckets.iter().chain(&request.keys).map(|(m, _)| m.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        let reads = models.iter().map(|model| {
            let buckets: Vec<&str> =
                request.buckets.iter().filter(|(m, _)| m == model).map(|(_, p)| p.as_str()).collect();
            let mut invocation = SNAPSHOT.prepare_invoke();
            invocation.key(self.names.disabled_keys(model));
            for project in &buckets {
                invocation.key(self.names.window(model, project)).key(self.names.state(model, project));
            }
            invocation.arg(request.window_ms).arg(day_start);
            async move {
                let reply: (u64, Vec<BucketReply>, std::collections::HashMap<String, String>) =
                    self.redis.invoke(&invocation).await?;
                Ok::<_, LimiterError>((*model, buckets, reply))
            }
        });
        let mut usage: std::collections::HashMap<(&str, &str), BucketUsage> = std::collections::HashMap::new();
        let mut disables: std::collections::HashMap<&str, (u64, std::collections::HashMap<String, String>)> =
            std::collections::HashMap::new();
        for read in futures::future::join_all(reads).await {
            let (model, buckets, (now_ms, replies, disabled)) = read?;
            for (project, (requests, tokens, today, cool_until, reason)) in buckets.into_iter().zip(replies) {
                let usage_now = BucketUsage {
                    model: model.to_string(),
                    project: project.to_string(),
                    requests_in_window: requests,
                    tokens_in_window: tokens,
                    requests_today: today,
                    cooldown: (cool_until > now_ms).then(|| Restriction::timed(cool_until, &reason)),
                };
                usage.insert((model, project), usage_now);
            }
            disables.insert(model, (now_ms, disabled));
        }
        let buckets = request
            .buckets
            .iter()
            .map(|(model, project)| usage.remove(&(model.as_str(), project.as_str())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LimiterError::Unavailable("a bucket is missing from the snapshot".into()))?;
        let disabled = request
            .keys
            .iter()
            .map(|(model, key_id)| {
                let (now_ms, hash) = disables.get(model.as_str())?;
                restriction_of(hash.get(key_id)?, *now_ms)
            })
            .collect();
        Ok(LimiterSnapshot { buckets, disabled })
    }

    async fn disabled(&self, model: &str, key_id: &str) -> Result<Option<Restriction>, LimiterError> {
        let (until_ms, reason, now_ms) = self.restrict(self.names.disabled_keys(model), &["disabled", key_id]).await?;
        Ok(match until_ms {
            UNTIL_OPERATOR => Some(Restriction::until_operator(&reason)),
            until_ms => {
                let until_ms = u64::try_from(until_ms).unwrap_or(0);
                (until_ms > now_ms).then(|| Restriction::timed(until_ms, &reason))
            }
        })
    }

    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, LimiterError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.names.lock(name)).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1));
        let reply: Option<String> = self.redis.query(&cmd).await?;
        Ok(reply.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BucketLimits;
    use crate::limiter::Candidate;

    /// Redis Cluster's slot function: CRC16 (XMODEM) of the hash tag, mod 16384.
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match bytes.iter().position(|&b| b == b'{') {
            Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for &byte in hashed {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc % 16384
    }

    #[test]
    fn the_slot_function_matches_redis() {
        // Reference values from the Redis Cluster specification.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    #[test]
    fn every_key_of_one_admission_hashes_to_one_slot() {
        let limits = BucketLimits { rpm: 15, tpm: 1_000_000, rpd: Some(1500), burst: 15 };
        let candidates: Vec<Candidate> = (0..16)
            .map(|i| Candidate {
                key_id: format!("flash_{i:02}"),
                model: "gemini-2.5-flash".into(),
                project: format!("project-{}", i % 5),
                limits,
                max_in_flight: Some(4),
            })
            .collect();
        let request = AdmitRequest {
            candidates,
            tokens: 10,
            pick: Pick::FirstFit,
            rotate: true,
            window_ms: 60_250,
            lease_ttl_ms: 60_000,
            entry_id: "e".into(),
        };
        let keys = KeyNames::new("algoagent").admission_keys(&request);
        assert_eq!(keys.len(), 16 * 3 + 3);
        let first = slot(&keys[0]);
        assert!(keys.iter().all(|key| slot(key) == first), "{keys:?}");
        // A braced id cannot break out of the tag.
        let names = KeyNames::new("p");
        assert_eq!(slot(&names.window("m}x{", "a")), slot(&names.disabled_keys("m}x{")));
    }
}
