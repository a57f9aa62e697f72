//! The rule-based strategy validator: guardrails, step splitting,
//! classification, risk tier and confidence. The rules are written out in
//! `VALIDATOR_RULES.md`; this module follows them word for word, and
//! `tests/golden/validator.json` holds cases worked out by hand from them.

use serde::Serialize;

/// What the validator decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Success(Analysis),
    Error { issue: Issue, message: String },
    ApprovalRequired { reason: String },
    UrlFetchRequired { urls: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    SecurityViolation,
    EmptyStrategy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    Auto,
    Numbered,
    Freetext,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub steps: Vec<String>,
    pub classification: &'static str,
    pub risk_tier: &'static str,
    pub confidence: &'static str,
    pub has_entry: bool,
    pub has_exit: bool,
    pub has_stop_loss: bool,
    pub has_sizing: bool,
    pub indicators: Vec<&'static str>,
    /// Ticker-like words (`AAPL`, `EURUSD`, `BTC/USD`), in order of appearance.
    pub instruments: Vec<String>,
}

/// What a step does, for the canonical JSON: risk first, then entry, then exit.
pub fn step_kind(step: &str) -> &'static str {
    let lower = step.to_lowercase();
    if any(&lower, STOP_LOSS) || any(&lower, SIZING) {
        "risk"
    } else if any(&lower, ENTRY) {
        "entry"
    } else if any(&lower, EXIT) {
        "exit"
    } else {
        "other"
    }
}

/// Upper-case words that look like tickers but are not.
const NOT_INSTRUMENTS: &[&str] = &[
    "EMA", "SMA", "RSI", "MACD", "ATR", "ADX", "VWAP", "SL", "TP", "OR", "AND", "THE", "IF", "AT", "ON", "IN", "TO",
    "API", "AI", "PM", "AM",
];

fn instruments(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/')) {
        let ticker =
            word.split('/').all(|part| (2..=6).contains(&part.len()) && part.chars().all(|c| c.is_ascii_uppercase()));
        if ticker && !NOT_INSTRUMENTS.contains(&word) && !found.iter().any(|f| f == word) {
            found.push(word.to_string());
        }
    }
    found
}

const CREDENTIALS: &[&str] = &[
    "api key",
    "api-key",
    "apikey",
    "secret key",
    "private key",
    "password",
    "passphrase",
    "access token",
    "seed phrase",
    "credentials",
];
const LIVE_TRADING: &[&str] = &[
    "live trading",
    "trade live",
    "trade it live",
    "go live",
    "real money",
    "live account",
    "real account",
    "real orders",
    "broker account",
];
const CLASSES: &[(&str, &[&str])] = &[
    ("scalping", &["scalp", "1-minute", "1 minute", "1m chart", "tick chart", "seconds"]),
    (
        "intraday",
        &[
            "intraday",
            "day trade",
            "day trading",
            "5-minute",
            "15-minute",
            "5 minute",
            "15 minute",
            "hourly",
            "end of day",
            "end of the day",
            "before the close",
        ],
    ),
    (
        "mean-reversion",
        &[
            "mean reversion",
            "mean-reversion",
            "revert",
            "oversold",
            "overbought",
            "bollinger",
            "below 30",
            "below 20",
            "above 70",
            "above 80",
        ],
    ),
    (
        "trend-following",
        &[
            "trend",
            "crossover",
            "crosses above",
            "crosses below",
            "cross above",
            "cross below",
            "breakout",
            "momentum",
            "macd",
        ],
    ),
    ("swing", &["swing", "daily chart", "daily bars", "several days", "few days", "days to weeks"]),
    ("position", &["position trading", "weekly", "monthly", "long-term", "long term", "buy and hold", "months"]),
];
const STOP_LOSS: &[&str] = &["stop loss", "stop-loss", "stoploss", "trailing stop", "stop at"];
const SIZING: &[&str] = &[
    "position size",
    "position sizing",
    "size positions",
    "risk per trade",
    "% of equity",
    "% of capital",
    "% of account",
    "% of the account",
    "% of portfolio",
    "kelly",
    "volatility-adjusted",
];
const ENTRY: &[&str] = &["buy", "enter", "entry", "go long", "long when", "short when", "sell short"];
const EXIT: &[&str] =
    &["exit", "sell", "close the", "close all", "close position", "take profit", "take-profit", "target"];
pub const INDICATORS: &[&str] =
    &["ema", "sma", "rsi", "macd", "bollinger", "atr", "stochastic", "moving average", "vwap", "adx"];

/// Where `keyword` occurs in `text` starting at a word boundary (see the
/// rules' "Matching"). Both are lower-case.
fn matches(text: &str, keyword: &str) -> bool {
    let needs_boundary = keyword.chars().next().is_some_and(char::is_alphanumeric);
    text.match_indices(keyword)
        .any(|(at, _)| !needs_boundary || text[..at].chars().next_back().is_none_or(|before| !before.is_alphanumeric()))
}

fn any(text: &str, keywords: &[&str]) -> bool {
    keywords.iter().any(|keyword| matches(text, keyword))
}

/// Every `http://` or `https://` address, without trailing punctuation.
pub fn urls(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter_map(|word| {
            let start = word.find("http://").or_else(|| word.find("https://"))?;
            let url = word[start..].trim_end_matches(['.', ',', ';', ')']);
            (url.len() > "https://".len()).then(|| url.to_string())
        })
        .collect()
}

/// The list marker a line starts with, and the rest of the line.
fn strip_marker(line: &str) -> Option<&str> {
    let line = line.trim_start();
    for bullet in ["-", "*", "•"] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return Some(rest);
        }
    }
    let lower = line.to_lowercase();
    let (after_word, offset) = match lower.strip_prefix("step") {
        Some(rest) => (rest.trim_start(), line.len() - rest.trim_start().len()),
        None => (lower.as_str(), 0),
    };
    let digits = after_word.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = &after_word[digits..];
    let marker = rest.chars().next().filter(|c| matches!(c, '.' | ')' | ':'))?;
    Some(&line[offset + digits + marker.len_utf8()..])
}

fn tidy(step: &str) -> Option<String> {
    let collapsed = step.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed.trim_end_matches(['.', ';']).trim();
    let mut chars = trimmed.chars();
    let first = chars.next()?;
    Some(first.to_uppercase().chain(chars).collect())
}

/// The text as steps, by the rules' section 2.
pub fn split_steps(text: &str, input_type: InputType) -> Vec<String> {
    let marked = text.lines().filter(|line| strip_marker(line).is_some()).count();
    let numbered = match input_type {
        InputType::Numbered => true,
        InputType::Freetext => false,
        InputType::Auto => marked >= 2,
    };
    let raw: Vec<String> = if numbered {
        let mut steps: Vec<String> = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            match (strip_marker(line), steps.last_mut()) {
                (Some(rest), _) => steps.push(rest.to_string()),
                (None, Some(current)) => {
                    current.push(' ');
                    current.push_str(line.trim());
                }
                (None, None) => steps.push(line.to_string()),
            }
        }
        steps
    } else {
        let mut steps = Vec::new();
        for line in text.lines() {
            let mut current = String::new();
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                current.push(c);
                let ends = matches!(c, '.' | ';' | '!' | '?') && chars.peek().is_none_or(|next| next.is_whitespace());
                if ends {
                    steps.push(std::mem::take(&mut current));
                }
            }
            steps.push(current);
        }
        steps
    };
    raw.iter().filter_map(|step| tidy(step)).collect()
}

/// Validates a strategy text.
pub fn validate(text: &str, input_type: InputType) -> Verdict {
    let lower = text.to_lowercase();
    if any(&lower, CREDENTIALS) {
        return Verdict::Error {
            issue: Issue::SecurityViolation,
            message: "Security violation: strategies never need credentials, and AlgoAgent never asks for them. \
                      Remove any key, password or token from the text."
                .into(),
        };
    }
    if any(&lower, LIVE_TRADING) {
        return Verdict::ApprovalRequired {
            reason: "The text asks for live trading with real money, which needs explicit approval.".into(),
        };
    }
    let found = urls(text);
    if !found.is_empty() {
        return Verdict::UrlFetchRequired { urls: found };
    }
    let steps = split_steps(text, input_type);
    if steps.is_empty() {
        return Verdict::Error { issue: Issue::EmptyStrategy, message: "The strategy text is empty.".into() };
    }
    let classification = CLASSES.iter().find(|(_, keywords)| any(&lower, keywords)).map_or("other", |(class, _)| class);
    let has_stop_loss = any(&lower, STOP_LOSS);
    let has_sizing = any(&lower, SIZING);
    let risk_tier = match (has_stop_loss, has_sizing) {
        (true, true) => "low",
        (true, false) | (false, true) => "medium",
        (false, false) => "high",
    };
    let has_entry = any(&lower, ENTRY);
    let has_exit = any(&lower, EXIT);
    let indicators: Vec<&'static str> = INDICATORS.iter().copied().filter(|name| matches(&lower, name)).collect();
    let parts = [has_entry, has_exit, has_stop_loss || has_sizing, !indicators.is_empty()];
    let confidence = match parts.iter().filter(|part| **part).count() {
        4 => "high",
        2 | 3 => "medium",
        _ => "low",
    };
    Verdict::Success(Analysis {
        steps,
        classification,
        risk_tier,
        confidence,
        has_entry,
        has_exit,
        has_stop_loss,
        has_sizing,
        indicators,
        instruments: instruments(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_start_at_a_word_boundary_and_may_run_on() {
        assert!(matches("scalping gold", "scalp"));
        assert!(matches("now exiting", "exit"));
        assert!(!matches("the center line", "enter"));
        assert!(matches("risk 1% of equity", "% of equity"));
        assert!(!matches("a rsi-like", "si"));
    }

    #[test]
    fn list_markers_are_recognised() {
        assert_eq!(strip_marker("1. Buy"), Some(" Buy"));
        assert_eq!(strip_marker("  12) Sell"), Some(" Sell"));
        assert_eq!(strip_marker("Step 3: Hold"), Some(" Hold"));
        assert_eq!(strip_marker("- item"), Some(" item"));
        assert_eq!(strip_marker("2026 was a year"), None);
        assert_eq!(strip_marker("Buy 3. Sell"), None);
    }

    #[test]
    fn tickers_are_found_and_indicator_names_are_not() {
        assert_eq!(instruments("Buy AAPL and BTC/USD when the EMA and RSI agree; AAPL again"), ["AAPL", "BTC/USD"]);
        assert!(instruments("Buy A when X").is_empty(), "single letters are words, not tickers");
    }

    #[test]
    fn steps_are_risk_then_entry_then_exit() {
        assert_eq!(step_kind("Use a stop loss at 2% below entry"), "risk");
        assert_eq!(step_kind("Buy when RSI is below 30"), "entry");
        assert_eq!(step_kind("Sell when it crosses below"), "exit");
        assert_eq!(step_kind("Wait for the weekly trend to turn up"), "other");
    }

    #[test]
    fn urls_lose_trailing_punctuation() {
        assert_eq!(
            urls("see (https://a.example/x), then http://b.example."),
            ["https://a.example/x", "http://b.example"]
        );
        assert!(urls("https:// alone").is_empty());
    }
}
