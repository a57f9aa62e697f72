//! Answers that follow the prompt, so tests can check what was asked.

use serde_json::{json, Map, Value};

/// The text of a request: every part of `contents`, and the last user turn.
pub struct Prompt {
    pub all_text: String,
    pub last_user: String,
    pub system: Option<String>,
}

/// A content's text; an inline image reads as `[image <mime>, <n> bytes]`
/// and a function's response as `[<name> answered <json>]`, so answers can
/// show what they were given.
fn parts_text(content: &Value) -> String {
    content["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| {
                    if let Some(text) = part["text"].as_str() {
                        return Some(text.to_string());
                    }
                    if let Some(image) = part.get("inlineData").or_else(|| part.get("inline_data")) {
                        let mime = image.get("mimeType").or_else(|| image.get("mime_type")).and_then(Value::as_str);
                        let bytes = image["data"].as_str().map_or(0, |data| data.trim_end_matches('=').len() * 3 / 4);
                        return Some(format!("[image {}, {bytes} bytes]", mime.unwrap_or("unknown")));
                    }
                    let response = part.get("functionResponse").or_else(|| part.get("function_response"))?;
                    Some(format!("[{} answered {}]", response["name"].as_str().unwrap_or("?"), response["response"]))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The function a request's model turn calls, if any: with tools declared
/// and the last turn not already a function's response, mode `ANY` calls
/// (the first allowed function), mode `AUTO` (the default) calls a declared
/// function the last user turn names, `NONE` never calls. Its arguments
/// are an instance of the declared parameters' schema.
pub fn function_call(body: &Value, prompt: &Prompt) -> Option<Value> {
    let declarations: Vec<&Value> = body["tools"]
        .as_array()?
        .iter()
        .filter_map(|tool| tool.get("functionDeclarations").or_else(|| tool.get("function_declarations")))
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let last = body["contents"].as_array()?.last()?;
    let answered = last["parts"].as_array().is_some_and(|parts| {
        parts.iter().any(|part| part.get("functionResponse").or_else(|| part.get("function_response")).is_some())
    });
    if declarations.is_empty() || answered {
        return None;
    }
    let config = body.get("toolConfig").or_else(|| body.get("tool_config"));
    let calling = config.and_then(|c| c.get("functionCallingConfig").or_else(|| c.get("function_calling_config")));
    let mode = calling.and_then(|c| c["mode"].as_str()).unwrap_or("AUTO").to_ascii_uppercase();
    let allowed: Vec<&str> = calling
        .and_then(|c| c.get("allowedFunctionNames").or_else(|| c.get("allowed_function_names")))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let name_of = |declaration: &&Value| declaration["name"].as_str().unwrap_or_default().to_string();
    let chosen = match mode.as_str() {
        "NONE" => None,
        "ANY" => declarations.iter().find(|d| allowed.is_empty() || allowed.contains(&name_of(d).as_str())),
        _ => declarations.iter().find(|d| !name_of(d).is_empty() && prompt.last_user.contains(&name_of(d))),
    }?;
    let schema = chosen
        .get("parametersJsonSchema")
        .or_else(|| chosen.get("parameters_json_schema"))
        .or_else(|| chosen.get("parameters"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    Some(json!({ "name": name_of(chosen), "args": instance_of(&schema, &prompt.last_user) }))
}

pub fn prompt(body: &Value) -> Prompt {
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let mut all = Vec::new();
    let mut last_user = String::new();
    for content in &contents {
        let text = parts_text(content);
        if content["role"].as_str().unwrap_or("user") == "user" {
            last_user = text.clone();
        }
        all.push(text);
    }
    let system = body.get("systemInstruction").or_else(|| body.get("system_instruction")).map(parts_text);
    if let Some(system) = &system {
        all.insert(0, system.clone());
    }
    Prompt { all_text: all.join("\n"), last_user, system }
}

/// Google's counts are its own; ⌈characters / 4⌉ is the documented rule of thumb.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The answer text for a request.
pub fn answer(body: &Value, prompt: &Prompt) -> String {
    let config = body.get("generationConfig").or_else(|| body.get("generation_config"));
    let mime =
        config.and_then(|c| c.get("responseMimeType").or_else(|| c.get("response_mime_type"))).and_then(Value::as_str);
    if mime == Some("application/json") {
        let schema = config.and_then(|c| c.get("responseSchema").or_else(|| c.get("response_schema")));
        let value = match schema {
            Some(schema) => instance_of(schema, &prompt.last_user),
            None => json!({ "answer": prompt.last_user }),
        };
        return value.to_string();
    }
    // What was asked is the last user turn; a system instruction that merely
    // mentions code (as a chat assistant's does) is not a request for it.
    if asks_for_strategy_code(&prompt.last_user) {
        return strategy_code(&prompt.all_text);
    }
    format!("You asked: \"{}\". Here is a thoughtful answer from the simulator.", prompt.last_user.trim())
}

fn asks_for_strategy_code(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("backtesting") && (lower.contains("strategy") || lower.contains("class"))
}

/// A value of the JSON Schema (OpenAPI subset Gemini takes) `schema`.
fn instance_of(schema: &Value, echo: &str) -> Value {
    if let Some(options) = schema["enum"].as_array() {
        return options.first().cloned().unwrap_or(Value::Null);
    }
    let kind = schema["type"].as_str().unwrap_or("object").to_ascii_lowercase();
    match kind.as_str() {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    let value = if property["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("string"))
                        && property.get("enum").is_none()
                    {
                        Value::String(format!("{name}: {}", echo.trim()))
                    } else {
                        instance_of(property, echo)
                    };
                    object.insert(name.clone(), value);
                }
            }
            Value::Object(object)
        }
        "array" => Value::Array(vec![instance_of(&schema["items"], echo)]),
        "string" => Value::String(echo.trim().to_string()),
        "integer" => json!(1),
        "number" => json!(1.0),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// The strategy name a prompt asks for: `named X`, `strategy_name: X`,
/// `class X`, or `GeneratedStrategy`.
fn strategy_name(text: &str) -> String {
    let markers = ["strategy_name\": \"", "strategy_name: ", "strategy name: ", "named ", "class "];
    // ASCII lowering keeps byte offsets, so they index `text` too.
    let lower = text.to_ascii_lowercase();
    for marker in markers {
        if let Some(at) = lower.find(&marker.to_ascii_lowercase()) {
            let rest = text.get(at + marker.len()..).unwrap_or_default();
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.chars().next().is_some_and(char::is_alphabetic) {
                return name;
            }
        }
    }
    "GeneratedStrategy".to_string()
}

/// Indicators and periods named in the prompt, e.g. "SMA(20)", "50-period EMA", "RSI 14".
fn indicators(text: &str) -> Vec<(String, u32)> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    for name in ["sma", "ema", "rsi"] {
        let mut search = 0;
        while let Some(offset) = lower[search..].find(name) {
            let at = search + offset;
            search = at + name.len();
            // Only a number right by the name: "SMA(20)", "SMA 20", "20-day SMA",
            // "20-period SMA"; a number further off belongs to something else.
            let before = lower.get(at.saturating_sub(12)..at).unwrap_or_default();
            let after: String = lower.get(search..).unwrap_or_default().chars().take(12).collect();
            let after = after.strip_prefix('(').or_else(|| after.strip_prefix(' ')).unwrap_or(&after);
            let before = before.trim_end();
            let before = ["-day", "-period", " day", " period", "-"]
                .iter()
                .find_map(|suffix| before.strip_suffix(suffix))
                .unwrap_or(before);
            let leading: String = after.chars().take_while(char::is_ascii_digit).collect();
            let trailing: String = before.chars().rev().take_while(char::is_ascii_digit).collect();
            let trailing: String = trailing.chars().rev().collect();
            let period = leading.parse::<u32>().ok().or_else(|| trailing.parse().ok());
            if let Some(period) = period.filter(|p| (2..=500).contains(p)) {
                if !found.contains(&(name.to_string(), period)) {
                    found.push((name.to_string(), period));
                }
            }
        }
    }
    found
}

/// A valid backtesting.py strategy using the indicators and periods asked for.
fn strategy_code(text: &str) -> String {
    let name = strategy_name(text);
    let mut found = indicators(text);
    if found.is_empty() {
        found = vec![("sma".into(), 10), ("sma".into(), 20)];
    }
    let mut helpers = String::new();
    let mut init = String::new();
    let mut series = Vec::new();
    for (kind, period) in &found {
        let attr = format!("{kind}{period}");
        let function = match kind.as_str() {
            "ema" => "EMA",
            "rsi" => "RSI",
            _ => "SMA",
        };
        if !helpers.contains(&format!("def {function}(")) {
            helpers.push_str(match function {
                "EMA" => "def EMA(values, n):\n    return pd.Series(values).ewm(span=n, adjust=False).mean()\n\n\n",
                "RSI" => "def RSI(values, n):\n    delta = pd.Series(values).diff()\n    gain = delta.clip(lower=0).rolling(n).mean()\n    loss = (-delta.clip(upper=0)).rolling(n).mean()\n    return 100 - 100 / (1 + gain / loss)\n\n\n",
                _ => "def SMA(values, n):\n    return pd.Series(values).rolling(n).mean()\n\n\n",
            });
        }
        init.push_str(&format!("        self.{attr} = self.I({function}, self.data.Close, {period})\n"));
        series.push(attr);
    }
    let (fast, slow) = (series[0].clone(), series.get(1).cloned().unwrap_or_else(|| series[0].clone()));
    format!(
        "```python\nimport pandas as pd\nfrom backtesting import Strategy\nfrom backtesting.lib import crossover\n\n\n{helpers}class {name}(Strategy):\n    def init(self):\n{init}\n    def next(self):\n        if crossover(self.{fast}, self.{slow}):\n            self.buy()\n        elif crossover(self.{slow}, self.{fast}):\n            self.position.close()\n```\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_code_follows_the_prompt() {
        let prompt = "Write a backtesting.py Strategy named GoldenCross: buy when the 50-period SMA crosses above SMA(200); use RSI 14 as a filter.";
        let code = strategy_code(prompt);
        assert!(code.contains("class GoldenCross(Strategy):"), "{code}");
        assert!(code.contains("self.I(SMA, self.data.Close, 50)"), "{code}");
        assert!(code.contains("self.I(SMA, self.data.Close, 200)"), "{code}");
        assert!(code.contains("self.I(RSI, self.data.Close, 14)"), "{code}");
        assert!(code.contains("def init(self):") && code.contains("def next(self):"));
    }

    #[test]
    fn json_answers_follow_the_schema() {
        let schema = json!({"type": "OBJECT", "properties": {
            "formatted_response": {"type": "STRING"},
            "score": {"type": "INTEGER"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "level": {"type": "STRING", "enum": ["low", "high"]}
        }});
        let value = instance_of(&schema, "hello");
        assert_eq!(value["score"], 1);
        assert_eq!(value["level"], "low");
        assert_eq!(value["tags"], json!(["hello"]));
        assert_eq!(value["formatted_response"], "formatted_response: hello");
    }
}
