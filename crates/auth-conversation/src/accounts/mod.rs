//! `/api/auth/`: registration, login, token refresh and logout, the current
//! user, password changes and profiles.

mod handlers;
pub mod password;
mod service;
mod views;

pub use handlers::check_password;
pub use service::{ensure_admin, AdminOutcome};

use api_core::FeatureRoutes;
use axum::routing::{get, post};
use axum::Router;

pub fn routes() -> FeatureRoutes {
    let public = Router::new()
        .route("/api/auth/register", post(handlers::register))
        .route("/api/auth/login", post(handlers::login))
        .route("/api/auth/token/refresh", post(handlers::refresh))
        .route("/api/auth/health", get(handlers::health));
    let protected = Router::new()
        .route("/api/auth/logout", post(handlers::logout))
        .route("/api/auth/user/me", get(handlers::me))
        .route("/api/auth/change-password", post(handlers::change_password))
        .route("/api/auth/profiles", get(handlers::list_profiles))
        .route("/api/auth/profiles/me", get(handlers::my_profile))
        .route(
            "/api/auth/profiles/update_me",
            axum::routing::patch(handlers::update_my_profile).put(handlers::update_my_profile),
        )
        .route(
            "/api/auth/profiles/{id}",
            get(handlers::profile_detail).patch(handlers::update_profile).put(handlers::update_profile),
        );
    FeatureRoutes { public, protected }
}
