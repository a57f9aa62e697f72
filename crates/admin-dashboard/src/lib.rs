//! The operators' surface:
//! - the dashboard under `/admin` ([`pages`]): overview, keys, buckets,
//!   history and users, with actions, for admins signed in with a cookie
//!   session ([`session`]);
//! - the same data and actions as JSON under `/api/admin/` ([`api`]), for
//!   an admin's JWT;
//! - `GET /metrics`, the Prometheus exposition (OpenMetrics text);
//! - the alert webhook ([`alerts`]).
//!
//! What they read and do lives once, in [`operations`].
//!
//! Two kinds of series:
//! - pool-wide gauges, read from the shared state at each scrape, are the
//!   same on every replica (alert on them with `max`): each key's state,
//!   each bucket's use, the warning threshold;
//! - counters and histograms are this replica's own (`sum` them): upstream
//!   outcomes, admissions, 429s answered, admission waits, upstream latency.
//!
//! Labels are bounded (key ids, projects and models come from keys.json;
//! outcomes, states and limits are closed sets) and never carry a secret.
//! Something unknown is left out, never given a placeholder value.
//!
//! Access to `/metrics`: a bearer `METRICS_TOKEN` when set; without one,
//! loopback only.

pub mod alerts;
mod api;
mod exposition;
pub mod operations;
mod pages;
pub mod session;

use std::net::{IpAddr, SocketAddr};

use api_core::{ApiError, AppState, FeatureRoutes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;

/// The operators' routes. `dashboard` (`ADMIN_DASHBOARD`) serves the
/// `/admin` pages; `/api/admin/` and `/metrics` are always there, each
/// behind its own gate.
pub fn routes(dashboard: bool) -> FeatureRoutes {
    let mut public = Router::new().route("/metrics", get(metrics));
    if dashboard {
        public = public.merge(pages::routes());
    }
    FeatureRoutes { public, protected: api::routes() }
}

async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = state.metrics_token.as_ref().map(|token| token.expose_secret().as_bytes());
    admit(token, peer.ip(), &headers)?;
    let body = exposition::render(&state).await;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// With a token, the request must carry it as a bearer token; without,
/// only a client on this machine may read.
fn admit(token: Option<&[u8]>, peer: IpAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        let loopback = match peer {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        };
        return if loopback { Ok(()) } else { Err(ApiError::Forbidden) };
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, presented)| presented.trim().as_bytes())
        .ok_or(ApiError::NotAuthenticated)?;
    if api_core::bytes::same_secret(presented, token) {
        Ok(())
    } else {
        Err(ApiError::TokenNotValid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        headers
    }

    #[test]
    fn without_a_token_only_loopback_may_read() {
        let none = HeaderMap::new();
        assert!(admit(None, "127.0.0.1".parse().unwrap(), &none).is_ok());
        assert!(admit(None, "::1".parse().unwrap(), &none).is_ok());
        assert!(admit(None, "::ffff:127.0.0.1".parse().unwrap(), &none).is_ok());
        let refused = admit(None, "203.0.113.9".parse().unwrap(), &none).unwrap_err();
        assert_eq!(refused.status_code(), axum::http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_a_token_every_client_must_bring_it() {
        let token = Some(b"scrape-token-1234".as_slice());
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(admit(token, remote, &bearer("scrape-token-1234")).is_ok());
        let wrong = admit(token, remote, &bearer("scrape-token-1235")).unwrap_err();
        assert_eq!(wrong.status_code(), axum::http::StatusCode::UNAUTHORIZED);
        let missing = admit(token, "127.0.0.1".parse().unwrap(), &HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status_code(), axum::http::StatusCode::UNAUTHORIZED, "loopback needs it too");
    }
}
