//! Accounts and conversations: registration, login, JWT sessions, profiles.

pub mod accounts;

use api_core::FeatureRoutes;

/// This crate's routes, split into the public and the authenticated.
pub fn routes() -> FeatureRoutes {
    accounts::routes()
}
