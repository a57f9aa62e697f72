//! OHLCV text: a header naming Open, High, Low, Close (and optionally
//! Volume and Adj Close) after a date column, as backtesting.py's samples
//! and the files users upload (normalised) are written.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::Bar;

fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|day| day.and_hms_opt(0, 0, 0)).map(|at| at.and_utc())
}

/// The bars of an OHLCV text, or what is wrong with it (by line).
pub fn read_ohlcv(text: &str) -> Result<Vec<crate::Bar>, String> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header: Vec<String> =
        lines.next().ok_or("the file is empty")?.split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let (open, high, low, close) = match (column("open"), column("high"), column("low"), column("close")) {
        (Some(o), Some(h), Some(l), Some(c)) => (o, h, l, c),
        _ => return Err("the header must name Open, High, Low and Close".into()),
    };
    let (volume, adj_close) = (column("volume"), column("adj close").or(column("adj_close")));
    let mut bars = Vec::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let number = |at: usize| fields.get(at).and_then(|f| f.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        let at = fields.first().and_then(|f| timestamp(f)).ok_or_else(|| format!("line {}: no date", n + 2))?;
        let (Some(o), Some(h), Some(l), Some(c)) = (number(open), number(high), number(low), number(close)) else {
            return Err(format!("line {}: a price is missing or not a number", n + 2));
        };
        bars.push(Bar {
            timestamp: at,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: volume.and_then(number),
            adj_close: adj_close.and_then(number),
        });
    }
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_shape_and_the_normalised_shape_both_read() {
        let sample = ",Open,High,Low,Close,Volume\n2004-08-19,100.0,104.06,95.96,100.34,22351900\n";
        let bars = read_ohlcv(sample).unwrap();
        assert_eq!((bars[0].close, bars[0].volume), (100.34, Some(22_351_900.0)));
        let hourly = "Date,Open,High,Low,Close\n2017-04-19 09:00:00,1.07,1.08,1.06,1.075\n";
        assert_eq!(read_ohlcv(hourly).unwrap()[0].timestamp.to_string(), "2017-04-19 09:00:00 UTC");
        assert!(read_ohlcv("Date,Price\n2020-01-01,1\n").is_err());
        assert!(read_ohlcv("Date,Open,High,Low,Close\nsoon,1,1,1,1\n").unwrap_err().contains("line 2"));
    }
}
