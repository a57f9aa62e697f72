//! The validator against cases worked out by hand from VALIDATOR_RULES.md
//! before the code was written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use strategy_api::validator::{validate, InputType, Verdict};

#[test]
fn the_validator_agrees_with_every_hand_written_case() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("golden/validator.json")).unwrap();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let verdict = validate(text, InputType::Auto);
        let got = serde_json::to_value(&verdict).unwrap();
        let mut wrong = Vec::new();
        if got["status"] != case["status"] {
            wrong.push(format!("status {} (expected {})", got["status"], case["status"]));
        }
        match &verdict {
            Verdict::Success(analysis) => {
                for field in ["classification", "risk_tier", "confidence"] {
                    if got[field] != case[field] {
                        wrong.push(format!("{field} {} (expected {})", got[field], case[field]));
                    }
                }
                if let Some(steps) = case.get("steps") {
                    if &got["steps"] != steps {
                        wrong.push(format!("steps {} (expected {steps})", got["steps"]));
                    }
                }
                if let Some(count) = case.get("step_count") {
                    if analysis.steps.len() as u64 != count.as_u64().unwrap() {
                        wrong.push(format!("{} steps {:?} (expected {count})", analysis.steps.len(), analysis.steps));
                    }
                }
            }
            Verdict::Error { .. } => {
                if got["issue"] != case["issue"] {
                    wrong.push(format!("issue {} (expected {})", got["issue"], case["issue"]));
                }
            }
            Verdict::UrlFetchRequired { .. } => {
                if got["urls"] != case["urls"] {
                    wrong.push(format!("urls {} (expected {})", got["urls"], case["urls"]));
                }
            }
            Verdict::ApprovalRequired { .. } => {}
        }
        if !wrong.is_empty() {
            failures.push(format!("{text:?}: {}", wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
