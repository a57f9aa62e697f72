//! HTTP tests of the whole server. Each test spawns the real application on
//! 127.0.0.1:0 against a fresh database: a SQLite file by default, or a new
//! Postgres database when TEST_DATABASE_URL is set (and Redis from
//! TEST_REDIS_URL), so the suite runs once per backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod admin_api;
mod admin_pages;
mod alerts;
mod aws_secrets;
mod azure_secrets;
mod backtests;
mod bounds;
mod chat;
mod chat_stream;
mod cli;
mod code_generation;
mod contexts;
mod dashboard_browser;
mod demo;
mod detached_work;
mod gateway;
mod helpers;
mod hostile_code;
mod http;
mod import_django;
mod live_stream;
mod market_data;
mod metrics;
mod ownership;
mod production;
mod profiles;
mod replicas;
mod sessions;
mod strategies;
mod strategy_actions;
mod strategy_chat;
mod strategy_validation;
mod throttling;
mod vault;
