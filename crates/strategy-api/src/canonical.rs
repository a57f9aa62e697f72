//! The two canonical strategy forms and their JSON Schemas (draft-07),
//! shipped in `schemas/`:
//! - the canonical strategy the validator builds from a text (steps, kind,
//!   risk, confidence);
//! - the executable canonical strategy code generation takes (rules over
//!   named indicators, risk management, timeframe).
//!
//! Both are checked against their schema wherever they enter or leave, and
//! a mismatch names the field by its path.

use std::sync::LazyLock;

use api_core::FieldErrors;
use jsonschema::Validator;
use serde_json::{json, Value};

use crate::validator::{step_kind, Analysis};

pub const CANONICAL_SCHEMA: &str = include_str!("../../../schemas/canonical_strategy.schema.json");
pub const EXECUTABLE_SCHEMA: &str = include_str!("../../../schemas/executable_strategy.schema.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Canonical,
    Executable,
}

fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
    jsonschema::draft7::new(&schema).map_err(|err| err.to_string())
}

static CANONICAL: LazyLock<Result<Validator, String>> = LazyLock::new(|| compile(CANONICAL_SCHEMA));
static EXECUTABLE: LazyLock<Result<Validator, String>> = LazyLock::new(|| compile(EXECUTABLE_SCHEMA));

/// `/steps/0/kind` → `steps[0].kind`, under `field`.
fn field_path(field: &str, pointer: &str) -> String {
    let mut path = field.to_string();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        if segment.chars().all(|c| c.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    path
}

/// Checks `value` against `schema`; the errors are keyed by the path of the
/// offending field under `field` (e.g. `canonical_json.entry_rules[0].type`).
pub fn check(schema: Schema, field: &str, value: &Value) -> Result<(), FieldErrors> {
    let compiled = match schema {
        Schema::Canonical => &*CANONICAL,
        Schema::Executable => &*EXECUTABLE,
    };
    let validator = match compiled {
        Ok(validator) => validator,
        // The schemas are constants under test; this is never reached.
        Err(err) => return Err(FieldErrors::single(field, format!("The schema could not be compiled: {err}"))),
    };
    let mut errors = FieldErrors::new();
    for error in validator.iter_errors(value) {
        errors.add(field_path(field, error.instance_path().as_str()), error.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Which form a `canonical_json` is: the validator's (it has `steps`) or the
/// executable one.
pub fn form_of(value: &Value) -> Schema {
    if value.get("steps").is_some() {
        Schema::Canonical
    } else {
        Schema::Executable
    }
}

/// The canonical strategy for a validated text.
pub fn canonical_json(analysis: &Analysis, title: &str) -> Value {
    let steps: Vec<Value> = analysis
        .steps
        .iter()
        .enumerate()
        .map(|(i, text)| json!({ "id": format!("step_{}", i + 1), "order": i + 1, "text": text, "kind": step_kind(text) }))
        .collect();
    json!({
        "schema_version": "1.0",
        "title": title,
        "strategy_type": analysis.classification,
        "risk_tier": analysis.risk_tier,
        "confidence": analysis.confidence,
        "steps": steps,
        "indicators": analysis.indicators,
        "instruments": analysis.instruments,
        "risk_management": { "stop_loss": analysis.has_stop_loss, "position_sizing": analysis.has_sizing },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validator::{validate, InputType, Verdict};

    #[test]
    fn both_shipped_schemas_compile_as_draft_07() {
        assert!(CANONICAL.is_ok(), "{:?}", CANONICAL.as_ref().err());
        assert!(EXECUTABLE.is_ok(), "{:?}", EXECUTABLE.as_ref().err());
        for text in [CANONICAL_SCHEMA, EXECUTABLE_SCHEMA] {
            let schema: Value = serde_json::from_str(text).unwrap();
            assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        }
    }

    #[test]
    fn every_golden_text_becomes_canonical_json_its_schema_accepts() {
        let cases: Vec<Value> = serde_json::from_str(include_str!("../tests/golden/validator.json")).unwrap();
        let mut built = 0;
        for case in &cases {
            if let Verdict::Success(analysis) = validate(case["text"].as_str().unwrap(), InputType::Auto) {
                let canonical = canonical_json(&analysis, "Golden");
                assert_eq!(check(Schema::Canonical, "canonical_json", &canonical), Ok(()), "{canonical}");
                built += 1;
            }
        }
        assert!(built >= 12);
    }

    #[test]
    fn a_mismatch_names_the_field_by_its_path() {
        let bad = json!({
            "strategy_name": "X",
            "entry_rules": [{ "type": "touches", "indicator1": "ema_fast", "indicator2": "ema_slow" }],
            "exit_rules": { "long": [{ "type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow" }] },
            "indicators": { "ema_fast": { "type": "ema", "period": 0 } },
        });
        let errors = check(Schema::Executable, "canonical_json", &bad).unwrap_err();
        assert!(errors.messages("canonical_json.entry_rules").is_some(), "{errors:?}");
        assert!(errors.messages("canonical_json.indicators.ema_fast.period").is_some(), "{errors:?}");
        let good = json!({
            "strategy_name": "EMA cross",
            "entry_rules": [{ "type": "crossover", "indicator1": "ema_fast", "indicator2": "ema_slow" }],
            "exit_rules": { "long": [{ "type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow" }] },
            "indicators": { "ema_fast": { "type": "ema", "period": 12 }, "ema_slow": { "type": "ema", "period": 26 } },
            "risk_management": { "stop_loss": 0.02, "take_profit": 0.05, "position_sizing": 0.1 },
            "timeframe": "1d",
        });
        assert_eq!(check(Schema::Executable, "canonical_json", &good), Ok(()));
        assert_eq!(form_of(&good), Schema::Executable);
    }
}
