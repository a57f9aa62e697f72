//! The one application state every router shares.

use std::ops::Deref;
use std::sync::Arc;

use key_rotation::fair_use::{FairUse, UserLimits};
use key_rotation::pool::KeyPool;
use key_rotation::redis_conn::RedisHandle;
use key_rotation::throttle::Throttle;
use store::Store;

use crate::client_ip::TrustedProxies;
use crate::jwt::JwtKeys;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub store: Store,
    pub jwt: JwtKeys,
    /// Login and registration throttles: in memory, or in Redis when
    /// configured so that every replica counts together.
    pub throttle: Arc<dyn Throttle>,
    pub trusted_proxies: TrustedProxies,
    pub redis: Option<Arc<RedisHandle>>,
    /// The Gemini key pool every AI call is admitted through.
    pub pool: Arc<KeyPool>,
    /// Per-user fair use, checked before key admission.
    pub fair_use: Arc<dyn FairUse>,
    pub user_limits: UserLimits,
    /// The one way every feature calls Gemini: through the pool, with
    /// fair use, failover and deadlines.
    pub gemini: Arc<gemini_client::Executor>,
    /// Input tokens of earlier turns a chat message carries.
    pub chat_history_tokens: u64,
}

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
