//! The key pool and its admission limits.
//!
//! This crate owns every conversation with Redis: request admission is only
//! exact across replicas when one place decides it.

pub mod activity;
pub mod clock;
pub mod config;
pub mod events;
pub mod fair_use;
pub mod limiter;
pub mod outcome;
pub mod pacific;
pub mod pool;
pub mod redis_conn;
pub mod replicas;
pub mod secrets;
pub mod throttle;
