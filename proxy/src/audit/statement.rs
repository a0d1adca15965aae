//! Statement records on the hot path. Most fields of a statement's record are fixed for its
//! session (id, login, client, application_name) or for its analysed statement (roles, command,
//! fingerprint, columns). Both parts are serialized once, and each record is written by joining
//! them with its time, seq, rows and outcome, straight into the writer's batch.
//!
//! The text is exactly what serde_json makes of the same [`Record`]: the chain's tag and
//! `audit verify` (which re-serializes) depend on it, and a property test holds the two equal.
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::record::{ColumnUse, Outcome};

/// The JSON of a value serde_json can always serialize (strings, lists of them, plain
/// structs); `null` if that ever failed, which `audit verify` would then report.
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A session's part of its statement records.
#[derive(Debug)]
pub struct SessionJson {
    /// `,"session":7,"login":"app"`
    who: String,
    /// `,"client":"10.0.0.5:50412","application_name":"psql"`
    from: String,
}

impl SessionJson {
    pub fn new(session: u64, login: &str, client: &str, application_name: &str) -> Self {
        SessionJson {
            who: format!(",\"session\":{session},\"login\":{}", json(login)),
            from: format!(
                ",\"client\":{},\"application_name\":{}",
                json(client),
                json(application_name)
            ),
        }
    }
}

/// An analysed statement's part of its records.
#[derive(Debug)]
pub struct StatementJson {
    /// `,"roles":["support"]`
    roles: String,
    /// `,"command":"SELECT","fingerprint":"…","columns":[…]`
    what: String,
}

impl StatementJson {
    /// `columns` are (schema.table.column, level, action).
    pub fn new(
        roles: &[String],
        command: &str,
        fingerprint: &str,
        columns: &[(String, String, String)],
    ) -> Self {
        let columns: Vec<ColumnUse> = columns
            .iter()
            .map(|(column, level, action)| ColumnUse {
                column: column.clone(),
                level: level.clone(),
                action: action.clone(),
            })
            .collect();
        StatementJson {
            roles: format!(",\"roles\":{}", json(roles)),
            what: format!(
                ",\"command\":{},\"fingerprint\":{},\"columns\":{}",
                json(command),
                json(fingerprint),
                json(&columns)
            ),
        }
    }
}

/// One statement's record, as a session hands it to the writer.
#[derive(Debug, Clone)]
pub struct StatementRecord {
    pub time: SystemTime,
    pub session: Arc<SessionJson>,
    pub statement: Arc<StatementJson>,
    pub rows: u64,
    pub outcome: Outcome,
    /// SQLSTATE and message of a refusal or error; never a value.
    pub reason: Option<String>,
}

impl StatementRecord {
    /// Appends the record as seq `seq`, without its tag: `{"time":…,"outcome":"ok"}`.
    pub(crate) fn write_body(&self, seq: u64, clock: &mut Clock, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        clock.write(self.time, out);
        out.extend_from_slice(b"\",\"seq\":");
        push_u64(out, seq);
        out.extend_from_slice(b",\"kind\":\"statement\"");
        out.extend_from_slice(self.session.who.as_bytes());
        out.extend_from_slice(self.statement.roles.as_bytes());
        out.extend_from_slice(self.session.from.as_bytes());
        out.extend_from_slice(self.statement.what.as_bytes());
        out.extend_from_slice(b",\"rows\":");
        push_u64(out, self.rows);
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.push(b'"');
        if let Some(reason) = &self.reason {
            out.extend_from_slice(b",\"reason\":");
            out.extend_from_slice(json(reason).as_bytes());
        }
        out.push(b'}');
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes record times as [`super::record::format_time`] does, keeping the date and time of
/// the current second between records.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    second: Option<u64>,
    /// `2025-06-01T08:00:00`
    text: String,
}

impl Clock {
    pub(crate) fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(d.as_secs()) {
            let base = pgveil_policy::keyring::rfc3339(d.as_secs());
            self.text = base.strip_suffix('Z').unwrap_or(&base).to_string();
            self.second = Some(d.as_secs());
        }
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'.');
        let micros = d.subsec_micros();
        let mut frac = [b'0'; 6];
        let mut m = micros;
        for f in frac.iter_mut().rev() {
            *f = b'0' + (m % 10) as u8;
            m /= 10;
        }
        out.extend_from_slice(&frac);
        out.push(b'Z');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::format_time;
    use crate::audit::StatementEvent;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Any text, with quotes, backslashes, control characters and non-ASCII favoured.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("([\"\\\\\u{0}-\u{1f}\u{7f}é中😀]|[a-z .:_]){0,12}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn the_fast_path_writes_what_serde_writes(
            login in text(), client in text(), app in text(), command in text(), fp in text(),
            roles in proptest::collection::vec(text(), 0..3),
            columns in proptest::collection::vec((text(), text(), text()), 0..4),
            micros in 0u64..4_102_444_800_000_000, seq in any::<u64>(), rows in any::<u64>(),
            outcome in prop_oneof![Just(Outcome::Ok), Just(Outcome::Denied), Just(Outcome::Error)],
            reason in proptest::option::of(text()),
        ) {
            let ev = StatementEvent {
                session: 7, login, roles, client, application_name: app, command, sql: fp,
                columns, rows, outcome, reason,
            };
            let mut r = ev.to_statement_record();
            r.time = UNIX_EPOCH + Duration::from_micros(micros);
            let mut reference = ev.into_record_fingerprinted();
            reference.time = format_time(r.time);
            reference.seq = seq;
            let want = serde_json::to_string(&reference).unwrap();
            let mut out = Vec::new();
            let mut clock = Clock::default();
            r.write_body(seq, &mut clock, &mut out);
            prop_assert_eq!(String::from_utf8(out.clone()).unwrap(), want.clone());
            // The clock's cached second gives the same text the second time.
            out.clear();
            r.write_body(seq, &mut clock, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn the_clock_follows_the_second() {
        let mut c = Clock::default();
        for micros in [
            0u64,
            999_999,
            1_000_000,
            951_782_400_000_123,
            951_782_399_999_999,
        ] {
            let t = UNIX_EPOCH + Duration::from_micros(micros);
            let mut out = Vec::new();
            c.write(t, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format_time(t));
        }
    }
}
