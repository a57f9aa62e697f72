//! Building the application: state, router, middleware and the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api_core::error::{method_not_allowed, not_found};
use api_core::rotation_history::DatabaseEventLog;
use api_core::{require_auth, AlertWebhook, ApiError, AppState, AppStateInner, ChatSettings, JwtKeys, TrustedProxies};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use store::{ConnectOptions, Store};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{Config, CorsOrigins};
use crate::keys::KeyServices;
use crate::routes;

/// How long shutdown waits for open streams to save their partial replies.
const TASK_DRAIN_LIMIT: Duration = Duration::from_secs(10);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A built application: state ready, listener bound, not yet serving.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    keys: KeyServices,
    config: Config,
    /// Kept alive for the demo's lifetime.
    demo_sim: Option<gemini_sim::SimServer>,
}

impl App {
    /// Connects to the database (migrating it unless told not to), prepares
    /// the shared state and binds the listener.
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        Self::build_with(config, false).await
    }

    /// `demo`: an in-process gemini-sim and a built-in key pool stand in for
    /// Google and `KEYS_FILE` (see `demo.rs`).
    pub async fn build_with(config: &Config, demo: bool) -> anyhow::Result<App> {
        let (state, keys, demo_sim) = Self::prepare(config, demo).await?;
        let router = router(state.clone(), config);
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("binding BIND_ADDR {}", config.bind_addr))?;
        Ok(App { listener, router, state, keys, config: config.clone(), demo_sim })
    }

    /// The shared state alone, for a process that serves no HTTP
    /// (`algoagent worker`).
    pub async fn state_only(config: &Config) -> anyhow::Result<AppState> {
        Ok(Self::prepare(config, false).await?.0)
    }

    async fn prepare(
        config: &Config,
        demo: bool,
    ) -> anyhow::Result<(AppState, KeyServices, Option<gemini_sim::SimServer>)> {
        let store = connect_store(config).await?;
        if config.run_migrations {
            store.migrate().await.context("applying database migrations")?;
        }
        let secret = crate::secrets::jwt_secret(config)?;
        let jwt = JwtKeys::new(secret.expose_secret().as_bytes(), config.access_token_ttl, config.refresh_token_ttl);
        let history = Arc::new(DatabaseEventLog::new(store.clone()));
        let (keys, demo_sim) = if demo {
            let (sim, pool) = crate::demo::start().await?;
            tracing::warn!(
                gemini = %sim.base_url(),
                "demo mode: an in-process gemini-sim with built-in keys; KEYS_FILE and real keys are ignored"
            );
            (
                crate::keys::build_with(
                    config,
                    pool,
                    Arc::new(key_rotation::secrets::EnvSecrets::default()),
                    &sim.base_url(),
                    history.clone(),
                )?,
                Some(sim),
            )
        } else {
            (crate::keys::build(config, history.clone()).await?, None)
        };
        if let (Some(redis), Some(wait)) = (&keys.redis, config.redis_connect_timeout) {
            wait_for_redis(redis, wait).await;
        }
        let state = AppState::new(AppStateInner {
            hashing: api_core::HashingGate::for_this_machine(),
            sessions: api_core::sessions::SessionCheck::new(),
            api_tokens: api_core::api_tokens::ApiTokenCheck::new(),
            store,
            jwt,
            throttle: keys.throttle.clone(),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            redis: keys.redis.clone(),
            pool: keys.pool.clone(),
            fair_use: keys.fair_use.clone(),
            user_limits: crate::keys::user_limits(config),
            gemini: keys.executor.clone(),
            chat: ChatSettings {
                history_tokens: u64::from(config.chat_history_tokens),
                max_message_chars: config.chat_max_message_chars as usize,
                max_session_messages: i64::from(config.chat_max_session_messages),
                stream_idle_timeout: config.stream_idle_timeout,
            },
            tasks: api_core::DetachedTasks::default(),
            stream_slots: api_core::stream_slots::StreamSlots::new(config.user_max_streams),
            request_timeout: config.request_timeout,
            sandbox: Arc::new(sandbox::Sandbox::new(config.sandbox.settings())),
            backtest_slots: config.sandbox.workers,
            market: Arc::new(market_source(config)),
            market_fetches_per_hour: config.market_fetches_per_hour,
            backtest_defaults: api_core::BacktestDefaults {
                cash: config.backtest_cash,
                commission: config.backtest_commission,
            },
            backtest_queue: tokio::sync::Notify::new(),
            stream_bar: config.stream_bar,
            live_runs: api_core::live_runs::LiveRuns::default(),
            metrics_token: config.metrics_token.clone(),
            counters: api_core::counters::OperatorCounters::default(),
            secret_store: Arc::new(api_core::counters::SecretStoreStatus::new(
                config.secret_store_type.is_remote().then(|| keys.secrets.describe()),
            )),
            history,
            replicas: keys.registry.clone(),
            probe: keys.probe.clone(),
            reload: Arc::new(crate::reload::Broadcast::new(config.clone())),
            alert_webhook: config.alert_webhook_url.clone().map(|url| AlertWebhook {
                url,
                secret: config.alert_webhook_secret.clone(),
                repeat: config.alert_repeat,
                check_every: config.alert_check,
            }),
        });
        Ok((state, keys, demo_sim))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The demo's in-process gemini-sim, for its control API.
    pub fn demo_sim_url(&self) -> Option<String> {
        self.demo_sim.as_ref().map(gemini_sim::SimServer::base_url)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "listening");
        let mut background = tokio::task::JoinSet::new();
        if let Some(registry) = &self.keys.registry {
            background.spawn(registry.clone().run(crate::keys::HEARTBEAT_EVERY));
        }
        if let Some(failover) = &self.keys.failover {
            background.spawn(failover.clone().follow_restrictions());
        }
        background.spawn(crate::keys::probe_disabled_keys(self.keys.pool.clone(), self.keys.probe.clone()));
        background.spawn(crate::reload::listen(
            self.keys.pool.clone(),
            self.config.clone(),
            self.keys.redis.clone(),
            self.keys.secrets.clone(),
        ));
        if self.demo_sim.is_none() {
            // The demo's keys are built in; nothing to read again.
            background.spawn(crate::keys::refresh_secrets(
                self.keys.pool.clone(),
                self.config.clone(),
                self.keys.secrets.clone(),
                self.state.secret_store.clone(),
                self.keys.redis.clone(),
            ));
        }
        background.spawn(crate::maintenance::run(self.state.store.clone(), self.config.history_retention));
        background.spawn(self.keys.pool.activity().clone().flush_forever());
        background.spawn(self.state.history.clone().write_forever());
        background.spawn(admin_dashboard::alerts::run(self.state.clone()));
        // With the detached tasks: at shutdown the workers give their runs
        // back to the queue, and the drain below waits for that.
        self.state.tasks.spawn(backtests::worker::run_workers(self.state.clone(), self.config.sandbox.workers));
        let pid_file = crate::reload::write_pid_file(&self.config);
        // Trailing slashes are optional on every route: normalise before routing.
        let service = NormalizePathLayer::trim_trailing_slash().layer(self.router);
        let make_service = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(service);
        let tasks = self.state.tasks.clone();
        let shutdown = async move {
            shutdown.await;
            // Detached work and open streams save what they have and end,
            // or the graceful shutdown below would wait for them indefinitely.
            tasks.begin_shutdown();
        };
        axum::serve(self.listener, make_service).with_graceful_shutdown(shutdown).await?;
        if !self.state.tasks.drained(TASK_DRAIN_LIMIT).await {
            tracing::warn!(
                running = self.state.tasks.running(),
                "detached tasks still running at shutdown; their last turn may be lost"
            );
        }
        background.shutdown().await;
        if let Err(err) = self.state.history.flush().await {
            tracing::warn!(error = %err, "could not write the last of the rotation history");
        }

        if let Some(registry) = &self.keys.registry {
            // Leaving at once grows the others' degraded shares without waiting for a timeout.
            if let Err(err) = registry.leave().await {
                tracing::debug!(error = %err, "could not leave the replica registry");
            }
        }
        if let Some(path) = pid_file {
            let _ = std::fs::remove_file(path);
        }
        self.state.store.close().await;
        tracing::info!("shut down");
        Ok(())
    }
}

/// The configured market data source. The bundled samples are read from
/// the sandbox's environment, where `algoagent sandbox setup` put them.
fn market_source(config: &Config) -> market_data::Source {
    match &config.market_source {
        crate::config::MarketSourceConfig::Bundled => {
            let sandbox = sandbox::Sandbox::new(config.sandbox.settings());
            let dir = sandbox.sample_data(sandbox::SAMPLE_SYMBOLS[0]).and_then(|path| path.parent().map(Into::into));
            market_data::Source::Bundled { dir }
        }
        crate::config::MarketSourceConfig::Csv { dir } => market_data::Source::Csv { dir: dir.clone() },
        crate::config::MarketSourceConfig::Yahoo { base_url } => market_data::Source::yahoo(base_url),
    }
}

/// `REDIS_TIMEOUT`: gives Redis up to `wait` to answer before serving. The
/// server serves either way (degraded while Redis is away); this only
/// spares the first requests a Redis that is still starting.
async fn wait_for_redis(redis: &key_rotation::redis_conn::RedisHandle, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match redis.ping().await {
            Ok(()) => return,
            Err(err) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %err, waited_secs = wait.as_secs_f64(), "Redis did not answer in REDIS_TIMEOUT; serving degraded until it does");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let options = ConnectOptions { max_connections: config.db_max_connections, ..ConnectOptions::default() };
    Store::connect(config.database_url.expose(), &options)
        .await
        .with_context(|| format!("connecting to DATABASE_URL {}", config.database_url.redacted()))
}

/// The whole HTTP surface, with its middleware.
pub fn router(state: AppState, config: &Config) -> Router {
    let auth = auth_conversation::routes();
    let strategies = strategy_api::routes();
    let operators = admin_dashboard::routes(config.admin_dashboard);
    let public = Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/api", get(routes::api_index))
        .merge(operators.public)
        .merge(auth.public)
        .merge(strategies.public)
        .merge(gateway::routes())
        .merge(backtests::live::public_routes())
        .method_not_allowed_fallback(method_not_allowed);
    let protected = Router::new()
        .merge(auth.protected)
        .merge(strategies.protected)
        .merge(operators.protected)
        .merge(backtests::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));

    let request_timeout = config.request_timeout;
    public
        .merge(protected)
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(cors_layer(&config.cors_allowed_origins))
                .layer(middleware::from_fn_with_state(request_timeout, enforce_request_timeout))
                .layer(middleware::from_fn_with_state(state.clone(), api_core::counters::count_responses))
                .layer(DefaultBodyLimit::max(config.max_body_bytes)),
        )
        .with_state(state)
}

/// The span every request's logs sit in. It names the matched route (not the
/// raw path, which carries ids) and never the headers, which carry tokens.
fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("<unmatched>", MatchedPath::as_str);
    let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        user_id = tracing::field::Empty,
    )
}

async fn enforce_request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
        .expose_headers([header::RETRY_AFTER, REQUEST_ID])
        .max_age(Duration::from_secs(3600));
    match origins {
        CorsOrigins::None => CorsLayer::new(),
        CorsOrigins::Any => base.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => {
            let values: Vec<HeaderValue> =
                list.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
            base.allow_origin(values)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
