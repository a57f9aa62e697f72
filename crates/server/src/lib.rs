//! The `algoagent` server: configuration, state, router composition and the
//! command-line entry points. `main.rs` stays thin; everything testable is here.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod import_django;
pub mod keys;
pub mod maintenance;
pub mod reload;
mod routes;
mod secrets;
pub mod telemetry;

pub use app::{router, App};
pub use config::{Config, ConfigFile, ConfigSources};
