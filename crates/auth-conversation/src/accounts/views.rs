//! The JSON shapes of API_COMPAT.md.

use serde::Serialize;
use serde_json::Value;
use store::accounts::{ProfileRow, UserRow};

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl From<&UserRow> for UserView {
    fn from(user: &UserRow) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserDetailView {
    #[serde(flatten)]
    pub user: UserView,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub date_joined: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub refresh: String,
    pub access: String,
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub user: UserView,
    pub tokens: TokenPair,
    pub message: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ProfileView {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub default_risk_tolerance: String,
    pub default_timeframe: String,
    pub preferred_symbols: Vec<String>,
    pub trading_goals: String,
    pub strategy_preferences: String,
    pub risk_parameters: Value,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub last_active: chrono::DateTime<chrono::Utc>,
}

impl From<ProfileRow> for ProfileView {
    fn from(row: ProfileRow) -> Self {
        Self {
            id: row.id,
            username: row.username,
            email: row.email,
            default_risk_tolerance: row.default_risk_tolerance,
            default_timeframe: row.default_timeframe,
            preferred_symbols: row.preferred_symbols.0,
            trading_goals: row.trading_goals,
            strategy_preferences: row.strategy_preferences,
            risk_parameters: row.risk_parameters.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_active: row.last_active,
        }
    }
}
