//! The audit record: one JSON object per line. It never carries a value, a parameter or a
//! literal: statements appear only as their [`fingerprint`](super::fingerprint::fingerprint).
use serde::{Deserialize, Serialize};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// First record of a new log: carries the log id (the random nonce of its keys) and, after
    /// a restart, the last seq and tag of the log it follows.
    Start,
    #[default]
    Statement,
    Anomaly,
    /// Signed with the non-ratcheted checkpoint key; `final: true` when the log was closed.
    Checkpoint,
    /// First record of a file after rotation: the previous file's name, last seq and tag.
    Rotation,
}

/// How the writer of a new log found the end of the file it continues from (`prev_end` of a
/// `start` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrevEnd {
    /// It ended with its closing checkpoint.
    Closed,
    /// It ended without its closing checkpoint, and its writer's open marker was still there:
    /// that writer never closed it (a crash). The end verified.
    Crashed,
    /// It ended without its closing checkpoint and without an open marker: its writer had closed
    /// it (removing the marker), so its end was cut afterwards, or the marker was removed. The
    /// end verified.
    Unclosed,
    /// Its end did not verify (chain, signature or form), or it could not be read.
    Unverified,
}

impl PrevEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            PrevEnd::Closed => "closed",
            PrevEnd::Crashed => "crashed",
            PrevEnd::Unclosed => "unclosed",
            PrevEnd::Unverified => "unverified",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// One classified column a statement used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnUse {
    /// `schema.table.column`
    pub column: String,
    pub level: String,
    /// The policy action applied: allow, mask, hash, null, deny.
    pub action: String,
}

/// One line of the audit log. Field order is the serialization order, and the chain's tag is
/// computed over the exact serialization without `tag` (so `tag` must stay last).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// RFC 3339, UTC, microseconds: `2025-06-01T08:00:00.123456Z`.
    pub time: String,
    /// 1, 2, 3, ... within a log (across its rotated files).
    pub seq: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ColumnUse>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// SQLSTATE and rule, e.g. `42501 rule 5 (line 23)`; never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The anomaly rule's name (`kind: anomaly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The log id: hex of the random nonce its keys are derived with (start, rotation,
    /// checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The keyring version the log's keys come from (start, rotation, checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    /// Rotation and start: the previous file's name (as renamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_file: Option<String>,
    /// Start: the id of the log this one follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_log: Option<String>,
    /// Start, rotation, checkpoint: the seq and tag of the record before (in the previous file
    /// or log for start and rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_tag: Option<String>,
    /// Start: how the writer found the end of the previous file (absent when there was none,
    /// and in start records written before pgveil kept an open marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_end: Option<PrevEnd>,
    /// Start: the seq of the previous file's last signed record (start, rotation or checkpoint);
    /// the records after it were covered by the chain only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_signed: Option<u64>,
    /// Checkpoint: `true` on the record that closes the log cleanly.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_: Option<bool>,
    /// Start, rotation, checkpoint: HMAC-SHA256 with the checkpoint key over the record
    /// serialized without `signature` and `tag` (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// HMAC-SHA256 of the chain (hex). Last field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Record {
    /// The serialization without `signature` and `tag`: what the signature covers.
    pub fn signed_body(&self) -> Result<String, serde_json::Error> {
        let mut r = self.clone();
        r.signature = None;
        r.tag = None;
        serde_json::to_string(&r)
    }

    /// The serialization without `tag`: what the chain's tag covers.
    pub fn chained_body(&self) -> Result<String, serde_json::Error> {
        let mut r = self.clone();
        r.tag = None;
        serde_json::to_string(&r)
    }
}

/// `SystemTime` → `2025-06-01T08:00:00.123456Z`.
pub fn format_time(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let base = pgveil_policy::keyring::rfc3339(d.as_secs());
    let stem = base.strip_suffix('Z').unwrap_or(&base);
    format!("{stem}.{:06}Z", d.subsec_micros())
}

/// `2025-06-01T08:00:00[.ffffff]Z` → seconds since the Unix epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(951_782_400_000_123);
        let s = format_time(t);
        assert_eq!(s, "2000-02-29T00:00:00.000123Z");
        assert_eq!(parse_time(&s), Some(951_782_400));
        assert_eq!(parse_time("2024-12-31T23:59:59Z"), Some(1_735_689_599));
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn tag_is_last_and_options_skipped() {
        let r = Record {
            time: "t".into(),
            seq: 3,
            tag: Some("ab".into()),
            ..Record::default()
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"time":"t","seq":3,"kind":"statement","tag":"ab"}"#);
        assert_eq!(
            r.chained_body().unwrap(),
            r#"{"time":"t","seq":3,"kind":"statement"}"#
        );
    }
}
