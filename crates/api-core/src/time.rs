//! Timestamps as Django REST Framework rendered them: ISO-8601 UTC with
//! microseconds and a `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn iso8601(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// For `#[serde(serialize_with = "api_core::time::serialize")]`.
pub fn serialize<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&iso8601(at))
}

/// For `#[serde(serialize_with = "api_core::time::serialize_opt")]`.
pub fn serialize_opt<S: serde::Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&iso8601(at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_microseconds_and_z() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 9, 5, 7).unwrap();
        assert_eq!(iso8601(&at), "2026-03-01T09:05:07.000000Z");
    }
}
