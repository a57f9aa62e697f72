//! What happened to a call, as far as the key pool cares. The Gemini client
//! classifies responses into this type; the pool reacts to it.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    PerMinute,
    PerDay,
    InputTokens,
    /// A 429 without `QuotaFailure` details.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success {
        /// `usageMetadata.promptTokenCount`, to reconcile the estimate.
        prompt_tokens: Option<u64>,
    },
    RateLimited {
        scope: QuotaScope,
        retry_delay: Option<Duration>,
        /// The quota is `limit: 0`: the project has none for this model.
        zero_limit: bool,
    },
    /// 400 `API_KEY_INVALID`: invalid, expired or not found.
    KeyInvalid,
    /// 403 "reported as leaked". Never re-enabled automatically.
    KeyLeaked,
    /// 403 `API_KEY_SERVICE_BLOCKED`.
    KeyBlocked,
    /// `SERVICE_DISABLED`: the whole project is unusable.
    ProjectDisabled,
    /// 500/503/504: model-wide, not the key's fault. The unit stays spent.
    UpstreamUnavailable,
    /// Timed out after the request was sent. The unit stays spent.
    TimedOut,
    /// Failed before the request was sent: Google never saw it. Refunded.
    NotSent,
    /// The caller's problem (blocked prompt, bad request, unknown model).
    CallerError,
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::RateLimited { zero_limit: true, .. } => "quota_zero",
            Outcome::RateLimited { scope: QuotaScope::PerMinute, .. } => "rate_limited_minute",
            Outcome::RateLimited { scope: QuotaScope::PerDay, .. } => "rate_limited_day",
            Outcome::RateLimited { scope: QuotaScope::InputTokens, .. } => "rate_limited_tokens",
            Outcome::RateLimited { scope: QuotaScope::Unknown, .. } => "rate_limited",
            Outcome::KeyInvalid => "key_invalid",
            Outcome::KeyLeaked => "key_leaked",
            Outcome::KeyBlocked => "key_blocked",
            Outcome::ProjectDisabled => "project_disabled",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
            Outcome::TimedOut => "timed_out",
            Outcome::NotSent => "not_sent",
            Outcome::CallerError => "caller_error",
        }
    }

    /// Whether another key could succeed where this one failed.
    pub fn is_key_failure(&self) -> bool {
        matches!(
            self,
            Outcome::RateLimited { .. }
                | Outcome::KeyInvalid
                | Outcome::KeyLeaked
                | Outcome::KeyBlocked
                | Outcome::ProjectDisabled
        )
    }
}
