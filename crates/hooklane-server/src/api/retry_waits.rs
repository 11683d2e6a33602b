//! An endpoint's own retry schedule as the API reads and writes it: waits as humantime
//! text (`"30s"`, `"5m"`, `"2h"`), the form of the server's `retry_schedule` setting.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The waits after each failed attempt, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryWaits(pub Vec<Duration>);

impl<'de> Deserialize<'de> for RetryWaits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                humantime::parse_duration(t.trim()).map_err(|e| {
                    serde::de::Error::custom(format!("{t:?} is not a duration such as \"30s\" or \"5m\": {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RetryWaits)
    }
}

impl Serialize for RetryWaits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|d| humantime::format_duration(*d).to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_and_written_as_text() {
        let waits: RetryWaits = serde_json::from_str(r#"["30s", " 5m ", "1h 30m", "500ms"]"#).unwrap();
        let s = Duration::from_secs;
        assert_eq!(waits.0, vec![s(30), s(300), s(5400), Duration::from_millis(500)]);
        assert_eq!(serde_json::to_string(&waits).unwrap(), r#"["30s","5m","1h 30m","500ms"]"#);
        let bad = serde_json::from_str::<RetryWaits>(r#"["soon"]"#).unwrap_err().to_string();
        assert!(bad.contains("\"soon\" is not a duration"), "{bad}");
        assert!(serde_json::from_str::<RetryWaits>("[30]").is_err());
    }
}
