//! Routes the server owns itself: liveness, readiness and the API index.

use std::time::Duration;

use api_core::{ApiResult, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when every dependency answers, else 503 naming what failed. The
/// causes go to the log, never the body: they can hold connection details.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!("readiness: database timed out");
            "unreachable"
        }
    };
    let redis = match &state.redis {
        None => "not configured",
        Some(redis) => match redis.ping().await {
            Ok(()) => "ok",
            Err(err) => {
                tracing::warn!(error = %err, "readiness: redis unreachable");
                "unreachable"
            }
        },
    };
    let failed: Vec<&str> = [("database", database), ("redis", redis)]
        .into_iter()
        .filter(|(_, status)| *status == "unreachable")
        .map(|(name, _)| name)
        .collect();
    // Backtests are one feature: without the sandbox they are refused (503)
    // and everything else serves, so readiness does not depend on it.
    let checks = json!({ "database": database, "redis": redis, "sandbox": state.sandbox.readiness() });
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks })))
    } else {
        let error = format!("{} unreachable", failed.join(" and "));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": error, "checks": checks, "code": "not_ready" })),
        )
    }
}

/// `GET /api/`: what this server offers. Lists only routes that exist.
pub async fn api_index(State(_state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({
        "message": "AlgoAgent API",
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": api_core::time::iso8601(&chrono::Utc::now()),
        "endpoints": {
            "auth": {
                "register": "/api/auth/register/",
                "login": "/api/auth/login/",
                "token_refresh": "/api/auth/token/refresh/",
                "logout": "/api/auth/logout/",
                "me": "/api/auth/user/me/",
                "change_password": "/api/auth/change-password/",
                "profiles": "/api/auth/profiles/",
                "my_profile": "/api/auth/profiles/me/",
                "update_my_profile": "/api/auth/profiles/update_me/",
                "ai_contexts": "/api/auth/ai-contexts/",
                "chat_sessions": "/api/auth/chat-sessions/",
                "chat": "/api/auth/chat/",
                "health": "/api/auth/health/",
            },
            "strategies": {
                "strategies": "/api/strategies/strategies/",
                "tags": "/api/strategies/tags/",
                "templates": "/api/strategies/templates/",
                "comments": "/api/strategies/comments/",
                "validations": "/api/strategies/validations/",
                "performance": "/api/strategies/performance/",
                "available_indicators": "/api/strategies/strategies/available_indicators/",
                "categories": "/api/strategies/api/categories/",
                "search": "/api/strategies/api/search/",
                "health": "/api/strategies/api/health/",
                "chat": "/api/strategies/chat/",
                "chat_message": "/api/strategies/chat/chat/",
                "validate_strategy_with_ai": "/api/strategies/api/validate_strategy_with_ai/",
                "create_strategy_with_ai": "/api/strategies/api/create_strategy_with_ai/",
                "update_strategy_with_ai": "/api/strategies/api/{id}/update_strategy_with_ai/",
                "generate_code": "/api/strategies/api/generate_code/",
                "generate_executable_code": "/api/strategies/api/generate_executable_code/",
                "generate_with_auto_fix": "/api/strategies/api/generate_with_auto_fix/",
                "fix_errors": "/api/strategies/strategies/{id}/fix_errors/",
            },
            "backtests": {
                "quick_run": "/api/backtests/api/quick_run/",
                "run_backtest": "/api/backtests/api/run_backtest/",
                "runs": "/api/backtests/runs/",
                "live_stream": "/ws/backtest/stream/",
                "live_stream_sse": "/api/backtests/stream/",
                "watch_run": "/api/backtests/runs/{id}/live/",
                "health": "/api/backtests/api/health/",
            },
            "data": {
                "symbols": "/api/data/symbols/",
                "market_data": "/api/data/market-data/",
                "fetch_data": "/api/data/api/fetch_data/",
                "calculate_indicator": "/api/data/api/calculate_indicator/",
                "available_indicators": "/api/data/api/available_indicators/",
                "health": "/api/data/api/health/",
            },
            "health": { "alive": "/healthz", "ready": "/readyz" },
        },
    })))
}
