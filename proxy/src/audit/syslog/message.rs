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
mod tests {
    use super::*;
    use crate::audit::record::ColumnUse;

    fn origin() -> Origin {
        Origin {
            facility: Facility::LOCAL0,
            hostname: "db proxy".into(),
            pid: 42,
        }
    }

    fn statement() -> Record {
        Record {
            time: "2026-12-02T09:30:00.250000Z".into(),
            seq: 17,
            kind: Kind::Statement,
            session: Some(3),
            login: Some("ops|x=1\\".into()),
            roles: Some(vec!["support".into(), "audit".into()]),
            client: Some("10.0.0.5:50412".into()),
            application_name: Some("billing\nnight".into()),
            command: Some("SELECT".into()),
            fingerprint: Some("SELECT phone FROM customers WHERE id = ?".into()),
            columns: Some(vec![ColumnUse {
                column: "public.customers.phone".into(),
                level: "pii".into(),
                action: "mask".into(),
            }]),
            rows: Some(10),
            outcome: Some(Outcome::Ok),
            tag: Some("ab12".into()),
            ..Record::default()
        }
    }

    #[test]
    fn a_statement_renders_as_cef_in_an_rfc5424_frame() {
        let line = serde_json::to_string(&statement()).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None)
            .unwrap()
            .text;
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            m,
            format!(
                "<134>1 2026-12-02T09:30:00.250000Z dbproxy pgveil 42 statement - \
                 CEF:0|pgveil|pgveil|{version}|statement|classified column access|3|\
                 rt=1796203800250 externalId=17 suser=ops|x\\=1\\\\ src=10.0.0.5 spt=50412 \
                 outcome=ok act=SELECT cn1Label=session cn1=3 cn2Label=rows cn2=10 \
                 cs1Label=application_name cs1=billing\\nnight \
                 cs2Label=fingerprint cs2=SELECT phone FROM customers WHERE id \\= ? \
                 cs3Label=columns cs3=public.customers.phone pii mask \
                 cs5Label=roles cs5=support,audit cs6Label=tag cs6=ab12"
            )
        );
        assert!(!m.contains('\n'), "one message, one line: {m}");
    }

    #[test]
    fn json_format_carries_the_line_unchanged() {
        let line = serde_json::to_string(&statement()).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Json, &origin(), None)
            .unwrap()
            .text;
        let (header, body) = m.split_at(m.find(" - ").unwrap() + 3);
        assert_eq!(
            header,
            "<134>1 2026-12-02T09:30:00.250000Z dbproxy pgveil 42 statement - "
        );
        assert_eq!(body, line, "the line stays verifiable byte for byte");
    }

    #[test]
    fn severities_follow_the_outcome() {
        let mut r = statement();
        r.outcome = Some(Outcome::Denied);
        r.reason = Some("42501 rule 2 (line 9)".into());
        let line = serde_json::to_string(&r).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None)
            .unwrap()
            .text;
        assert!(m.starts_with("<132>1 "), "{m}");
        assert!(m.contains("|statement-denied|classified statement refused|7|"));
        assert!(m.contains(" reason=42501 rule 2 (line 9) "), "{m}");

        let anomaly = Record {
            time: "2026-12-02T09:30:00Z".into(),
            seq: 18,
            kind: Kind::Anomaly,
            login: Some("ops".into()),
            client: Some("[::1]:5000".into()),
            rule: Some("bulk_export".into()),
            outcome: Some(Outcome::Denied),
            reason: Some("rows 5012 > 5000 in 10m".into()),
            ..Record::default()
        };
        let line = serde_json::to_string(&anomaly).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None)
            .unwrap()
            .text;
        assert!(m.starts_with("<132>1 2026-12-02T09:30:00Z dbproxy pgveil 42 anomaly - "));
        assert!(m.contains("|anomaly-deny|anomaly rule crossed, reads refused|9|rt=1796203800000 "));
        assert!(m.contains(" src=::1 spt=5000 "), "{m}");
        assert!(m.contains(" cs4Label=rule cs4=bulk_export"), "{m}");

        let mut failed = statement();
        failed.outcome = Some(Outcome::Error);
        let line = serde_json::to_string(&failed).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None)
            .unwrap()
            .text;
        assert!(m.starts_with("<133>1 "), "{m}");

        let checkpoint = Record {
            time: "2026-12-02T09:30:00.000001Z".into(),
            seq: 19,
            kind: Kind::Checkpoint,
            log: Some("00ff".into()),
            ..Record::default()
        };
        let line = serde_json::to_string(&checkpoint).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None)
            .unwrap()
            .text;
        assert!(m.starts_with("<134>1 "), "{m}");
        assert!(m.ends_with("|checkpoint|audit checkpoint|1|rt=1796203800000 externalId=19 flexString1Label=log flexString1=00ff"), "{m}");
    }

    #[test]
    fn facility_and_missing_hostname() {
        let o = Origin {
            facility: Facility::parse("auth").unwrap(),
            hostname: String::new(),
            pid: 1,
        };
        let line = serde_json::to_string(&statement()).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Json, &o, None)
            .unwrap()
            .text;
        assert!(
            m.starts_with("<38>1 2026-12-02T09:30:00.250000Z - pgveil 1 "),
            "{m}"
        );
    }

    #[test]
    fn what_is_not_a_record_is_not_rendered() {
        assert!(render(b"not json", SyslogFormat::Cef, &origin(), None).is_none());
        assert!(render(b"{\"seq\":1}", SyslogFormat::Cef, &origin(), Some(1024)).is_none());
        assert!(render(&[0xff, 0xfe], SyslogFormat::Json, &origin(), None).is_none());
    }

    /// A statement padded to about 77 KB (`AND id > ?` 7000 times, as an attacker would pad it).
    fn padded() -> (Record, String) {
        let mut r = statement();
        r.fingerprint = Some(format!(
            "SELECT phone FROM customers WHERE id > ?{}",
            " AND id > ?".repeat(7000)
        ));
        r.columns = Some(vec![
            ColumnUse {
                column: "public.customers.phone".into(),
                level: "pii".into(),
                action: "mask".into(),
            },
            ColumnUse {
                column: "public.customers.address".into(),
                level: "pii".into(),
                action: "allow".into(),
            },
        ]);
        r.rows = Some(3);
        r.tag = Some("cd".repeat(32));
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.len() > 77_000, "{}", line.len());
        (r, line)
    }

    #[test]
    fn a_padded_statement_is_shortened_to_the_datagram_not_dropped_cef() {
        let (_, line) = padded();
        let whole = render(line.as_bytes(), SyslogFormat::Cef, &origin(), None).unwrap();
        assert!(
            !whole.truncated && whole.text.len() > 77_000,
            "TCP sends it whole"
        );
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin(), Some(2048)).unwrap();
        assert!(m.truncated);
        let t = &m.text;
        assert!(t.len() <= 2048, "{} bytes", t.len());
        assert!(t.starts_with("<134>1 2026-12-02T09:30:00.250000Z dbproxy pgveil 42 statement - CEF:0|pgveil|pgveil|"), "{t}");
        assert!(
            t.contains(&format!(
                " externalId=17 cn3Label=original_bytes cn3={} flexString2Label=truncated flexString2=fingerprint suser=ops|x\\=1\\\\ ",
                line.len()
            )),
            "{t}"
        );
        for kept in [
            " outcome=ok act=SELECT ",
            " cn2Label=rows cn2=3 ",
            " cs2Label=fingerprint cs2=SELECT phone FROM customers WHERE id > ? AND id > ? AND",
            " cs3Label=columns cs3=public.customers.phone pii mask, public.customers.address pii allow ",
            " cs5Label=roles cs5=support,audit ",
        ] {
            assert!(t.contains(kept), "{kept} missing: {t}");
        }
        assert!(
            t.ends_with(&format!(" cs6Label=tag cs6={}", "cd".repeat(32))),
            "{t}"
        );
        // The fingerprint was cut, not dropped: it fills what the other fields leave.
        let fp = t
            .split(" cs2=")
            .nth(1)
            .unwrap()
            .split(" cs3Label=")
            .next()
            .unwrap();
        assert!(fp.len() > 1000, "{}", fp.len());
    }

    #[test]
    fn a_padded_statement_is_shortened_to_the_datagram_not_dropped_json() {
        let (r, line) = padded();
        let whole = render(line.as_bytes(), SyslogFormat::Json, &origin(), None).unwrap();
        assert!(
            whole.text.ends_with(&line),
            "TCP sends the line itself, whole"
        );
        let m = render(line.as_bytes(), SyslogFormat::Json, &origin(), Some(2048)).unwrap();
        assert!(m.truncated);
        assert!(m.text.len() <= 2048, "{} bytes", m.text.len());
        let body = m.text.split_once(" statement - ").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["seq"], 17);
        assert_eq!(v["login"], "ops|x=1\\");
        assert_eq!(v["rows"], 3);
        assert_eq!(v["outcome"], "ok");
        assert_eq!(v["columns"], serde_json::to_value(&r.columns).unwrap());
        assert_eq!(v["tag"], "cd".repeat(32));
        assert!(
            body.ends_with(&format!("\"tag\":\"{}\"}}", "cd".repeat(32))),
            "tag stays last"
        );
        let fp = v["fingerprint"].as_str().unwrap();
        assert!(fp.starts_with("SELECT phone FROM customers WHERE id > ? AND id > ?"));
        assert!(fp.len() > 1000 && fp.len() < 2048, "{}", fp.len());
        assert_eq!(
            v["truncated"],
            serde_json::json!({"original_bytes": line.len(), "cut": ["fingerprint"]})
        );
        // Not the file's line any more, and not taken for one.
        assert!(serde_json::from_str::<Record>(body).is_err());
    }

    #[test]
    fn thousands_of_columns_are_cut_with_a_count() {
        let mut r = statement();
        r.columns = Some(
            (0..5000)
                .map(|i| ColumnUse {
                    column: format!("public.wide.column_{i}"),
                    level: "pii".into(),
                    action: "mask".into(),
                })
                .collect(),
        );
        let line = serde_json::to_string(&r).unwrap();
        for format in [SyslogFormat::Json, SyslogFormat::Cef] {
            let m = render(line.as_bytes(), format, &origin(), Some(4096)).unwrap();
            assert!(
                m.truncated && m.text.len() <= 4096,
                "{format:?}: {}",
                m.text.len()
            );
            assert!(
                m.text.contains("SELECT phone FROM customers WHERE id "),
                "{}",
                m.text
            );
            let kept = m.text.matches("public.wide.column_").count();
            assert!(kept > 20 && kept < 5000, "{format:?}: {kept}");
            assert!(
                m.text.contains("public.wide.column_0"),
                "the first columns stay"
            );
            assert!(
                m.text.contains(&format!("columns {kept} of 5000")),
                "{format:?}: {}",
                m.text
            );
        }
    }

    #[test]
    fn the_smallest_limit_still_carries_seq_tag_and_marker() {
        let huge = "x".repeat(10_000);
        let r = Record {
            time: "2026-12-02T09:30:00.250000Z".into(),
            seq: u64::MAX,
            kind: Kind::Statement,
            session: Some(u64::MAX),
            login: Some(huge.clone()),
            roles: Some(vec![huge.clone(); 50]),
            client: Some(huge.clone()),
            application_name: Some(huge.clone()),
            command: Some(huge.clone()),
            fingerprint: Some(huge.replace('x', "=")),
            columns: Some(vec![
                ColumnUse {
                    column: huge.clone(),
                    level: huge.clone(),
                    action: huge.clone(),
                };
                50
            ]),
            rows: Some(u64::MAX),
            outcome: Some(Outcome::Denied),
            reason: Some(huge.clone()),
            rule: Some(huge.clone()),
            log: Some("ab".repeat(16)),
            tag: Some("ef".repeat(32)),
            ..Record::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        let o = Origin {
            hostname: "h".repeat(300),
            ..origin()
        };
        let min = crate::config::audit::SyslogConfig::MIN_MAX_DATAGRAM;
        for format in [SyslogFormat::Json, SyslogFormat::Cef] {
            let m = render(line.as_bytes(), format, &o, Some(min)).unwrap();
            assert!(
                m.text.len() <= min,
                "{format:?}: {} bytes: {}",
                m.text.len(),
                m.text
            );
            assert!(m.text.contains(&"ef".repeat(32)), "{}", m.text);
            assert!(m.text.contains(&u64::MAX.to_string()), "{}", m.text);
            assert!(m.text.contains(&line.len().to_string()), "{}", m.text);
            assert!(
                m.text.contains("login"),
                "the marker names the login as cut: {}",
                m.text
            );
        }
    }

    #[test]
    fn a_message_within_the_limit_is_not_touched() {
        let mut r = statement();
        r.fingerprint = Some(format!(
            "SELECT phone FROM t WHERE id = ?{}",
            " OR id = ?".repeat(150)
        ));
        let line = serde_json::to_string(&r).unwrap();
        for format in [SyslogFormat::Json, SyslogFormat::Cef] {
            let whole = render(line.as_bytes(), format, &origin(), None).unwrap();
            assert!(whole.text.len() > crate::config::audit::SyslogConfig::MIN_MAX_DATAGRAM);
            let limited =
                render(line.as_bytes(), format, &origin(), Some(whole.text.len())).unwrap();
            assert_eq!(limited, whole);
            assert!(!limited.truncated);
            let one_less = render(
                line.as_bytes(),
                format,
                &origin(),
                Some(whole.text.len() - 1),
            )
            .unwrap();
            assert!(one_less.truncated && one_less.text.len() < whole.text.len());
            // The fingerprint gave way, as little as it had to: the marker's length and a bit.
            let cut = whole.text.len() - one_less.text.len();
            assert!(one_less.text.contains("SELECT phone FROM t WHERE id "));
            assert!(
                one_less.text.matches(" OR id ").count() > 130,
                "{}",
                one_less.text
            );
            assert!(
                one_less.text.contains("fingerprint") && cut < 200,
                "{}",
                one_less.text
            );
        }
    }
}
