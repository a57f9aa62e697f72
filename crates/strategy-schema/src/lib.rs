//! The two canonical strategy forms: their JSON Schemas and checks, the
//! one normalisation of the executable form, and its translation to
//! backtesting.py code. Strategies (code generation) and backtests
//! (`quick_run`) both take canonical JSON, so it lives below both.

mod schema;
mod translate;

pub use schema::{check, form_of, normalize_executable, Schema, CANONICAL_SCHEMA, EXECUTABLE_SCHEMA};
pub use translate::{python_class_name, to_python};
