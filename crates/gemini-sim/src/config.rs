//! What the simulator pretends Google's side looks like.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How the simulated Google treats a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Valid,
    /// 400 `API_KEY_INVALID`.
    Invalid,
    /// 403 "reported as leaked".
    Leaked,
    /// 403 `API_KEY_SERVICE_BLOCKED`.
    Blocked,
    /// 403 `SERVICE_DISABLED` for the key's whole project.
    ServiceDisabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimKey {
    /// The secret the client sends in `x-goog-api-key`.
    pub key: String,
    /// A short name for logs and stats (never the secret).
    pub id: String,
    pub project: String,
    #[serde(default)]
    pub status: KeyStatus,
}

/// Quotas per (project, model), counted like Google: a sliding window of
/// `window_seconds` for requests and input tokens, and a per-day count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimLimits {
    pub rpm: u32,
    pub tpm: u64,
    #[serde(default)]
    pub rpd: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default)]
    pub keys: Vec<SimKey>,
    /// "project/model" → limits. Missing pairs get `default_limits`.
    #[serde(default)]
    pub limits: BTreeMap<String, SimLimits>,
    #[serde(default = "default_limits")]
    pub default_limits: SimLimits,
    /// Models the simulator serves; others answer 404.
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    #[serde(default = "default_window_seconds")]
    pub window_seconds: f64,
    /// Uniform latency before answering, in milliseconds.
    #[serde(default)]
    pub latency_ms: (u64, u64),
    /// Fractions of requests answered 500 / 503.
    #[serde(default)]
    pub error_rate_500: f64,
    #[serde(default)]
    pub error_rate_503: f64,
    /// Fraction of streams cut after their first chunk.
    #[serde(default)]
    pub stream_disconnect_rate: f64,
    /// Chunks a streamed answer is split into.
    #[serde(default = "default_stream_chunks")]
    pub stream_chunks: usize,
}

fn default_limits() -> SimLimits {
    SimLimits { rpm: 1_000, tpm: 10_000_000, rpd: None }
}

fn default_models() -> Vec<String> {
    ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"].map(String::from).to_vec()
}

fn default_window_seconds() -> f64 {
    60.0
}

fn default_stream_chunks() -> usize {
    3
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            limits: BTreeMap::new(),
            default_limits: default_limits(),
            models: default_models(),
            window_seconds: default_window_seconds(),
            latency_ms: (0, 0),
            error_rate_500: 0.0,
            error_rate_503: 0.0,
            stream_disconnect_rate: 0.0,
            stream_chunks: default_stream_chunks(),
        }
    }
}

impl SimConfig {
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window_seconds.max(0.001))
    }

    pub fn limits_for(&self, project: &str, model: &str) -> SimLimits {
        self.limits.get(&format!("{project}/{model}")).copied().unwrap_or(self.default_limits)
    }
}
