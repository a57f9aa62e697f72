//! Users, their profiles and their refresh tokens.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";

/// A user row. Deliberately not `Debug`: it carries the password hash.
#[derive(Clone, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: String,
    pub role: String,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

impl UserRow {
    pub fn is_admin(&self) -> bool {
        self.role == ROLE_ADMIN
    }
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
}

/// A profile joined with its owner's read-only identity fields.
#[derive(Debug, Clone, FromRow)]
pub struct ProfileRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub email: String,
    pub default_risk_tolerance: String,
    pub default_timeframe: String,
    pub preferred_symbols: Json<Vec<String>>,
    pub trading_goals: String,
    pub strategy_preferences: String,
    pub risk_parameters: Json<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_active: DateTime<Utc>,
}

/// The writable fields of a profile, applied as a whole.
#[derive(Debug, Clone)]
pub struct ProfileFields {
    pub default_risk_tolerance: String,
    pub default_timeframe: String,
    pub preferred_symbols: Vec<String>,
    pub trading_goals: String,
    pub strategy_preferences: String,
    pub risk_parameters: Value,
}

impl From<&ProfileRow> for ProfileFields {
    fn from(row: &ProfileRow) -> Self {
        Self {
            default_risk_tolerance: row.default_risk_tolerance.clone(),
            default_timeframe: row.default_timeframe.clone(),
            preferred_symbols: row.preferred_symbols.0.clone(),
            trading_goals: row.trading_goals.clone(),
            strategy_preferences: row.strategy_preferences.clone(),
            risk_parameters: row.risk_parameters.0.clone(),
        }
    }
}

/// What presenting a refresh token for rotation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    /// The token was live and is now revoked; issue its successor in `family_id`.
    Rotated { family_id: String },
    /// The token had already been revoked: a replay. Its family is now revoked.
    Replayed,
    /// No such token for this user.
    Unknown,
}

const PROFILE_SELECT: &str = "SELECT p.id, p.user_id, u.username, u.email, p.default_risk_tolerance, \
     p.default_timeframe, p.preferred_symbols, p.trading_goals, p.strategy_preferences, \
     p.risk_parameters, p.created_at, p.updated_at, p.last_active \
     FROM user_profiles p JOIN users u ON u.id = p.user_id";

impl Store {
    /// Creates a user and their default profile in one transaction.
    /// A taken username surfaces as [`crate::StoreError::UniqueViolation`].
    pub async fn create_user(&self, new: &NewUser<'_>) -> StoreResult<UserRow> {
        let now = Utc::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let user: UserRow = sqlx::query_as(
                "INSERT INTO users (username, email, first_name, last_name, password_hash, role, is_active, date_joined) \
                 VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING *",
            )
            .bind(new.username)
            .bind(new.email)
            .bind(new.first_name)
            .bind(new.last_name)
            .bind(new.password_hash)
            .bind(new.role)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO user_profiles (user_id, created_at, updated_at, last_active) VALUES ($1, $2, $2, $2)",
            )
            .bind(user.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    pub async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let row = on_pool!(self, pool => sqlx::query_as("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRow>> {
        let row = on_pool!(self, pool => sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn set_role(&self, user_id: i64, role: &str) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role)
            .bind(user_id)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn record_login(&self, user_id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE users SET last_login = $1 WHERE id = $2")
                .bind(at)
                .bind(user_id)
                .execute(pool)
                .await?;
            sqlx::query("UPDATE user_profiles SET last_active = $1 WHERE user_id = $2")
                .bind(at)
                .bind(user_id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    pub async fn profile_of_user(&self, user_id: i64) -> StoreResult<Option<ProfileRow>> {
        let sql = format!("{PROFILE_SELECT} WHERE p.user_id = $1");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// A profile by id, visible only to its owner.
    pub async fn profile_by_id(&self, id: i64, owner_id: i64) -> StoreResult<Option<ProfileRow>> {
        let sql = format!("{PROFILE_SELECT} WHERE p.id = $1 AND p.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the profiles `owner_id` may see, with the total count.
    pub async fn profiles_page(&self, owner_id: i64, limit: i64, offset: i64) -> StoreResult<(i64, Vec<ProfileRow>)> {
        let sql = format!("{PROFILE_SELECT} WHERE p.user_id = $1 ORDER BY p.id LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM user_profiles WHERE user_id = $1", &sql, owner_id, limit, offset).await
    }

    /// Overwrites the writable fields of the owner's profile `id`.
    /// Returns `None` when the profile is not the owner's.
    pub async fn update_profile(
        &self,
        id: i64,
        owner_id: i64,
        fields: &ProfileFields,
    ) -> StoreResult<Option<ProfileRow>> {
        let now = Utc::now();
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE user_profiles SET default_risk_tolerance = $1, default_timeframe = $2, \
             preferred_symbols = $3, trading_goals = $4, strategy_preferences = $5, \
             risk_parameters = $6, updated_at = $7, last_active = $7 \
             WHERE id = $8 AND user_id = $9",
        )
        .bind(&fields.default_risk_tolerance)
        .bind(&fields.default_timeframe)
        .bind(Json(&fields.preferred_symbols))
        .bind(&fields.trading_goals)
        .bind(&fields.strategy_preferences)
        .bind(Json(&fields.risk_parameters))
        .bind(now)
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.profile_by_id(id, owner_id).await
    }

    pub async fn insert_refresh_token(
        &self,
        jti: &str,
        family_id: &str,
        user_id: i64,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO refresh_tokens (jti, family_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(jti)
        .bind(family_id)
        .bind(user_id)
        .bind(issued_at)
        .bind(expires_at)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Revokes a live refresh token so that its successor can be issued.
    ///
    /// The revoke is a conditional UPDATE, so two concurrent presentations of
    /// one token cannot both rotate it: the loser sees a replay, and a replay
    /// revokes the whole family.
    pub async fn rotate_refresh_token(&self, jti: &str, user_id: i64) -> StoreResult<RefreshRotation> {
        let now = Utc::now();
        let rotation = on_pool!(self, pool => {
            let live: Option<(String,)> = sqlx::query_as(
                "UPDATE refresh_tokens SET revoked_at = $1 \
                 WHERE jti = $2 AND user_id = $3 AND revoked_at IS NULL RETURNING family_id",
            )
            .bind(now)
            .bind(jti)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            if let Some((family_id,)) = live {
                Ok::<_, sqlx::Error>(RefreshRotation::Rotated { family_id })
            } else {
                let known: Option<(String,)> =
                    sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE jti = $1 AND user_id = $2")
                        .bind(jti)
                        .bind(user_id)
                        .fetch_optional(pool)
                        .await?;
                match known {
                    Some((family_id,)) => {
                        sqlx::query(
                            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
                        )
                        .bind(now)
                        .bind(&family_id)
                        .execute(pool)
                        .await?;
                        Ok(RefreshRotation::Replayed)
                    }
                    None => Ok(RefreshRotation::Unknown),
                }
            }
        })?;
        Ok(rotation)
    }

    /// Revokes one of the user's refresh tokens. Returns whether it was live.
    pub async fn revoke_refresh_token(&self, jti: &str, user_id: i64) -> StoreResult<bool> {
        let now = Utc::now();
        let result = on_pool!(self, pool => sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE jti = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(jti)
        .bind(user_id)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(result > 0)
    }

    pub async fn revoke_all_refresh_tokens(&self, user_id: i64) -> StoreResult<u64> {
        let now = Utc::now();
        let result = on_pool!(self, pool => sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(result)
    }
}
