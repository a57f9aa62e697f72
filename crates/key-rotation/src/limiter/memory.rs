//! The in-process limiter: exact for one process, and the fallback a replica
//! uses (with a reduced share of each limit) while Redis is unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{
    gcra, pacing_interval_ms, remaining_fraction, AdmitRequest, BucketUsage, Candidate, Decision, Lasting, Limiter,
    LimiterError, Pick, Restriction, Ticket, Window,
};
use crate::clock::{Clock, SystemClock};
use crate::pacific;

type BucketKey = (String, String);

#[derive(Default)]
struct State {
    windows: HashMap<BucketKey, Window>,
    tats: HashMap<BucketKey, u64>,
    days: HashMap<(String, String, u64), u32>,
    leases: HashMap<String, Vec<(String, u64)>>,
    cooldowns: HashMap<BucketKey, Restriction>,
    disabled: HashMap<String, Restriction>,
    round_robin: HashMap<String, u64>,
    locks: HashMap<String, u64>,
}

enum Evaluation {
    Fits { remaining: f64 },
    Wait(u64),
    Never,
}

pub struct MemoryLimiter {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

fn bucket_key(model: &str, project: &str) -> BucketKey {
    (model.to_string(), project.to_string())
}

impl MemoryLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { state: Mutex::new(State::default()), clock }
    }

    /// Records an admission decided elsewhere (by Redis), so that this
    /// replica's own recent use still counts if it must fall back to local
    /// admission.
    pub fn mirror(&self, request: &AdmitRequest, key_id: &str) {
        let Some(candidate) = request.candidates.iter().find(|c| c.key_id == key_id) else {
            return;
        };
        let now_ms = self.clock.now_ms();
        let day = pacific::day_bounds_ms(now_ms);
        self.lock().admit(candidate, request, now_ms, day);
    }

    /// Adds `requests` entries holding `tokens` in all, stamped `at_ms`, to a
    /// bucket's window: other replicas' use, as Redis last reported it.
    pub fn seed(&self, model: &str, project: &str, requests: u32, tokens: u64, at_ms: u64) {
        let mut state = self.lock();
        let window = state.windows.entry(bucket_key(model, project)).or_default();
        for i in 0..requests {
            window.push(at_ms, &format!("elsewhere-{at_ms}-{i}"), if i == 0 { tokens } else { 0 });
        }
    }

    /// This replica's requests and tokens in a bucket's window now.
    pub fn window_use(&self, model: &str, project: &str, window_ms: u64) -> (u32, u64) {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        let window = state.windows.entry(bucket_key(model, project)).or_default();
        window.prune(now_ms, window_ms);
        (window.requests(), window.tokens())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn live_leases(&mut self, key_id: &str, now_ms: u64) -> &mut Vec<(String, u64)> {
        let leases = self.leases.entry(key_id.to_string()).or_default();
        leases.retain(|(_, expires)| *expires > now_ms);
        leases
    }

    fn evaluate(&mut self, candidate: &Candidate, request: &AdmitRequest, now_ms: u64, day: (u64, u64)) -> Evaluation {
        if self.disabled.get(&candidate.key_id).is_some_and(|r| r.until_ms > now_ms) {
            return Evaluation::Never;
        }
        let bucket = bucket_key(&candidate.model, &candidate.project);
        let limits = &candidate.limits;
        let mut wait = 0;
        if let Some(cooldown) = self.cooldowns.get(&bucket).filter(|r| r.until_ms > now_ms) {
            wait = cooldown.until_ms - now_ms;
        }
        let window = self.windows.entry(bucket.clone()).or_default();
        window.prune(now_ms, request.window_ms);
        let Some(window_wait) = window.wait_ms(limits, request.tokens, now_ms, request.window_ms) else {
            return Evaluation::Never;
        };
        let (requests, tokens) = (window.requests(), window.tokens());
        wait = wait.max(window_wait);
        let (gcra_wait, _) = gcra(self.tats.get(&bucket).copied(), limits, now_ms, request.window_ms);
        wait = wait.max(gcra_wait);
        let today = self.days.get(&(bucket.0, bucket.1, day.0)).copied().unwrap_or(0);
        if limits.rpd.is_some_and(|rpd| today >= rpd) {
            wait = wait.max(day.1.saturating_sub(now_ms));
        }
        if let Some(max) = candidate.max_in_flight {
            let leases = self.live_leases(&candidate.key_id, now_ms);
            if leases.len() >= max as usize {
                let earliest = leases.iter().map(|(_, expires)| *expires).min().unwrap_or(now_ms);
                wait = wait.max(earliest.saturating_sub(now_ms).max(1));
            }
        }
        if wait > 0 {
            return Evaluation::Wait(wait);
        }
        Evaluation::Fits { remaining: remaining_fraction(limits, requests, tokens, today) }
    }

    fn admit(&mut self, candidate: &Candidate, request: &AdmitRequest, now_ms: u64, day: (u64, u64)) -> Ticket {
        let bucket = bucket_key(&candidate.model, &candidate.project);
        let (_, next_tat) = gcra(self.tats.get(&bucket).copied(), &candidate.limits, now_ms, request.window_ms);
        self.tats.insert(bucket.clone(), next_tat);
        let window = self.windows.entry(bucket.clone()).or_default();
        window.push(now_ms, &request.entry_id, request.tokens);
        let (window_requests, window_tokens) = (window.requests(), window.tokens());
        *self.days.entry((bucket.0, bucket.1, day.0)).or_default() += 1;
        let leased = candidate.max_in_flight.is_some();
        if leased {
            self.live_leases(&candidate.key_id, now_ms).push((request.entry_id.clone(), now_ms + request.lease_ttl_ms));
        }
        // Old day counters are dead weight; drop them as days pass.
        if self.days.len() > 64 {
            self.days.retain(|(_, _, start), _| *start + 2 * 86_400_000 > now_ms);
        }
        Ticket {
            key_id: candidate.key_id.clone(),
            model: candidate.model.clone(),
            project: candidate.project.clone(),
            entry_id: request.entry_id.clone(),
            tokens: request.tokens,
            admitted_at_ms: now_ms,
            day_start_ms: day.0,
            leased,
            pacing_interval_ms: pacing_interval_ms(&candidate.limits, request.window_ms),
            window_requests,
            window_tokens,
        }
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn admit(&self, request: &AdmitRequest) -> Result<Decision, LimiterError> {
        let now_ms = self.clock.now_ms();
        let day = pacific::day_bounds_ms(now_ms);
        let mut state = self.lock();
        let candidates = &request.candidates;
        if candidates.is_empty() {
            return Ok(Decision::NoRoom { retry_after_ms: None });
        }
        let start = if request.rotate {
            let counter = state.round_robin.entry(candidates[0].model.clone()).or_default();
            *counter += 1;
            usize::try_from(*counter % candidates.len() as u64).unwrap_or(0)
        } else {
            0
        };
        let mut earliest: Option<u64> = None;
        let mut best: Option<(usize, f64)> = None;
        for offset in 0..candidates.len() {
            let index = (start + offset) % candidates.len();
            match state.evaluate(&candidates[index], request, now_ms, day) {
                Evaluation::Fits { remaining } => {
                    if request.pick == Pick::FirstFit {
                        best = Some((index, remaining));
                        break;
                    }
                    if best.is_none_or(|(_, b)| remaining > b) {
                        best = Some((index, remaining));
                    }
                }
                Evaluation::Wait(ms) => earliest = Some(earliest.map_or(ms, |e| e.min(ms))),
                Evaluation::Never => {}
            }
        }
        Ok(match best {
            Some((index, _)) => Decision::Admitted(state.admit(&candidates[index], request, now_ms, day)),
            None => Decision::NoRoom { retry_after_ms: earliest },
        })
    }

    async fn reconcile(&self, ticket: &Ticket, actual_tokens: u64, _window_ms: u64) -> Result<(), LimiterError> {
        let mut state = self.lock();
        if let Some(window) = state.windows.get_mut(&bucket_key(&ticket.model, &ticket.project)) {
            window.set_tokens(&ticket.entry_id, actual_tokens);
        }
        Ok(())
    }

    async fn release(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        if ticket.leased {
            let mut state = self.lock();
            if let Some(leases) = state.leases.get_mut(&ticket.key_id) {
                leases.retain(|(id, _)| *id != ticket.entry_id);
            }
        }
        Ok(())
    }

    async fn refund(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        self.release(ticket).await?;
        let mut state = self.lock();
        let bucket = bucket_key(&ticket.model, &ticket.project);
        if let Some(window) = state.windows.get_mut(&bucket) {
            window.remove(&ticket.entry_id);
        }
        if let Some(tat) = state.tats.get_mut(&bucket) {
            *tat = tat.saturating_sub(ticket.pacing_interval_ms);
        }
        if let Some(count) = state.days.get_mut(&(bucket.0, bucket.1, ticket.day_start_ms)) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    async fn cool_down(&self, model: &str, project: &str, duration_ms: u64, reason: &str) -> Result<(), LimiterError> {
        let until_ms = self.clock.now_ms() + duration_ms;
        let mut state = self.lock();
        let current = state.cooldowns.get(&bucket_key(model, project)).map_or(0, |r| r.until_ms);
        if until_ms > current {
            state.cooldowns.insert(bucket_key(model, project), Restriction::timed(until_ms, reason));
        }
        Ok(())
    }

    async fn disable(&self, _model: &str, key_id: &str, lasting: Lasting, reason: &str) -> Result<(), LimiterError> {
        let restriction = match lasting {
            Lasting::Ms(duration_ms) => Restriction::timed(self.clock.now_ms() + duration_ms, reason),
            Lasting::UntilOperator => Restriction::until_operator(reason),
        };
        self.lock().disabled.insert(key_id.to_string(), restriction);
        Ok(())
    }

    async fn enable(&self, _model: &str, key_id: &str) -> Result<(), LimiterError> {
        self.lock().disabled.remove(key_id);
        Ok(())
    }

    async fn clear_cooldown(&self, model: &str, project: &str) -> Result<(), LimiterError> {
        self.lock().cooldowns.remove(&bucket_key(model, project));
        Ok(())
    }

    async fn usage(&self, model: &str, project: &str, window_ms: u64) -> Result<BucketUsage, LimiterError> {
        let now_ms = self.clock.now_ms();
        let day = pacific::day_bounds_ms(now_ms);
        let mut state = self.lock();
        let bucket = bucket_key(model, project);
        let window = state.windows.entry(bucket.clone()).or_default();
        window.prune(now_ms, window_ms);
        let (requests, tokens) = (window.requests(), window.tokens());
        Ok(BucketUsage {
            model: model.to_string(),
            project: project.to_string(),
            requests_in_window: requests,
            tokens_in_window: tokens,
            requests_today: state.days.get(&(model.to_string(), project.to_string(), day.0)).copied().unwrap_or(0),
            cooldown: state.cooldowns.get(&bucket).filter(|r| r.until_ms > now_ms).cloned(),
        })
    }

    async fn disabled(&self, _model: &str, key_id: &str) -> Result<Option<Restriction>, LimiterError> {
        let now_ms = self.clock.now_ms();
        Ok(self.lock().disabled.get(key_id).filter(|r| r.until_ms > now_ms).cloned())
    }

    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, LimiterError> {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        if state.locks.get(name).is_some_and(|until| *until > now_ms) {
            return Ok(false);
        }
        state.locks.insert(name.to_string(), now_ms + ttl_ms);
        Ok(true)
    }
}
