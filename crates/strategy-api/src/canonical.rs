//! The canonical strategy the validator builds from a text. The schemas,
//! their checks and the one normalisation of the executable form live in
//! `strategy-schema`, which backtests share.

use serde_json::{json, Value};
pub use strategy_schema::{check, form_of, normalize_executable, Schema, CANONICAL_SCHEMA, EXECUTABLE_SCHEMA};

use crate::validator::{step_kind, Analysis};

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
}
