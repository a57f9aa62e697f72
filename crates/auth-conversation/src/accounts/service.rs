//! Account rules shared by the handlers and the `create-admin` command.

use api_core::jwt::TokenKind;
use api_core::{ApiError, AppState, FieldErrors};
use chrono::{DateTime, Utc};
use store::accounts::{NewUser, ProfileFields, RefreshTokenRecord, ROLE_ADMIN};
use store::{Store, StoreError};

use super::password::{self, UserAttributes};
use super::views::TokenPair;

pub const USERNAME_MAX_CHARS: usize = 150;
pub const EMAIL_MAX_CHARS: usize = 254;
pub const NAME_MAX_CHARS: usize = 150;
pub const TIMEFRAME_MAX_CHARS: usize = 10;
pub const TEXT_FIELD_MAX_CHARS: usize = 10_000;
pub const RISK_TOLERANCES: [&str; 3] = ["conservative", "moderate", "aggressive"];
pub const USERNAME_TAKEN: &str = "A user with that username already exists.";

pub fn username_problem(username: &str) -> Option<String> {
    if username.is_empty() {
        return Some("This field may not be blank.".into());
    }
    if username.chars().count() > USERNAME_MAX_CHARS {
        return Some(format!("Ensure this field has no more than {USERNAME_MAX_CHARS} characters."));
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '+' | '-');
    if !username.chars().all(allowed) {
        return Some(
            "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.".into(),
        );
    }
    None
}

pub fn email_problem(email: &str) -> Option<String> {
    if email.is_empty() {
        return Some("This field may not be blank.".into());
    }
    let valid = email.chars().count() <= EMAIL_MAX_CHARS
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    (!valid).then(|| "Enter a valid email address.".into())
}

/// A session's next pair of tokens, not yet recorded.
pub struct IssuedPair {
    pub tokens: TokenPair,
    refresh_jti: String,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl IssuedPair {
    pub fn record(&self) -> RefreshTokenRecord<'_> {
        RefreshTokenRecord { jti: &self.refresh_jti, issued_at: self.issued_at, expires_at: self.expires_at }
    }
}

/// Signs an access token and a refresh token of session `family`.
pub fn issue_pair(state: &AppState, user_id: i64, family: &str) -> Result<IssuedPair, ApiError> {
    let access = state.jwt.issue(user_id, TokenKind::Access, family).map_err(ApiError::internal)?;
    let refresh = state.jwt.issue(user_id, TokenKind::Refresh, family).map_err(ApiError::internal)?;
    Ok(IssuedPair {
        issued_at: timestamp(refresh.claims.iat),
        expires_at: timestamp(refresh.claims.exp),
        refresh_jti: refresh.claims.jti,
        tokens: TokenPair { refresh: refresh.token, access: access.token },
    })
}

/// Starts a new session (a login or a registration) and returns its tokens.
pub async fn start_session(state: &AppState, user_id: i64) -> Result<TokenPair, ApiError> {
    let family = uuid::Uuid::new_v4().simple().to_string();
    let pair = issue_pair(state, user_id, &family)?;
    state.store.start_session(&family, user_id, &pair.record()).await?;
    Ok(pair.tokens)
}

fn timestamp(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_else(Utc::now)
}

/// Validates a profile's writable fields as a whole.
pub fn validate_profile(fields: &ProfileFields) -> Result<(), ApiError> {
    let mut errors = FieldErrors::new();
    if !RISK_TOLERANCES.contains(&fields.default_risk_tolerance.as_str()) {
        errors.add("default_risk_tolerance", format!("\"{}\" is not a valid choice.", fields.default_risk_tolerance));
    }
    if fields.default_timeframe.trim().is_empty() {
        errors.add("default_timeframe", "This field may not be blank.");
    }
    errors.check_length("default_timeframe", &fields.default_timeframe, TIMEFRAME_MAX_CHARS);
    errors.check_length("trading_goals", &fields.trading_goals, TEXT_FIELD_MAX_CHARS);
    errors.check_length("strategy_preferences", &fields.strategy_preferences, TEXT_FIELD_MAX_CHARS);
    if fields.preferred_symbols.len() > 500 || fields.preferred_symbols.iter().any(|s| s.chars().count() > 32) {
        errors.add("preferred_symbols", "Give at most 500 symbols of at most 32 characters each.");
    }
    if !fields.risk_parameters.is_object() {
        errors.add("risk_parameters", "Expected a JSON object.");
    }
    errors.into_result()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Created,
    Promoted,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid username: {0}")]
    Username(String),
    #[error("password rejected: {}", .0.join(" "))]
    Password(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] anyhow::Error),
}

/// Gives `username` the admin role with `password`, creating the account if
/// it does not exist yet. The password must pass the same rules as at
/// registration.
pub async fn ensure_admin(store: &Store, username: &str, password: &str) -> Result<AdminOutcome, AdminError> {
    if let Some(problem) = username_problem(username) {
        return Err(AdminError::Username(problem));
    }
    let problems =
        password::password_problems(password, &UserAttributes { username, first_name: "", last_name: "", email: "" });
    if !problems.is_empty() {
        return Err(AdminError::Password(problems));
    }
    let hash = password::hash_password(password.to_string(), api_core::HashingPermit::unbounded()).await?;
    if let Some(user) = store.user_by_username(username).await? {
        store.set_password_hash(user.id, &hash).await?;
        store.set_role(user.id, ROLE_ADMIN).await?;
        store.revoke_all_sessions(user.id).await?;
        return Ok(AdminOutcome::Promoted);
    }
    let created = store
        .create_user(&NewUser {
            username,
            email: "",
            first_name: "",
            last_name: "",
            password_hash: &hash,
            role: ROLE_ADMIN,
        })
        .await;
    match created {
        Ok(_) => Ok(AdminOutcome::Created),
        // Created concurrently between our lookup and insert: promote it.
        Err(StoreError::UniqueViolation) => Box::pin(ensure_admin(store, username, password)).await,
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_djangos_character_set() {
        assert_eq!(username_problem("trader.joe+1@x_y-z"), None);
        assert_eq!(username_problem("zoë"), None);
        assert!(username_problem("two words").is_some());
        assert!(username_problem("semi;colon").is_some());
        assert!(username_problem("").is_some());
        assert!(username_problem(&"a".repeat(151)).is_some());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(email_problem("a@b.co"), None);
        for bad in ["", "plain", "@b.co", "a@b", "a@.b.co", "a@b..co", "a b@c.co", "a@b@c.co"] {
            assert!(email_problem(bad).is_some(), "{bad} should be refused");
        }
    }
}
