//! The prompts of code generation: a canonical strategy (either form)
//! turned into a precise request for a backtesting.py strategy, and the
//! request to fix code that failed a check.
//!
//! Precision is the point: every rule, indicator, period and risk figure of
//! the input is written out, so the model has nothing to guess.

use serde_json::Value;

use crate::python_checks::ALLOWED_MODULES;

/// What every generated strategy must look like; the static checks enforce it.
fn requirements(class_name: &str) -> String {
    format!(
        "Requirements:\n\
         - Python 3 for the backtesting.py library: `from backtesting import Strategy` (and `from backtesting.lib \
         import crossover` if useful), with one class `{class_name}(Strategy)` defining `init(self)` and `next(self)`.\n\
         - Compute every indicator in init() with self.I(...) over self.data (Open, High, Low, Close, Volume), using \
         pandas or numpy; keep indicator periods as class attributes so they can be optimised.\n\
         - Trade in next() with self.buy(), self.sell() and self.position.close(); put stop loss and take profit on \
         the orders (sl=, tp=) as prices computed from the entry price.\n\
         - Import only from: {}.\n\
         - No file, network or process access; no open, eval, exec, compile or __import__; no dunder attributes.\n\
         - Answer with exactly one ```python code block and nothing else.",
        ALLOWED_MODULES.join(", ")
    )
}

fn indicator_line(name: &str, spec: &Value) -> String {
    let kind = spec["type"].as_str().unwrap_or("indicator");
    let mut parameters: Vec<String> = Vec::new();
    if let Some(object) = spec.as_object() {
        for (key, value) in object {
            if key != "type" {
                parameters.push(format!("{key}={value}"));
            }
        }
    }
    let upper = kind.to_ascii_uppercase();
    match spec["period"].as_u64() {
        // "EMA(12) as ema_fast": the period sits right by the indicator's name.
        Some(period) => format!("- {upper}({period}) as `{name}` ({})", parameters.join(", ")),
        None if parameters.is_empty() => format!("- {upper} as `{name}`"),
        None => format!("- {upper} as `{name}` ({})", parameters.join(", ")),
    }
}

fn rule_line(rule: &Value) -> String {
    if rule["type"] == "description" {
        // A rule in the client's words: into the prompt as written.
        return rule["description"].as_str().unwrap_or_default().trim().to_string();
    }
    let direction = match rule["type"].as_str() {
        Some("crossunder") => "crosses below",
        _ => "crosses above",
    };
    let first = rule["indicator1"].as_str().unwrap_or("?");
    let second = rule["indicator2"].as_str().unwrap_or("?");
    let mut line = format!("`{first}` {direction} `{second}`");
    if let Some(description) = rule["description"].as_str().filter(|d| !d.trim().is_empty()) {
        line.push_str(&format!(" — {}", description.trim()));
    }
    line
}

/// Rules as a list, or `{long, short}`.
fn rules_lines(title: &str, rules: &Value, out: &mut Vec<String>) {
    match rules {
        Value::Array(list) => {
            out.push(format!("{title} (any one triggers):"));
            out.extend(list.iter().map(|rule| format!("- {}", rule_line(rule))));
        }
        Value::Object(sides) => {
            for side in ["long", "short"] {
                if let Some(Value::Array(list)) = sides.get(side) {
                    out.push(format!("{title}, {side} side (any one triggers):"));
                    out.extend(list.iter().map(|rule| format!("- {}", rule_line(rule))));
                }
            }
        }
        _ => {}
    }
}

fn percent(value: &Value) -> Option<String> {
    value.as_f64().map(|fraction| format!("{}%", (fraction * 10_000.0).round() / 100.0))
}

/// The executable canonical JSON (already checked against its schema).
pub fn from_executable(strategy: &Value, class_name: &str, test_config: Option<&Value>) -> String {
    let mut lines = vec![format!("Write a backtesting.py strategy class. Strategy name: {class_name}"), String::new()];
    if let Some(description) = strategy["description"].as_str().filter(|d| !d.trim().is_empty()) {
        lines.push(format!("Description: {}", description.trim()));
    }
    if let Some(timeframe) = strategy["timeframe"].as_str() {
        lines.push(format!("Timeframe: {timeframe}"));
    }
    lines.push("Indicators:".into());
    if let Some(indicators) = strategy["indicators"].as_object() {
        lines.extend(indicators.iter().map(|(name, spec)| indicator_line(name, spec)));
    }
    rules_lines("Entry rules", &strategy["entry_rules"], &mut lines);
    rules_lines("Exit rules", &strategy["exit_rules"], &mut lines);
    let risk = &strategy["risk_management"];
    let mut risk_lines = Vec::new();
    if let Some(stop) = percent(&risk["stop_loss"]) {
        risk_lines.push(format!("- Stop loss: {stop} from the entry price"));
    }
    if let Some(target) = percent(&risk["take_profit"]) {
        risk_lines.push(format!("- Take profit: {target} from the entry price"));
    }
    if let Some(size) = risk["position_sizing"].as_f64() {
        risk_lines.push(format!("- Position size: {size} of equity per trade (size={size} in buy/sell)"));
    }
    if !risk_lines.is_empty() {
        lines.push("Risk management:".into());
        lines.extend(risk_lines);
    }
    if let Some(config) = test_config.filter(|c| c.is_object()) {
        lines.push(format!("It will be backtested with: {config}"));
    }
    lines.push(String::new());
    lines.push(requirements(class_name));
    lines.join("\n")
}

/// The validator's canonical JSON: its steps, in order, are the rules.
pub fn from_steps(strategy: &Value, class_name: &str, test_config: Option<&Value>) -> String {
    let mut lines = vec![format!("Write a backtesting.py strategy class. Strategy name: {class_name}"), String::new()];
    if let Some(title) = strategy["title"].as_str() {
        lines.push(format!("Title: {title}"));
    }
    if let Some(kind) = strategy["strategy_type"].as_str() {
        lines
            .push(format!("Strategy type: {kind}; risk tier: {}", strategy["risk_tier"].as_str().unwrap_or("unknown")));
    }
    let names: Vec<&str> = strategy["indicators"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        lines.push(format!("Indicators named: {}", names.join(", ")));
    }
    lines.push("Steps (implement each exactly as written):".into());
    if let Some(steps) = strategy["steps"].as_array() {
        for step in steps {
            lines.push(format!(
                "{}. [{}] {}",
                step["order"].as_u64().unwrap_or(0),
                step["kind"].as_str().unwrap_or("other"),
                step["text"].as_str().unwrap_or_default()
            ));
        }
    }
    if let Some(config) = test_config.filter(|c| c.is_object()) {
        lines.push(format!("It will be backtested with: {config}"));
    }
    lines.push(String::new());
    lines.push(requirements(class_name));
    lines.join("\n")
}

/// A plain description, optionally starting from a template's code.
pub fn from_description(
    description: &str,
    class_name: &str,
    template_code: Option<&str>,
    parameters: &Value,
) -> String {
    let mut lines = vec![
        format!("Write a backtesting.py strategy class. Strategy name: {class_name}"),
        String::new(),
        format!("Description: {}", description.trim()),
    ];
    if parameters.as_object().is_some_and(|p| !p.is_empty()) {
        lines.push(format!("Parameters: {parameters}"));
    }
    if let Some(code) = template_code.filter(|c| !c.trim().is_empty()) {
        lines.push(format!("Start from this template:\n```python\n{}\n```", code.trim_end()));
    }
    lines.push(String::new());
    lines.push(requirements(class_name));
    lines.join("\n")
}

/// The request to fix `code`, given what is wrong with it.
pub fn fix(code: &str, class_name: &str, error_type: &str, error_text: &str) -> String {
    format!(
        "Fix a backtesting.py strategy class. Strategy name: {class_name}\n\n\
         It has a problem ({error_type}):\n{error_text}\n\n\
         The code:\n```python\n{}\n```\n\nFix the problem and return the whole corrected strategy; keep its \
         logic and names.\n\n{}",
        code.trim_end(),
        requirements(class_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_executable_prompt_names_every_rule_indicator_and_period() {
        let strategy = json!({
            "strategy_name": "EMA Cross",
            "description": "Trend following on EMAs",
            "timeframe": "1h",
            "indicators": {"ema_fast": {"type": "ema", "period": 12}, "ema_slow": {"type": "ema", "period": 26},
                           "rsi": {"type": "rsi", "period": 14}},
            "entry_rules": {"long": [{"type": "crossover", "indicator1": "ema_fast", "indicator2": "ema_slow",
                                      "description": "golden cross"}],
                            "short": [{"type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow"}]},
            "exit_rules": [{"type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow"}],
            "risk_management": {"stop_loss": 0.02, "take_profit": 0.05, "position_sizing": 0.1}
        });
        let prompt = from_executable(&strategy, "EmaCross", Some(&json!({"symbol": "AAPL"})));
        for expected in [
            "Strategy name: EmaCross",
            "EMA(12) as `ema_fast`",
            "EMA(26) as `ema_slow`",
            "RSI(14) as `rsi`",
            "Entry rules, long side",
            "`ema_fast` crosses above `ema_slow` — golden cross",
            "Entry rules, short side",
            "Exit rules (any one triggers):\n- `ema_fast` crosses below `ema_slow`",
            "Stop loss: 2%",
            "Take profit: 5%",
            "size=0.1",
            "Timeframe: 1h",
            "\"symbol\":\"AAPL\"",
            "class `EmaCross(Strategy)`",
        ] {
            assert!(prompt.contains(expected), "missing {expected:?} in:\n{prompt}");
        }
    }

    #[test]
    fn the_steps_prompt_keeps_the_steps_in_order() {
        let strategy = json!({"title": "RSI dip", "strategy_type": "mean-reversion", "risk_tier": "medium",
            "indicators": ["RSI"], "steps": [
                {"id": "step_1", "order": 1, "text": "Buy when RSI(14) drops below 30", "kind": "entry"},
                {"id": "step_2", "order": 2, "text": "Sell when RSI(14) rises above 70", "kind": "exit"}]});
        let prompt = from_steps(&strategy, "RsiDip", None);
        let first = prompt.find("1. [entry] Buy when RSI(14) drops below 30").unwrap();
        let second = prompt.find("2. [exit] Sell when RSI(14) rises above 70").unwrap();
        assert!(first < second);
        assert!(prompt.contains("Strategy type: mean-reversion"));
    }
}
