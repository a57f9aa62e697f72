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
    /// The token was live: it is revoked and its successor recorded.
    Rotated,
    /// The token, or its session, had already been revoked: a replay. The
    /// whole session is now revoked.
    Replayed,
    /// No such token for this user.
    Unknown,
}

/// Records a refresh token inside a transaction of either dialect.
macro_rules! insert_refresh_token {
    ($tx:expr, $family_id:expr, $user_id:expr, $token:expr) => {
        sqlx::query(
            "INSERT INTO refresh_tokens (jti, family_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($token.jti)
        .bind($family_id)
        .bind($user_id)
        .bind($token.issued_at)
        .bind($token.expires_at)
        .execute($tx)
    };
}

/// Revokes a session's family row and every refresh token in it; the
/// number of tokens revoked.
macro_rules! revoke_family {
    ($tx:expr, $family_id:expr, $user_id:expr, $now:expr) => {
        async {
            sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE family_id = $2 AND user_id = $3 AND revoked_at IS NULL")
                .bind($now)
                .bind($family_id)
                .bind($user_id)
                .execute(&mut *$tx)
                .await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND user_id = $3 AND revoked_at IS NULL")
                .bind($now)
                .bind($family_id)
                .bind($user_id)
                .execute(&mut *$tx)
                .await
                .map(|done| done.rows_affected())
        }
    };
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

    /// Starts a session (a refresh-token family) with its first token.
    pub async fn start_session(
        &self,
        family_id: &str,
        user_id: i64,
        first: &RefreshTokenRecord<'_>,
    ) -> StoreResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO token_families (family_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(family_id)
            .bind(user_id)
            .bind(first.issued_at)
            .bind(first.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_refresh_token!(&mut *tx, family_id, user_id, first).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// The session a refresh token belongs to.
    pub async fn refresh_token_family(&self, jti: &str, user_id: i64) -> StoreResult<Option<String>> {
        let family: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT family_id FROM refresh_tokens WHERE jti = $1 AND user_id = $2",
        )
        .bind(jti)
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(family.map(|(family,)| family))
    }

    /// Revokes a live refresh token and records its successor in the same
    /// session, in one transaction: a failure leaves the old token live.
    ///
    /// The revoke is a conditional UPDATE, so two concurrent presentations of
    /// one token cannot both rotate it: the loser sees a replay, and a replay
    /// revokes the whole session.
    pub async fn rotate_refresh_token(
        &self,
        jti: &str,
        user_id: i64,
        family_id: &str,
        successor: &RefreshTokenRecord<'_>,
    ) -> StoreResult<RefreshRotation> {
        let now = Utc::now();
        let rotation = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let live: Option<(String,)> = sqlx::query_as(
                "UPDATE refresh_tokens SET revoked_at = $1 \
                 WHERE jti = $2 AND user_id = $3 AND family_id = $4 AND revoked_at IS NULL \
                 AND family_id IN (SELECT family_id FROM token_families WHERE revoked_at IS NULL) \
                 RETURNING family_id",
            )
            .bind(now)
            .bind(jti)
            .bind(user_id)
            .bind(family_id)
            .fetch_optional(&mut *tx)
            .await?;
            let rotation = if live.is_some() {
                insert_refresh_token!(&mut *tx, family_id, user_id, successor).await?;
                sqlx::query("UPDATE token_families SET expires_at = $1 WHERE family_id = $2")
                    .bind(successor.expires_at)
                    .bind(family_id)
                    .execute(&mut *tx)
                    .await?;
                RefreshRotation::Rotated
            } else {
                let known: Option<(String,)> =
                    sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE jti = $1 AND user_id = $2")
                        .bind(jti)
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if known.is_some() {
                    revoke_family!(tx, family_id, user_id, now).await?;
                    RefreshRotation::Replayed
                } else {
                    RefreshRotation::Unknown
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(rotation)
        })?;
        Ok(rotation)
    }

    /// Ends one session of the user: its refresh tokens and, through the
    /// family check, its access tokens. Returns whether it was live.
    pub async fn revoke_session(&self, family_id: &str, user_id: i64) -> StoreResult<bool> {
        let now = Utc::now();
        let revoked = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let live: Option<(String,)> = sqlx::query_as(
                "SELECT family_id FROM token_families WHERE family_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(family_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            revoke_family!(tx, family_id, user_id, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(live.is_some())
        })?;
        Ok(revoked)
    }

    /// Ends every session of the user (a password change, a promotion).
    pub async fn revoke_all_sessions(&self, user_id: i64) -> StoreResult<u64> {
        let now = Utc::now();
        let revoked = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done.rows_affected())
        })?;
        Ok(revoked)
    }

    /// Whether an access token of `family_id` may act as `user_id`: the
    /// session is the user's, live, and the user is active.
    pub async fn session_is_live(&self, family_id: &str, user_id: i64) -> StoreResult<bool> {
        let live: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT u.id FROM token_families f JOIN users u ON u.id = f.user_id \
             WHERE f.family_id = $1 AND f.user_id = $2 AND f.revoked_at IS NULL AND u.is_active",
        )
        .bind(family_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(live.is_some())
    }

    /// Deletes sessions and refresh tokens past their expiry; no token can
    /// name them any more. Returns the refresh tokens removed.
    pub async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let removed = on_pool!(self, pool => {
            let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now).execute(pool).await?;
            sqlx::query("DELETE FROM token_families WHERE expires_at < $1").bind(now).execute(pool).await?;
            Ok::<_, sqlx::Error>(tokens.rows_affected())
        })?;
        Ok(removed)
    }
}

/// A refresh token to record.
pub struct RefreshTokenRecord<'a> {
    pub jti: &'a str,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}
