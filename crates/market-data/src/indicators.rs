//! Indicators over stored bars, computed with the `ta` crate: the old
//! registry's keys (`sma`, `ema`, `rsi`, `macd`, `bollinger_bands`, `atr`,
//! `stochastic`), each with its parameters and their defaults.
//!
//! A value is `null` until the indicator has a whole window behind it
//! (`ta` answers from the first bar with a shorter window; a chart should
//! not draw that). The definitions, as `ta` computes them:
//! - SMA: the mean of the last `period` closes;
//! - EMA: `k = 2 / (period + 1)`, seeded with the first close;
//! - RSI: EMAs (as above) of the up and down moves;
//! - MACD: EMA(fast) − EMA(slow), its EMA(signal), and their difference;
//! - Bollinger: SMA ± `std_dev` population standard deviations;
//! - ATR: the EMA of the true range;
//! - stochastic: %K over `period` bars, and %D its EMA over `signal` bars.

use serde::Serialize;
use serde_json::{json, Value};
use ta::indicators::{
    AverageTrueRange, BollingerBands, ExponentialMovingAverage, FastStochastic, MovingAverageConvergenceDivergence,
    RelativeStrengthIndex, SimpleMovingAverage,
};
use ta::{DataItem, Next};

use crate::Bar;

/// One parameter of an indicator.
#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub default: f64,
    pub description: &'static str,
}

/// An indicator the registry offers.
#[derive(Debug, Clone, Serialize)]
pub struct Indicator {
    pub name: &'static str,
    pub display_name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    pub parameters: Vec<Parameter>,
    /// The lines each value has (one line: the value itself).
    pub outputs: &'static [&'static str],
    pub example: &'static str,
    pub usage: &'static str,
}

fn int(name: &'static str, default: f64, description: &'static str) -> Parameter {
    Parameter { name, kind: "int", default, description }
}

/// The registry.
pub fn registry() -> Vec<Indicator> {
    vec![
        Indicator {
            name: "sma",
            display_name: "Simple Moving Average",
            category: "trend",
            description: "The mean of the last `period` closes.",
            parameters: vec![int("period", 20.0, "Bars averaged.")],
            outputs: &["value"],
            example: r#"{"indicator": "sma", "parameters": {"period": 50}}"#,
            usage: "Trend direction; crossovers of a fast and a slow SMA.",
        },
        Indicator {
            name: "ema",
            display_name: "Exponential Moving Average",
            category: "trend",
            description: "An average weighting recent closes more (k = 2 / (period + 1)).",
            parameters: vec![int("period", 20.0, "The span of the weighting.")],
            outputs: &["value"],
            example: r#"{"indicator": "ema", "parameters": {"period": 12}}"#,
            usage: "Trend following; faster to turn than an SMA.",
        },
        Indicator {
            name: "rsi",
            display_name: "Relative Strength Index",
            category: "momentum",
            description: "Up moves against down moves over `period` bars, from 0 to 100.",
            parameters: vec![int("period", 14.0, "Bars of moves compared.")],
            outputs: &["value"],
            example: r#"{"indicator": "rsi", "parameters": {"period": 14}}"#,
            usage: "Overbought above 70, oversold below 30.",
        },
        Indicator {
            name: "macd",
            display_name: "Moving Average Convergence Divergence",
            category: "momentum",
            description: "EMA(fast) − EMA(slow), its signal EMA, and the histogram between them.",
            parameters: vec![
                int("fast", 12.0, "The fast EMA's period."),
                int("slow", 26.0, "The slow EMA's period."),
                int("signal", 9.0, "The signal EMA's period."),
            ],
            outputs: &["macd", "signal", "histogram"],
            example: r#"{"indicator": "macd", "parameters": {"fast": 12, "slow": 26, "signal": 9}}"#,
            usage: "Momentum shifts when MACD crosses its signal line.",
        },
        Indicator {
            name: "bollinger_bands",
            display_name: "Bollinger Bands",
            category: "volatility",
            description: "An SMA with bands `std_dev` standard deviations above and below.",
            parameters: vec![
                int("period", 20.0, "Bars of the average and the deviation."),
                Parameter {
                    name: "std_dev",
                    kind: "float",
                    default: 2.0,
                    description: "The bands' width in deviations.",
                },
            ],
            outputs: &["upper", "middle", "lower"],
            example: r#"{"indicator": "bollinger_bands", "parameters": {"period": 20, "std_dev": 2}}"#,
            usage: "Volatility; prices at a band are stretched.",
        },
        Indicator {
            name: "atr",
            display_name: "Average True Range",
            category: "volatility",
            description: "The average true range (the bar's range, reaching back to the previous close).",
            parameters: vec![int("period", 14.0, "Bars averaged.")],
            outputs: &["value"],
            example: r#"{"indicator": "atr", "parameters": {"period": 14}}"#,
            usage: "Sizing stops to the market's volatility.",
        },
        Indicator {
            name: "stochastic",
            display_name: "Stochastic Oscillator",
            category: "momentum",
            description: "Where the close sits in the last `period` bars' range (%K), and its average (%D).",
            parameters: vec![int("period", 14.0, "Bars of the range."), int("signal", 3.0, "The %D average's period.")],
            outputs: &["k", "d"],
            example: r#"{"indicator": "stochastic", "parameters": {"period": 14, "signal": 3}}"#,
            usage: "Overbought above 80, oversold below 20.",
        },
    ]
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndicatorError {
    #[error("unknown indicator {0}")]
    Unknown(String),
    #[error("{name} must be {rule}")]
    Parameter { name: String, rule: String },
}

/// The most bars an indicator window may span.
const MAX_PERIOD: f64 = 1000.0;

fn parameter(indicator: &Indicator, parameters: &Value, name: &str) -> Result<f64, IndicatorError> {
    let spec = indicator
        .parameters
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| IndicatorError::Parameter { name: name.into(), rule: "a parameter of this indicator".into() })?;
    let value = match &parameters[name] {
        Value::Null => spec.default,
        value => {
            value.as_f64().ok_or_else(|| IndicatorError::Parameter { name: name.into(), rule: "a number".into() })?
        }
    };
    let ok = match spec.kind {
        "int" => value.fract() == 0.0 && (1.0..=MAX_PERIOD).contains(&value),
        _ => value.is_finite() && value > 0.0 && value <= 10.0,
    };
    if !ok {
        let rule = if spec.kind == "int" {
            format!("a whole number from 1 to {MAX_PERIOD}")
        } else {
            "above 0, at most 10".into()
        };
        return Err(IndicatorError::Parameter { name: name.into(), rule });
    }
    Ok(value)
}

fn item(bar: &Bar) -> Option<DataItem> {
    DataItem::builder()
        .open(bar.open)
        .high(bar.high)
        .low(bar.low)
        .close(bar.close)
        .volume(bar.volume.unwrap_or(0.0))
        .build()
        .ok()
}

/// The indicator's value at each bar (`null` while its window fills), and
/// the parameters used.
pub fn calculate(name: &str, parameters: &Value, bars: &[Bar]) -> Result<(Vec<Value>, Value), IndicatorError> {
    let registry = registry();
    let indicator = registry
        .iter()
        .find(|i| i.name == name.to_ascii_lowercase())
        .ok_or_else(|| IndicatorError::Unknown(name.into()))?;
    if let Some(given) = parameters.as_object() {
        for key in given.keys() {
            parameter(indicator, &Value::Null, key)?;
        }
    }
    let get = |key: &str| parameter(indicator, parameters, key);
    let as_period = |value: f64| value as usize;
    let invalid = |err: ta::errors::TaError| IndicatorError::Parameter { name: name.into(), rule: err.to_string() };
    let closes = bars.iter().map(|bar| bar.close);
    // Bars before the first whole window give null.
    let warm = |n: usize, from: usize| n + 1 >= from;
    let (values, used): (Vec<Value>, Value) = match indicator.name {
        "sma" => {
            let period = as_period(get("period")?);
            let mut sma = SimpleMovingAverage::new(period).map_err(invalid)?;
            let values = closes.enumerate().map(|(n, close)| {
                let value = sma.next(close);
                if warm(n, period) {
                    json!(value)
                } else {
                    Value::Null
                }
            });
            (values.collect(), json!({ "period": period }))
        }
        "ema" => {
            let period = as_period(get("period")?);
            let mut ema = ExponentialMovingAverage::new(period).map_err(invalid)?;
            let values = closes.enumerate().map(|(n, close)| {
                let value = ema.next(close);
                if warm(n, period) {
                    json!(value)
                } else {
                    Value::Null
                }
            });
            (values.collect(), json!({ "period": period }))
        }
        "rsi" => {
            let period = as_period(get("period")?);
            let mut rsi = RelativeStrengthIndex::new(period).map_err(invalid)?;
            let values = closes.enumerate().map(|(n, close)| {
                let value = rsi.next(close);
                // The first bar has no move to measure.
                if warm(n, period + 1) {
                    json!(value)
                } else {
                    Value::Null
                }
            });
            (values.collect(), json!({ "period": period }))
        }
        "macd" => {
            let (fast, slow, signal) = (as_period(get("fast")?), as_period(get("slow")?), as_period(get("signal")?));
            if fast >= slow {
                return Err(IndicatorError::Parameter { name: "fast".into(), rule: "less than slow".into() });
            }
            let mut macd = MovingAverageConvergenceDivergence::new(fast, slow, signal).map_err(invalid)?;
            let values = closes.enumerate().map(|(n, close)| {
                let out = macd.next(close);
                if warm(n, slow) {
                    json!({ "macd": out.macd, "signal": out.signal, "histogram": out.histogram })
                } else {
                    Value::Null
                }
            });
            (values.collect(), json!({ "fast": fast, "slow": slow, "signal": signal }))
        }
        "bollinger_bands" => {
            let (period, width) = (as_period(get("period")?), get("std_dev")?);
            let mut bands = BollingerBands::new(period, width).map_err(invalid)?;
            let values = closes.enumerate().map(|(n, close)| {
                let out = bands.next(close);
                if warm(n, period) {
                    json!({ "upper": out.upper, "middle": out.average, "lower": out.lower })
                } else {
                    Value::Null
                }
            });
            (values.collect(), json!({ "period": period, "std_dev": width }))
        }
        "atr" => {
            let period = as_period(get("period")?);
            let mut atr = AverageTrueRange::new(period).map_err(invalid)?;
            let values = bars.iter().enumerate().map(|(n, bar)| match item(bar) {
                Some(item) => {
                    let value = atr.next(&item);
                    if warm(n, period) {
                        json!(value)
                    } else {
                        Value::Null
                    }
                }
                None => Value::Null,
            });
            (values.collect(), json!({ "period": period }))
        }
        _ => {
            let (period, signal) = (as_period(get("period")?), as_period(get("signal")?));
            let mut fast = FastStochastic::new(period).map_err(invalid)?;
            let mut d = ExponentialMovingAverage::new(signal).map_err(invalid)?;
            let values = bars.iter().enumerate().map(|(n, bar)| match item(bar) {
                Some(item) => {
                    let k = fast.next(&item);
                    let d = d.next(k);
                    if warm(n, period + signal - 1) {
                        json!({ "k": k, "d": d })
                    } else {
                        Value::Null
                    }
                }
                None => Value::Null,
            });
            (values.collect(), json!({ "period": period, "signal": signal }))
        }
    };
    Ok((values, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn bars(closes: &[f64]) -> Vec<Bar> {
        closes
            .iter()
            .enumerate()
            .map(|(n, close)| Bar {
                timestamp: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap() + Duration::days(n as i64),
                open: *close,
                high: close + 1.0,
                low: close - 1.0,
                close: *close,
                volume: None,
                adj_close: None,
            })
            .collect()
    }

    #[test]
    fn windows_fill_before_values_show() {
        let (values, used) = calculate("sma", &json!({ "period": 3 }), &bars(&[1.0, 2.0, 3.0, 4.0])).unwrap();
        assert_eq!(values, vec![Value::Null, Value::Null, json!(2.0), json!(3.0)]);
        assert_eq!(used, json!({ "period": 3 }));
        let (values, _) = calculate("macd", &json!({}), &bars(&[1.0; 30])).unwrap();
        assert!(values[24].is_null() && values[25]["macd"].is_number());
    }

    #[test]
    fn bad_parameters_are_named() {
        let closes = bars(&[1.0, 2.0]);
        assert_eq!(calculate("vwap", &json!({}), &closes).unwrap_err(), IndicatorError::Unknown("vwap".into()));
        let err = calculate("sma", &json!({ "period": 0 }), &closes).unwrap_err();
        assert!(matches!(err, IndicatorError::Parameter { ref name, .. } if name == "period"), "{err}");
        let err = calculate("rsi", &json!({ "window": 3 }), &closes).unwrap_err();
        assert!(matches!(err, IndicatorError::Parameter { ref name, .. } if name == "window"), "{err}");
        let err = calculate("macd", &json!({ "fast": 30 }), &closes).unwrap_err();
        assert!(matches!(err, IndicatorError::Parameter { ref name, .. } if name == "fast"), "{err}");
    }
}
