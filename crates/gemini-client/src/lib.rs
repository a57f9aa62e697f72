//! The Gemini REST client and the classification of its outcomes.

pub mod chat;
pub mod classify;
pub mod client;
pub mod executor;
pub mod probe;

pub use chat::{ChatRequest, ChatResponse, GenerationConfig, Message, Role};
pub use classify::GeminiError;
pub use client::{GeminiClient, GeminiStream, DEFAULT_BASE_URL, DEFAULT_VERSION};
pub use executor::{CallSpec, Completed, ExecError, ExecStream, Executor, ExecutorMetrics, ExecutorSettings};
pub use probe::ModelProbe;
