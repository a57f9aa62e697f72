//! Read-only helpers: `api/health/`, `api/categories/` and
//! `strategies/available_indicators/`.

use api_core::{ApiResult, AppState, AuthUser};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/api/health", get(health))
        .route("/api/strategies/api/categories", get(categories))
        .route("/api/strategies/strategies/available_indicators", get(available_indicators))
}

/// The service and its AI capacity: how many keys could take a call now.
/// Key ids and secrets stay on the admin dashboard.
async fn health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let (configured, available, ai) = match state.pool.availability().await {
        Ok(pool) => (pool.configured, pool.available, if pool.available > 0 { "available" } else { "unavailable" }),
        Err(_) => (0, 0, "unknown"),
    };
    Ok(Json(json!({
        "status": "healthy",
        "service": "strategy_api",
        "validator": "rule-based",
        "ai": { "status": ai, "keys_configured": configured, "keys_available": available },
        "timestamp": api_core::time::iso8601(&chrono::Utc::now()),
    })))
}

/// The distinct categories of the templates the caller can see.
async fn categories(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let categories = state.store.template_categories(user.user_id).await?;
    Ok(Json(json!({ "categories": categories, "count": categories.len() })))
}

/// The indicators the executable canonical JSON may name (its schema's
/// `indicator.type`), with their parameters and defaults.
async fn available_indicators() -> Json<Value> {
    Json(json!({
        "indicators": [
            { "name": "ema", "label": "Exponential moving average", "parameters": { "period": 20 } },
            { "name": "sma", "label": "Simple moving average", "parameters": { "period": 20 } },
            { "name": "rsi", "label": "Relative strength index", "parameters": { "period": 14 } },
            { "name": "macd", "label": "MACD", "parameters": { "fast": 12, "slow": 26, "signal": 9 } },
            { "name": "bollinger_bands", "label": "Bollinger bands", "parameters": { "period": 20, "std_dev": 2.0 } },
            { "name": "atr", "label": "Average true range", "parameters": { "period": 14 } },
            { "name": "stochastic", "label": "Stochastic oscillator", "parameters": { "period": 14, "signal": 3 } },
        ]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listed_indicator_is_one_the_executable_schema_accepts() {
        let listed = available_indicators().await.0;
        let schema: Value = serde_json::from_str(crate::canonical::EXECUTABLE_SCHEMA).unwrap();
        let allowed = schema["definitions"]["indicator"]["properties"]["type"]["enum"].as_array().unwrap().clone();
        for indicator in listed["indicators"].as_array().unwrap() {
            assert!(allowed.contains(&indicator["name"]), "{indicator}");
            let mut instance = indicator["parameters"].clone();
            instance["type"] = indicator["name"].clone();
            let executable = json!({
                "strategy_name": "x",
                "entry_rules": [{ "type": "crossover", "indicator1": "a", "indicator2": "b" }],
                "exit_rules": [{ "type": "crossunder", "indicator1": "a", "indicator2": "b" }],
                "indicators": { "a": instance },
            });
            assert_eq!(crate::canonical::check(crate::canonical::Schema::Executable, "c", &executable), Ok(()));
        }
    }
}
