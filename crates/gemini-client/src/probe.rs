//! The pool's no-quota probe: `GET models/{m}` checks a key and spends no
//! generation quota.

use async_trait::async_trait;
use key_rotation::config::KeySpec;
use key_rotation::outcome::Outcome;
use key_rotation::pool::{KeyProbe, ProbeResult};

use crate::client::GeminiClient;

pub struct ModelProbe {
    client: GeminiClient,
}

impl ModelProbe {
    pub fn new(client: GeminiClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl KeyProbe for ModelProbe {
    async fn probe(&self, key: &KeySpec) -> ProbeResult {
        match self.client.get_model(&key.secret, &key.model).await {
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
