//! Who may use the `/admin` pages.
//!
//! - A session is a random token in an `HttpOnly`, `SameSite=Strict` cookie
//!   scoped to `/admin` (`Secure` when the request came over TLS). The
//!   database keeps only its SHA-256, so every replica sees a logout or an
//!   expiry at once, and a leaked table opens no session.
//! - Sessions last [`MAX_LIFETIME`] at most and end after [`IDLE_LIMIT`]
//!   without a page view; the fragments the pages poll do not count as
//!   activity, so a forgotten tab still times out.
//! - Every state-changing request carries the session's CSRF token in its
//!   form, and when the browser sends `Origin` or `Sec-Fetch-Site` they
//!   must say same-origin. The login form, before any session, uses a
//!   double-submit cookie for the same purpose.

use std::time::Duration;

use api_core::{ApiError, ApiResult, AppState};
use axum::http::{header, HeaderMap, HeaderValue};
use chrono::Utc;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "algoagent_admin";
/// The login form's double-submit token.
pub const LOGIN_COOKIE: &str = "algoagent_admin_login";
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
pub const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// A session's last activity is written at most this often: a page view a
/// minute is plenty to measure half an hour of idleness.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub user_id: i64,
    pub username: String,
    pub csrf: String,
    /// Whether the user still has the admin role.
    pub is_admin: bool,
    token_hash: String,
}

/// A fresh random token: 32 bytes, hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    api_core::bytes::hex(&bytes)
}

fn hash(token: &str) -> String {
    api_core::bytes::hex(&Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the request reached us over TLS: a trusted proxy says so in
/// `X-Forwarded-Proto` (the server itself speaks plain HTTP).
pub fn over_tls(state: &AppState, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
    state.trusted_proxies.trusts(peer)
        && headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` for `/admin`; `max_age` zero deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}", max_age.as_secs());
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Path=/admin; Max-Age=0"))
}

/// Starts a session for `user_id`; returns the cookie's token.
pub async fn start(state: &AppState, user_id: i64) -> ApiResult<String> {
    let token = random_token();
    let now = Utc::now();
    let lifetime = chrono::Duration::from_std(MAX_LIFETIME).unwrap_or(chrono::Duration::hours(12));
    state.store.create_admin_session(&hash(&token), user_id, &random_token(), now, now + lifetime).await?;
    Ok(token)
}

pub async fn end(state: &AppState, session: &AdminSession) -> ApiResult<()> {
    state.store.delete_admin_session(&session.token_hash).await?;
    Ok(())
}

/// The session the request's cookie names, if it is live. A page view
/// (`activity`) keeps it from going idle; a poll does not.
pub async fn current(state: &AppState, headers: &HeaderMap, activity: bool) -> ApiResult<Option<AdminSession>> {
    let Some(token) = cookie(headers, COOKIE).filter(|token| !token.is_empty()) else {
        return Ok(None);
    };
    let token_hash = hash(token);
    let now = Utc::now();
    let Some(row) = state.store.admin_session(&token_hash, now).await? else {
        return Ok(None);
    };
    let idle = chrono::Duration::from_std(IDLE_LIMIT).unwrap_or(chrono::Duration::minutes(30));
    if row.last_seen_at + idle <= now || !row.is_active {
        state.store.delete_admin_session(&token_hash).await?;
        return Ok(None);
    }
    if activity && now - row.last_seen_at >= TOUCH_EVERY {
        state.store.touch_admin_session(&token_hash, now).await?;
    }
    Ok(Some(AdminSession {
        user_id: row.user_id,
        username: row.username,
        csrf: row.csrf_token,
        is_admin: row.role == store::accounts::ROLE_ADMIN,
        token_hash,
    }))
}

/// Refuses a state-changing request from another origin: `Sec-Fetch-Site`
/// must be `same-origin` when sent, and `Origin` must name this host.
pub fn same_origin(headers: &HeaderMap) -> ApiResult<()> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(ApiError::Forbidden);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).ok_or(ApiError::Forbidden)?;
        let origin = origin.to_str().map_err(|_| ApiError::Forbidden)?;
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).ok_or(ApiError::Forbidden)?;
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(ApiError::Forbidden);
        }
    }
    Ok(())
}

/// A POST's checks: same origin, and the form's CSRF token is `expected`.
pub fn check_post(headers: &HeaderMap, presented: Option<&str>, expected: &str) -> ApiResult<()> {
    same_origin(headers)?;
    match presented {
        Some(presented)
            if !expected.is_empty() && api_core::bytes::same_secret(presented.as_bytes(), expected.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; algoagent_admin_login=x"), ("cookie", "algoagent_admin=tok")]);
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("x"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let ok = headers(&[("host", "127.0.0.1:8000"), ("origin", "http://127.0.0.1:8000")]);
        assert!(check_post(&ok, Some("t"), "t").is_ok());
        assert!(check_post(&headers(&[]), Some("t"), "t").is_ok(), "headers absent: the token decides");
        assert!(check_post(&ok, None, "t").is_err(), "no token");
        assert!(check_post(&ok, Some("u"), "t").is_err(), "wrong token");
        let other = headers(&[("host", "127.0.0.1:8000"), ("origin", "http://evil.example")]);
        assert!(check_post(&other, Some("t"), "t").is_err());
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check_post(&cross, Some("t"), "t").is_err());
    }
}
