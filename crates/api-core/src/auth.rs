//! The authentication gate. Every route a feature crate registers as
//! protected passes through [`require_auth`]; handlers then take [`AuthUser`].

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::jwt::TokenKind;
use crate::state::AppState;

/// The caller, as proven by a valid access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: i64,
}

impl AuthUser {
    /// Whether the caller is an administrator (read from the database, so a
    /// demotion holds at once).
    pub async fn is_admin(&self, state: &AppState) -> Result<bool, ApiError> {
        Ok(state.store.user_by_id(self.user_id).await?.is_some_and(|row| row.is_admin()))
    }

    /// A 403 unless the caller is an administrator.
    pub async fn require_admin(&self, state: &AppState) -> Result<(), ApiError> {
        if self.is_admin(state).await? {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The session an access token belongs to, for the handlers that end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub family: String,
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(AuthUser, Session), ApiError> {
    let token = bearer_token(headers).ok_or(ApiError::NotAuthenticated)?;
    verify_access(state, token).await
}

/// The caller an access token proves, for connections that carry it
/// elsewhere than in a header (a WebSocket's first message).
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    Ok(verify_access(state, token.trim()).await?.0)
}

async fn verify_access(state: &AppState, token: &str) -> Result<(AuthUser, Session), ApiError> {
    let claims = state.jwt.verify(token, TokenKind::Access).map_err(|_| ApiError::TokenNotValid)?;
    let family = claims.fam.ok_or(ApiError::TokenNotValid)?;
    if !state.sessions.is_live(&state.store, &family, claims.user_id).await? {
        return Err(ApiError::TokenNotValid);
    }
    Ok((AuthUser { user_id: claims.user_id }, Session { family }))
}

/// Middleware: refuses the request unless it carries a valid access token.
pub async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (user, session) = authenticate(&state, request.headers()).await?;
    tracing::Span::current().record("user_id", user.user_id);
    request.extensions_mut().insert(user);
    request.extensions_mut().insert(session);
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Present only behind `require_auth`; a handler that asks for it on a
        // public route is refused rather than silently anonymous.
        parts.extensions.get::<AuthUser>().copied().ok_or(ApiError::NotAuthenticated)
    }
}

/// The caller if a valid access token was sent, for public routes that say
/// who is asking without requiring it.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuthUser(authenticate(state, &parts.headers).await.ok().map(|(user, _)| user)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or(ApiError::NotAuthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer_token(&headers), None);
    }
}
