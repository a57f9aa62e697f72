//! The pool's no-quota probe: `GET models/{m}` checks a key and spends no
//! generation quota.

use std::time::Duration;

use async_trait::async_trait;
use key_rotation::config::KeySpec;
use key_rotation::outcome::Outcome;
use key_rotation::pool::{KeyProbe, ProbeResult};

use crate::client::GeminiClient;

/// How long one probe may take. Probes of disabled keys run one after the
/// other, so a hung one would hold up every re-check behind it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ModelProbe {
    client: GeminiClient,
    timeout: Duration,
}

impl ModelProbe {
    pub fn new(client: GeminiClient) -> Self {
        Self { client, timeout: PROBE_TIMEOUT }
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl KeyProbe for ModelProbe {
    async fn probe(&self, key: &KeySpec) -> ProbeResult {
        let Ok(answer) = tokio::time::timeout(self.timeout, self.client.get_model(&key.secret, &key.model)).await
        else {
            tracing::info!(key_id = %key.key_id, "the probe timed out; the key's state is unknown");
            return ProbeResult::Inconclusive;
        };
        match answer {
            Ok(_) => ProbeResult::Healthy,
            Err(err) => match err.outcome() {
                outcome @ (Outcome::KeyInvalid
                | Outcome::KeyLeaked
                | Outcome::KeyBlocked
                | Outcome::ProjectDisabled) => ProbeResult::Dead(outcome),
                // Network trouble, 5xx, an unknown model: the key's state is unknown.
                _ => ProbeResult::Inconclusive,
            },
        }
    }
}
