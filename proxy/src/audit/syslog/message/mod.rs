//! One audit line → one syslog message (RFC 5424), whose text is the line itself (`json`) or its
//! ArcSight Common Event Format rendering (`cef`). Pure: no sockets, easy to test.
//!
//! The CEF rendering carries exactly the fields of the record (which never hold a value, a
//! parameter or a literal): login, policy roles, client, application_name, command, fingerprint,
//! columns with level and action, rows, outcome, reason, anomaly rule, seq and the chain's tag.
//!
//! Over UDP a message larger than the datagram limit is shortened ([`super::fit`]) and marked:
//! in CEF `cn3Label=original_bytes cn3=N flexString2Label=truncated flexString2=fingerprint, ...`
//! right after `externalId`; in JSON a `"truncated":{"original_bytes":N,"cut":[...]}` member
//! before `tag` (such a line no longer verifies: the file has the record whole).
use std::fmt::Write as _;

use super::super::record::{parse_time, Kind, Outcome, Record};
use super::fit::{shorten, Marker};
use super::{Facility, SyslogFormat};

/// What [`render`] needs besides the line.
#[derive(Debug, Clone)]
pub struct Origin {
    pub facility: Facility,
    /// HOSTNAME of the syslog header (`-` when unknown).
    pub hostname: String,
    /// PROCID of the syslog header.
    pub pid: u32,
}

/// One rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    /// Shortened to the datagram limit (and marked so).
    pub truncated: bool,
}

/// The RFC 5424 message for one audit line, of at most `max` bytes when given (UDP), or `None`
/// when the line is not an audit record (the writer only hands over whole lines it wrote, so
/// this means a bug; it is counted).
pub fn render(
    line: &[u8],
    format: SyslogFormat,
    origin: &Origin,
    max: Option<usize>,
) -> Option<Message> {
    let text = std::str::from_utf8(line).ok()?;
    let record: Record = serde_json::from_str(text).ok()?;
    let whole = compose(&record, Some(text), format, origin, None)?;
    match max {
        Some(max) if whole.len() > max => {
            let short = shorten(record, line.len(), max, |r, marker| {
                compose(r, None, format, origin, Some(marker))
            })?;
            Some(Message {
                text: short,
                truncated: true,
            })
        }
        _ => Some(Message {
            text: whole,
            truncated: false,
        }),
    }
}

/// The message for `record`; `line` is its line in the file (the JSON format's text when the
/// record is whole), `marker` says what was cut from it.
fn compose(
    record: &Record,
    line: Option<&str>,
    format: SyslogFormat,
    origin: &Origin,
    marker: Option<&Marker>,
) -> Option<String> {
    let severity = syslog_severity(record);
    let pri = u32::from(origin.facility.code()) * 8 + u32::from(severity);
    let mut out = String::with_capacity(line.map_or(1024, str::len) + 160);
    // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG
    let _ = write!(
        out,
        "<{pri}>1 {} {} pgveil {} {} - ",
        header_field(&record.time),
        header_field(&origin.hostname),
        origin.pid,
        kind_name(record.kind),
    );
    match (format, line, marker) {
        (SyslogFormat::Json, Some(line), None) => out.push_str(line),
        (SyslogFormat::Json, _, _) => json_marked(record, marker, &mut out)?,
        (SyslogFormat::Cef, _, _) => cef(record, marker, &mut out),
    }
    Some(out)
}

/// The record as JSON with the marker as a `truncated` member before `tag`.
fn json_marked(record: &Record, marker: Option<&Marker>, out: &mut String) -> Option<()> {
    let mut r = record.clone();
    let tag = r.tag.take();
    let body = serde_json::to_string(&r).ok()?;
    out.push_str(body.strip_suffix('}')?);
    if let Some(m) = marker {
        let truncated = serde_json::json!({
            "original_bytes": m.original_bytes,
            "cut": m.parts(record),
        });
        let _ = write!(out, ",\"truncated\":{truncated}");
    }
    if let Some(tag) = tag {
        let _ = write!(out, ",\"tag\":{}", serde_json::Value::String(tag));
    }
    out.push('}');
    Some(())
}

/// Syslog severity: 4 (warning) for refusals and anomalies, 5 (notice) for failed statements,
/// 6 (informational) for the rest.
fn syslog_severity(r: &Record) -> u8 {
    match (r.kind, r.outcome) {
        (Kind::Anomaly, _) | (_, Some(Outcome::Denied)) => 4,
        (_, Some(Outcome::Error)) => 5,
        _ => 6,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Start => "start",
        Kind::Statement => "statement",
        Kind::Anomaly => "anomaly",
        Kind::Checkpoint => "checkpoint",
        Kind::Rotation => "rotation",
    }
}

/// A syslog header field: printable US-ASCII without spaces, at most 255 characters, `-` when
/// empty.
fn header_field(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// `CEF:0|pgveil|pgveil|VERSION|SIGNATURE|NAME|SEVERITY|EXTENSION`
fn cef(r: &Record, marker: Option<&Marker>, out: &mut String) {
    let (signature, name, severity) = match (r.kind, r.outcome) {
        (Kind::Statement, Some(Outcome::Denied)) => {
            ("statement-denied", "classified statement refused", 7)
        }
        (Kind::Statement, Some(Outcome::Error)) => {
            ("statement-error", "classified statement failed", 5)
        }
        (Kind::Statement, _) => ("statement", "classified column access", 3),
        (Kind::Anomaly, Some(Outcome::Denied)) => {
            ("anomaly-deny", "anomaly rule crossed, reads refused", 9)
        }
        (Kind::Anomaly, _) => ("anomaly", "anomaly rule crossed", 8),
        (Kind::Checkpoint, _) => ("checkpoint", "audit checkpoint", 1),
        (Kind::Start, _) => ("start", "audit log started", 1),
        (Kind::Rotation, _) => ("rotation", "audit log rotated", 1),
    };
    let _ = write!(
        out,
        "CEF:0|pgveil|pgveil|{}|{signature}|{name}|{severity}|",
        cef_header(env!("CARGO_PKG_VERSION"))
    );
    let mut ext = Extension { out, first: true };
    if let Some(ms) = epoch_millis(&r.time) {
        ext.field("rt", &ms.to_string());
    }
    ext.field("externalId", &r.seq.to_string());
    // Early, so that a receiver that cuts long messages further still keeps it.
    if let Some(m) = marker {
        ext.labelled("cn3", "original_bytes", &m.original_bytes.to_string());
        ext.labelled("flexString2", "truncated", &m.parts(r).join(", "));
    }
    if let Some(login) = &r.login {
        ext.field("suser", login);
    }
    if let Some(client) = &r.client {
        match client.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                ext.field("src", &addr.ip().to_string());
                ext.field("spt", &addr.port().to_string());
            }
            Err(_) => ext.field("shost", client),
        }
    }
    if let Some(outcome) = r.outcome {
        ext.field("outcome", outcome.as_str());
    }
    if let Some(reason) = &r.reason {
        ext.field("reason", reason);
    }
    if let Some(command) = &r.command {
        ext.field("act", command);
    }
    if let Some(session) = r.session {
        ext.labelled("cn1", "session", &session.to_string());
    }
    if let Some(rows) = r.rows {
        ext.labelled("cn2", "rows", &rows.to_string());
    }
    if let Some(app) = &r.application_name {
        ext.labelled("cs1", "application_name", app);
    }
    if let Some(fp) = &r.fingerprint {
        ext.labelled("cs2", "fingerprint", fp);
    }
    if let Some(columns) = &r.columns {
        let list: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {} {}", c.column, c.level, c.action))
            .collect();
        ext.labelled("cs3", "columns", &list.join(", "));
    }
    if let Some(rule) = &r.rule {
        ext.labelled("cs4", "rule", rule);
    }
    if let Some(roles) = &r.roles {
        ext.labelled("cs5", "roles", &roles.join(","));
    }
    if let Some(tag) = &r.tag {
        ext.labelled("cs6", "tag", tag);
    }
    if let Some(log) = &r.log {
        ext.labelled("flexString1", "log", log);
    }
}

struct Extension<'a> {
    out: &'a mut String,
    first: bool,
}

impl Extension<'_> {
    fn field(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
        cef_value(value, self.out);
    }

    /// A custom field and its label (`cs1Label=application_name cs1=psql`).
    fn labelled(&mut self, key: &str, label: &str, value: &str) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push_str("Label=");
        self.out.push_str(label);
        self.field(key, value);
    }
}

/// A CEF header field: `\` and `|` escaped, line breaks replaced by spaces.
fn cef_header(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '|' => o.push_str("\\|"),
            '\r' | '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n` and `\r`.
fn cef_value(s: &str, o: &mut String) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'=' | b'\n' | b'\r')) {
        o.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '=' => o.push_str("\\="),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
}

/// `2025-06-01T08:00:00.123456Z` → milliseconds since the Unix epoch.
fn epoch_millis(time: &str) -> Option<i64> {
    let secs = parse_time(time)?;
    let frac = time
        .strip_suffix('Z')?
        .split_once('.')
        .map(|(_, f)| f)
        .unwrap_or("");
    let millis: String = frac.chars().take(3).collect();
    let millis = format!("{millis:0<3}").parse::<i64>().ok()?;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests;
