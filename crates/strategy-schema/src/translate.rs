//! The executable canonical strategy as backtesting.py code, written here,
//! locally and deterministically, never by a Gemini call: what the old
//! app's adapter ran (moving-average crossovers, stop loss, take profit,
//! position sizing), and the other indicators the schema names.
//!
//! The input is the normalised form ([`crate::normalize_executable`]). No
//! text from the strategy reaches the code but the class name, which is
//! reduced to an identifier: indicators become numbered attributes and
//! every number is formatted from a parsed value, so a hostile name cannot
//! inject Python.
//!
//! Rules read the way a trader writes them: every entry rule of a side must
//! hold (they are conditions on one signal); any exit rule of a side
//! closes it. Rules given as one list are the long side's.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use api_core::FieldErrors;
use serde_json::Value;

/// A Python class name from a display name: "ema cross-2" → "EmaCross2".
pub fn python_class_name(name: &str, fallback: &str) -> String {
    let mut class: String = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            // "EMA" → "Ema", so the file name reads ema_cross.py; "GoldenCross" stays.
            let word =
                if word.chars().any(|c| c.is_ascii_lowercase()) { word.to_string() } else { word.to_ascii_lowercase() };
            let mut chars = word.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    if class.is_empty() {
        class = fallback.into();
    } else if class.starts_with(|c: char| c.is_ascii_digit()) {
        class.insert_str(0, "Strategy");
    }
    class.chars().take(100).collect()
}

/// One indicator as code: the helper it calls and the arguments after the
/// data, with the names of its lines (the first is the one a bare name
/// means).
struct Indicator {
    call: String,
    helper: &'static str,
    lines: &'static [&'static str],
}

fn period(spec: &Value, key: &str, default: u64) -> u64 {
    spec[key].as_u64().filter(|n| *n > 0).unwrap_or(default)
}

fn indicator(spec: &Value) -> Option<Indicator> {
    let close = "self.data.Close";
    let hlc = "self.data.High, self.data.Low, self.data.Close";
    let (helper, call, lines): (&'static str, String, &'static [&'static str]) = match spec["type"].as_str()? {
        "sma" => ("_sma", format!("_sma, {close}, {}", period(spec, "period", 20)), &[]),
        "ema" => ("_ema", format!("_ema, {close}, {}", period(spec, "period", 20)), &[]),
        "rsi" => ("_rsi", format!("_rsi, {close}, {}", period(spec, "period", 14)), &[]),
        "atr" => ("_atr", format!("_atr, {hlc}, {}", period(spec, "period", 14)), &[]),
        "macd" => (
            "_macd",
            format!(
                "_macd, {close}, {}, {}, {}",
                period(spec, "fast", 12),
                period(spec, "slow", 26),
                period(spec, "signal", 9)
            ),
            &["macd", "signal", "histogram"],
        ),
        "bollinger_bands" => {
            let width = spec["std_dev"].as_f64().filter(|w| w.is_finite() && *w > 0.0).unwrap_or(2.0);
            (
                "_bollinger",
                format!("_bollinger, {close}, {}, {width:?}", period(spec, "period", 20)),
                &["middle", "upper", "lower"],
            )
        }
        "stochastic" => (
            "_stochastic",
            format!("_stochastic, {hlc}, {}, {}", period(spec, "period", 14), period(spec, "signal", 3)),
            &["k", "d"],
        ),
        "price" => ("", String::new(), &[]),
        _ => return None,
    };
    Some(Indicator { call, helper, lines })
}

const HELPERS: &[(&str, &str)] = &[
    ("_sma", "def _sma(values, n):\n    return pd.Series(values).rolling(n).mean().to_numpy()\n"),
    ("_ema", "def _ema(values, n):\n    return pd.Series(values).ewm(span=n, adjust=False).mean().to_numpy()\n"),
    (
        "_rsi",
        "def _rsi(values, n):\n    change = pd.Series(values).diff()\n    \
         gain = change.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()\n    \
         loss = (-change.clip(upper=0)).ewm(alpha=1 / n, adjust=False).mean()\n    \
         return (100 - 100 / (1 + gain / loss)).to_numpy()\n",
    ),
    (
        "_atr",
        "def _atr(high, low, close, n):\n    high, low, close = pd.Series(high), pd.Series(low), pd.Series(close)\n    \
         previous = close.shift(1)\n    \
         true_range = pd.concat([high - low, (high - previous).abs(), (low - previous).abs()], axis=1).max(axis=1)\n    \
         return true_range.ewm(alpha=1 / n, adjust=False).mean().to_numpy()\n",
    ),
    (
        "_macd",
        "def _macd(values, fast, slow, signal):\n    close = pd.Series(values)\n    \
         line = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()\n    \
         signal_line = line.ewm(span=signal, adjust=False).mean()\n    \
         return np.array([line, signal_line, line - signal_line])\n",
    ),
    (
        "_bollinger",
        "def _bollinger(values, n, width):\n    close = pd.Series(values)\n    \
         middle = close.rolling(n).mean()\n    spread = close.rolling(n).std() * width\n    \
         return np.array([middle, middle + spread, middle - spread])\n",
    ),
    (
        "_stochastic",
        "def _stochastic(high, low, close, n, d):\n    high, low, close = pd.Series(high), pd.Series(low), pd.Series(close)\n    \
         lowest, highest = low.rolling(n).min(), high.rolling(n).max()\n    \
         k = 100 * (close - lowest) / (highest - lowest)\n    \
         return np.array([k, k.rolling(d).mean()])\n",
    ),
];

const PRICES: &[(&str, &str)] = &[
    ("price", "self.data.Close"),
    ("close", "self.data.Close"),
    ("open", "self.data.Open"),
    ("high", "self.data.High"),
    ("low", "self.data.Low"),
    ("volume", "self.data.Volume"),
];

/// The indicators, numbered in name order, with what each name means.
struct Indicators {
    names: Vec<(String, Indicator)>,
}

impl Indicators {
    /// A rule's operand as Python: an indicator (or one of its lines, as
    /// `macd.signal`), a price, or a number.
    fn operand(&self, name: &str) -> Option<String> {
        let name = name.trim();
        let (base, line) = match self.names.iter().any(|(known, _)| known == name) {
            true => (name, None),
            false => match name.rsplit_once('.') {
                Some((base, line)) => (base, Some(line)),
                None => (name, None),
            },
        };
        if let Some(index) = self.names.iter().position(|(known, _)| known == base) {
            let indicator = &self.names[index].1;
            if indicator.helper.is_empty() {
                return line.is_none().then(|| "self.data.Close".to_string());
            }
            return match (line, indicator.lines.is_empty()) {
                (None, true) => Some(format!("self.i{index}")),
                (None, false) => Some(format!("self.i{index}[0]")),
                (Some(line), false) => indicator
                    .lines
                    .iter()
                    .position(|known| known.eq_ignore_ascii_case(line))
                    .map(|row| format!("self.i{index}[{row}]")),
                (Some(_), true) => None,
            };
        }
        if line.is_none() {
            if let Some((_, series)) = PRICES.iter().find(|(word, _)| word.eq_ignore_ascii_case(name)) {
                return Some((*series).to_string());
            }
            if let Ok(number) = name.parse::<f64>() {
                return number.is_finite().then(|| format!("{number:?}"));
            }
        }
        None
    }
}

/// The rules of one side, as Python conditions, or the errors naming each
/// rule that cannot be translated.
fn conditions(indicators: &Indicators, rules: &Value, path: &str, errors: &mut FieldErrors) -> Vec<String> {
    let mut out = Vec::new();
    for (index, rule) in rules.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{index}]");
        let kind = rule["type"].as_str().unwrap_or_default();
        if kind != "crossover" && kind != "crossunder" {
            errors.add(
                &at,
                "A rule in plain words cannot be translated locally: use crossover or crossunder rules over \
                 named indicators, or generate the code with generate_executable_code.",
            );
            continue;
        }
        let mut operand = |key: &str| {
            let name = rule[key].as_str().unwrap_or_default();
            indicators.operand(name).or_else(|| {
                errors.add(
                    format!("{at}.{key}"),
                    format!(
                        "\"{name}\" names no indicator: define it under indicators (a line of one as name.line), \
                         or use price, open, high, low, close, volume or a number."
                    ),
                );
                None
            })
        };
        let (first, second) = (operand("indicator1"), operand("indicator2"));
        if let (Some(first), Some(second)) = (first, second) {
            out.push(match kind {
                "crossover" => format!("crossover({first}, {second})"),
                _ => format!("crossover({second}, {first})"),
            });
        }
    }
    out
}

/// A side's rules: `{long, short}`, or a list meaning the long side.
fn side<'a>(rules: &'a Value, side: &str) -> (&'a Value, String) {
    match rules {
        Value::Array(_) if side == "long" => (rules, String::new()),
        Value::Object(sides) => (sides.get(side).unwrap_or(&Value::Null), format!(".{side}")),
        _ => (&Value::Null, String::new()),
    }
}

/// backtesting.py code for an executable canonical strategy (normalised),
/// or the errors naming, by path under `field`, what cannot be translated.
pub fn to_python(field: &str, strategy: &Value, class_name: &str) -> Result<String, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut names = Vec::new();
    for (name, spec) in strategy["indicators"].as_object().into_iter().flatten() {
        match indicator(spec) {
            Some(built) => names.push((name.clone(), built)),
            None => errors.add(format!("{field}.indicators.{name}.type"), "Not an indicator this translator knows."),
        }
    }
    let indicators = Indicators { names };
    let mut sides = Vec::new();
    for name in ["long", "short"] {
        let (entry, entry_path) = side(&strategy["entry_rules"], name);
        let (exit, exit_path) = side(&strategy["exit_rules"], name);
        let entry = conditions(&indicators, entry, &format!("{field}.entry_rules{entry_path}"), &mut errors);
        let exit = conditions(&indicators, exit, &format!("{field}.exit_rules{exit_path}"), &mut errors);
        sides.push((name, entry, exit));
    }
    if sides.iter().all(|(_, entry, _)| entry.is_empty()) && errors.is_empty() {
        errors.add(format!("{field}.entry_rules"), "No entry rule: the strategy would never trade.");
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let risk = &strategy["risk_management"];
    let fraction = |key: &str| risk[key].as_f64().filter(|v| v.is_finite() && *v > 0.0);
    // backtesting.py reads a size of 1 as one unit; just under it is "all of it".
    let size = fraction("position_sizing").map(|size| size.min(0.9999));
    let (stop, target) = (fraction("stop_loss"), fraction("take_profit"));

    let helpers: BTreeSet<&str> = indicators.names.iter().map(|(_, i)| i.helper).filter(|h| !h.is_empty()).collect();
    let mut code = String::from(
        "# Translated from an executable canonical strategy by AlgoAgent (no AI involved).\n\
         import numpy as np\nimport pandas as pd\nfrom backtesting import Strategy\nfrom backtesting.lib import crossover\n",
    );
    for (name, body) in HELPERS.iter().filter(|(name, _)| helpers.contains(name)) {
        let _ = write!(code, "\n\n{body}");
        debug_assert!(body.starts_with(&format!("def {name}(")));
    }
    let class = python_class_name(class_name, "TranslatedStrategy");
    let _ = write!(code, "\n\nclass {class}(Strategy):\n    def init(self):\n");
    let mut any = false;
    for (index, (_, built)) in indicators.names.iter().enumerate() {
        if !built.helper.is_empty() {
            let _ = writeln!(code, "        self.i{index} = self.I({})", built.call);
            any = true;
        }
    }
    if !any {
        code.push_str("        pass\n");
    }
    code.push_str("\n    def next(self):\n        price = self.data.Close[-1]\n");
    let mut exits = Vec::new();
    for (name, _, exit) in &sides {
        if !exit.is_empty() {
            let held = if *name == "long" { "self.position.is_long" } else { "self.position.is_short" };
            exits.push(format!("{held} and ({})", exit.join(" or ")));
        }
    }
    if !exits.is_empty() {
        let _ = write!(code, "        if {}:\n            self.position.close()\n", exits.join(" or "));
    }
    code.push_str("        if self.position:\n            return\n");
    let mut first = true;
    for (name, entry, _) in &sides {
        if entry.is_empty() {
            continue;
        }
        let (order, below, above) = if *name == "long" { ("buy", "1 -", "1 +") } else { ("sell", "1 +", "1 -") };
        let mut arguments = Vec::new();
        if let Some(size) = size {
            arguments.push(format!("size={size:?}"));
        }
        if let Some(stop) = stop {
            arguments.push(format!("sl=price * ({below} {stop:?})"));
        }
        if let Some(target) = target {
            arguments.push(format!("tp=price * ({above} {target:?})"));
        }
        let keyword = if first { "if" } else { "elif" };
        first = false;
        let _ = write!(
            code,
            "        {keyword} {}:\n            self.{order}({})\n",
            entry.join(" and "),
            arguments.join(", ")
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize_executable;
    use serde_json::json;

    fn crossover_strategy() -> Value {
        json!({
            "strategy_name": "EMA cross",
            "entry_rules": [{ "type": "crossover", "indicator1": "ema_fast", "indicator2": "ema_slow" }],
            "exit_rules": { "long": [{ "type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow" }] },
            "indicators": { "ema_fast": { "type": "ema", "period": 12 }, "ema_slow": { "type": "moving_average", "period": 26 } },
            "risk_management": { "stop_loss": 0.02, "take_profit": 0.05, "position_sizing": 0.5 },
        })
    }

    #[test]
    fn a_crossover_strategy_becomes_the_same_code_every_time() {
        let strategy = normalize_executable("c", crossover_strategy()).unwrap();
        let code = to_python("c", &strategy, "EMA cross").unwrap();
        assert_eq!(code, to_python("c", &strategy, "EMA cross").unwrap());
        assert!(code.contains("class EmaCross(Strategy):"), "{code}");
        assert!(code.contains("self.i0 = self.I(_ema, self.data.Close, 12)"), "{code}");
        assert!(code.contains("self.i1 = self.I(_sma, self.data.Close, 26)"), "{code}");
        assert!(code.contains("if self.position.is_long and (crossover(self.i1, self.i0)):"), "{code}");
        assert!(
            code.contains("if crossover(self.i0, self.i1):\n            self.buy(size=0.5, sl=price * (1 - 0.02), tp=price * (1 + 0.05))"),
            "{code}"
        );
        assert!(!code.contains("_rsi"), "only the helpers used are written: {code}");
    }

    #[test]
    fn lines_prices_numbers_and_shorts_translate() {
        let strategy = normalize_executable(
            "c",
            json!({
                "strategy_name": "mix",
                "entry_rules": {
                    "long": [{ "type": "crossover", "indicator1": "macd", "indicator2": "macd.signal" },
                             { "type": "crossover", "indicator1": "70", "indicator2": "rsi" }],
                    "short": [{ "type": "crossunder", "indicator1": "close", "indicator2": "bands.lower" }],
                },
                "exit_rules": { "short": [{ "type": "crossover", "indicator1": "price", "indicator2": "bands" }] },
                "indicators": { "macd": { "type": "macd" }, "rsi": { "type": "rsi" },
                                "bands": { "type": "bollinger_bands", "std_dev": 2.5 } },
                "risk_management": { "position_sizing": 1 },
            }),
        )
        .unwrap();
        let code = to_python("c", &strategy, "mix").unwrap();
        assert!(code.contains("self.I(_bollinger, self.data.Close, 20, 2.5)"), "{code}");
        assert!(code.contains("if crossover(self.i1[0], self.i1[1]) and crossover(70.0, self.i2):"), "{code}");
        assert!(
            code.contains("elif crossover(self.i0[2], self.data.Close):\n            self.sell(size=0.9999)"),
            "{code}"
        );
        assert!(code.contains("self.position.is_short and (crossover(self.data.Close, self.i0[0]))"), "{code}");
    }

    #[test]
    fn what_cannot_be_translated_is_named_by_its_path() {
        let strategy = normalize_executable(
            "c",
            json!({
                "strategy_name": "x\"); import os; os.system('id') #",
                "entry_rules": ["Buy when it feels right", { "type": "crossover", "indicator1": "fast", "indicator2": "slow.upper" }],
                "exit_rules": [{ "type": "crossunder", "indicator1": "fast", "indicator2": "ghost" }],
                "indicators": { "fast": { "type": "sma", "period": 5 }, "slow": { "type": "sma", "period": 9 } },
            }),
        )
        .unwrap();
        let errors = to_python("c", &strategy, "x").unwrap_err();
        assert!(errors.messages("c.entry_rules[0]").is_some(), "{errors:?}");
        assert!(errors.messages("c.entry_rules[1].indicator2").is_some(), "{errors:?}");
        assert!(errors.messages("c.exit_rules[0].indicator2").is_some(), "{errors:?}");
        assert_eq!(python_class_name("x\"); import os; os.system('id') #", "T"), "XImportOsOsSystemId");
    }
}
