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

pub const CANONICAL_SCHEMA: &str = include_str!("../../../schemas/canonical_strategy.schema.json");
pub const EXECUTABLE_SCHEMA: &str = include_str!("../../../schemas/executable_strategy.schema.json");
pub const DEFINITION_SCHEMA: &str = include_str!("../../../schemas/strategy_definition.schema.json");

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
static DEFINITION: LazyLock<Result<Validator, String>> = LazyLock::new(|| compile(DEFINITION_SCHEMA));

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
    check_against(compiled, field, value)
}

/// Checks the old production API's `StrategyDefinition`, as [`check`] does
/// the canonical forms.
pub fn check_definition(field: &str, value: &Value) -> Result<(), FieldErrors> {
    check_against(&DEFINITION, field, value)
}

fn check_against(compiled: &Result<Validator, String>, field: &str, value: &Value) -> Result<(), FieldErrors> {
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

/// The executable JSON in its one internal form, from any shape the schema
/// accepts (the old Django app's included): indicators as an object of
/// name → `{type, period, …}` with `moving_average` as `sma`;
/// `position_sizing` as a number; a rule in plain words as
/// `{type: "description", description}`. Run once at the boundary, after
/// [`check`]; the only error left is a name given twice.
pub fn normalize_executable(field: &str, mut strategy: Value) -> Result<Value, FieldErrors> {
    fn canonical_type(kind: &Value) -> Value {
        match kind.as_str() {
            Some("moving_average") => Value::from("sma"),
            _ => kind.clone(),
        }
    }
    let indicators = match strategy["indicators"].take() {
        Value::Array(listed) => {
            let mut named = serde_json::Map::new();
            for (index, item) in listed.into_iter().enumerate() {
                let name = item["name"].as_str().unwrap_or_default().to_string();
                let mut spec = serde_json::Map::new();
                spec.insert("type".into(), canonical_type(&item["type"]));
                if let Some(params) = item["params"].as_object() {
                    for (key, value) in params {
                        let key = if key == "timeperiod" { "period" } else { key.as_str() };
                        spec.entry(key.to_string()).or_insert_with(|| value.clone());
                    }
                }
                if named.insert(name, Value::Object(spec)).is_some() {
                    return Err(FieldErrors::single(
                        format!("{field}.indicators[{index}].name"),
                        "Another indicator already has this name.",
                    ));
                }
            }
            named
        }
        Value::Object(mut named) => {
            for spec in named.values_mut() {
                spec["type"] = canonical_type(&spec["type"]);
            }
            named
        }
        _ => serde_json::Map::new(),
    };
    strategy["indicators"] = Value::Object(indicators);
    if let Some(risk) = strategy.get_mut("risk_management").and_then(Value::as_object_mut) {
        if let Some(sizing) = risk.get_mut("position_sizing") {
            if let Some(value) = sizing.get("value").cloned() {
                *sizing = value;
            }
        }
    }
    for rules in ["entry_rules", "exit_rules"] {
        let lists: Vec<&mut Value> = match strategy.get_mut(rules) {
            Some(Value::Object(sides)) => sides.values_mut().collect(),
            Some(list @ Value::Array(_)) => vec![list],
            _ => Vec::new(),
        };
        for list in lists.into_iter().filter_map(Value::as_array_mut) {
            for rule in list.iter_mut().filter(|rule| rule.is_string()) {
                *rule = json!({ "type": "description", "description": rule.take() });
            }
        }
    }
    Ok(strategy)
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

/// A `StrategyDefinition` with every field it left out set to the schema's
/// default (after [`check`] accepted it).
pub fn with_definition_defaults(mut definition: Value) -> Value {
    let schema: Value = serde_json::from_str(DEFINITION_SCHEMA).unwrap_or_default();
    if let (Some(fields), Some(properties)) = (definition.as_object_mut(), schema["properties"].as_object()) {
        for (name, property) in properties {
            if let Some(default) = property.get("default") {
                fields.entry(name.clone()).or_insert_with(|| default.clone());
            }
        }
    }
    definition
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shipped_schemas_compile_as_draft_07() {
        assert!(CANONICAL.is_ok(), "{:?}", CANONICAL.as_ref().err());
        assert!(EXECUTABLE.is_ok(), "{:?}", EXECUTABLE.as_ref().err());
        assert!(DEFINITION.is_ok(), "{:?}", DEFINITION.as_ref().err());
        for text in [CANONICAL_SCHEMA, EXECUTABLE_SCHEMA, DEFINITION_SCHEMA] {
            let schema: Value = serde_json::from_str(text).unwrap();
            assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        }
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

    #[test]
    fn the_old_apps_shapes_normalise_to_one_form() {
        let old = json!({
            "strategy_name": "x",
            "entry_rules": ["Buy on strength", { "type": "crossover", "indicator1": "a", "indicator2": "b" }],
            "exit_rules": { "long": ["Sell on weakness"] },
            "indicators": [
                { "name": "a", "type": "moving_average", "params": { "timeperiod": 5 } },
                { "name": "b", "type": "ema", "params": { "period": 9 } },
            ],
            "risk_management": { "position_sizing": { "type": "fixed_percent", "value": 0.95 } },
        });
        assert_eq!(check(Schema::Executable, "c", &old), Ok(()));
        let normal = normalize_executable("c", old).unwrap();
        assert_eq!(
            normal["indicators"],
            json!({ "a": { "type": "sma", "period": 5 }, "b": { "type": "ema", "period": 9 } })
        );
        assert_eq!(normal["risk_management"]["position_sizing"], json!(0.95));
        assert_eq!(normal["entry_rules"][0], json!({ "type": "description", "description": "Buy on strength" }));
        assert_eq!(normal["exit_rules"]["long"][0]["type"], "description");

        let twice = json!({ "indicators": [{ "name": "a", "type": "sma" }, { "name": "a", "type": "ema" }] });
        let errors = normalize_executable("c", twice).unwrap_err();
        assert!(errors.messages("c.indicators[1].name").is_some(), "{errors:?}");
    }
}
