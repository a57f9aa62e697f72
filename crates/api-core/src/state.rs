//! The one application state every router shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use key_rotation::fair_use::{FairUse, UserLimits};
use key_rotation::pool::{KeyPool, KeyProbe};
use key_rotation::redis_conn::RedisHandle;
use key_rotation::throttle::Throttle;
use store::Store;

use crate::client_ip::TrustedProxies;
use crate::jwt::JwtKeys;
use crate::tasks::DetachedTasks;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub store: Store,
    pub jwt: JwtKeys,
    /// Whether an access token's session is still live.
    pub sessions: crate::sessions::SessionCheck,
    /// Whom a gateway API token speaks for.
    pub api_tokens: crate::api_tokens::ApiTokenCheck,
    /// Login and registration throttles: in memory, or in Redis when
    /// configured so that every replica counts together.
    pub throttle: Arc<dyn Throttle>,
    /// Bounds concurrent password hashing; taken after the throttle.
    pub hashing: crate::hashing::HashingGate,
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
    pub chat: ChatSettings,
    /// AI work and the streams behind it, detached from their requests;
    /// ended and saved at shutdown.
    pub tasks: DetachedTasks,
    /// `USER_MAX_STREAMS`: the event streams each user may hold open.
    pub stream_slots: crate::stream_slots::StreamSlots,
    /// `METRICS_TOKEN`: the bearer token `/metrics` asks for; without one
    /// it answers only on loopback.
    pub metrics_token: Option<secrecy::SecretString>,
    /// What this replica answered clients, counted for the metrics.
    pub counters: crate::counters::OperatorCounters,
    /// How the key secrets' store answered its last refresh.
    pub secret_store: Arc<crate::counters::SecretStoreStatus>,
    /// The heartbeat registry of replicas sharing Redis, when configured.
    pub replicas: Option<Arc<key_rotation::replicas::ReplicaRegistry>>,
    /// The rotation history every replica writes, in the database.
    pub history: Arc<crate::rotation_history::DatabaseEventLog>,
    /// Probes a key without spending quota: the operators' "probe now".
    pub probe: Arc<dyn KeyProbe>,
    /// Asks every replica to re-read the key configuration.
    pub reload: Arc<dyn ReloadBroadcast>,
    /// `ALERT_WEBHOOK_URL` and its settings, when set.
    pub alert_webhook: Option<AlertWebhook>,
    /// `REQUEST_TIMEOUT_SECS`: what a request may take, and so what work
    /// making several AI calls must fit into.
    pub request_timeout: Duration,
    /// Where generated strategies' backtests run.
    pub sandbox: Arc<sandbox::Sandbox>,
    /// `BACKTEST_CASH` and `BACKTEST_COMMISSION`.
    pub backtest_defaults: BacktestDefaults,
    /// Backtest workers this process runs (`SANDBOX_WORKERS`; 0 on an
    /// HTTP-only replica, which relies on `algoagent worker` elsewhere).
    pub backtest_slots: usize,
    /// Where `/api/data/` fetches bars (`MARKET_DATA_SOURCE`).
    pub market: Arc<market_data::Source>,
    /// Fetches one user may start in an hour.
    pub market_fetches_per_hour: u32,
    /// Wakes this replica's idle backtest workers when a run is queued.
    pub backtest_queue: tokio::sync::Notify,
    /// `STREAM_BAR_MS`: the pause between a live backtest's candles.
    pub stream_bar: Duration,
    /// Backtests watched live on this replica.
    pub live_runs: crate::live_runs::LiveRuns,
}

/// What a backtest that names no capital or commission gets.
#[derive(Debug, Clone, Copy)]
pub struct BacktestDefaults {
    pub cash: f64,
    pub commission: f64,
}

/// The limits of a conversation.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Input tokens of earlier turns a chat message carries.
    pub history_tokens: u64,
    pub max_message_chars: usize,
    /// Messages of both roles one session may hold.
    pub max_session_messages: i64,
    /// How long a stream may wait for its next chunk from upstream.
    pub stream_idle_timeout: Duration,
}

/// Where and how alerts are posted (`ALERT_WEBHOOK_*`).
#[derive(Clone)]
pub struct AlertWebhook {
    /// A secret: webhook URLs carry their token.
    pub url: secrecy::SecretString,
    pub secret: Option<secrecy::SecretString>,
    /// A condition is posted at most once per this, across replicas.
    pub repeat: Duration,
    pub check_every: Duration,
}

/// Asks every replica to re-read the key configuration (a Redis broadcast,
/// or a signal to the one local server).
#[async_trait::async_trait]
pub trait ReloadBroadcast: Send + Sync {
    /// Whom the request reached, for the operator to read.
    async fn request_reload(&self) -> anyhow::Result<String>;
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
