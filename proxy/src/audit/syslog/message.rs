//! One audit line → one syslog message (RFC 5424), whose text is the line itself (`json`) or its
//! ArcSight Common Event Format rendering (`cef`). Pure: no sockets, easy to test.
//!
//! The CEF rendering carries exactly the fields of the record (which never hold a value, a
//! parameter or a literal): login, policy roles, client, application_name, command, fingerprint,
//! columns with level and action, rows, outcome, reason, anomaly rule, seq and the chain's tag.
use std::fmt::Write as _;

use super::super::record::{parse_time, Kind, Outcome, Record};
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

/// The RFC 5424 message for one audit line, or `None` when the line is not an audit record
/// (the writer only hands over whole lines it wrote, so this means a bug; it is counted).
pub fn render(line: &[u8], format: SyslogFormat, origin: &Origin) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let record: Record = serde_json::from_str(text).ok()?;
    let severity = syslog_severity(&record);
    let pri = u32::from(origin.facility.code()) * 8 + u32::from(severity);
    let mut out = String::with_capacity(text.len() + 160);
    // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG
    let _ = write!(
        out,
        "<{pri}>1 {} {} pgveil {} {} - ",
        header_field(&record.time),
        header_field(&origin.hostname),
        origin.pid,
        kind_name(record.kind),
    );
    match format {
        SyslogFormat::Json => out.push_str(text),
        SyslogFormat::Cef => cef(&record, &mut out),
    }
    Some(out)
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
fn cef(r: &Record, out: &mut String) {
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
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin()).unwrap();
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
        let m = render(line.as_bytes(), SyslogFormat::Json, &origin()).unwrap();
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
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin()).unwrap();
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
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin()).unwrap();
        assert!(m.starts_with("<132>1 2026-12-02T09:30:00Z dbproxy pgveil 42 anomaly - "));
        assert!(m.contains("|anomaly-deny|anomaly rule crossed, reads refused|9|rt=1796203800000 "));
        assert!(m.contains(" src=::1 spt=5000 "), "{m}");
        assert!(m.contains(" cs4Label=rule cs4=bulk_export"), "{m}");

        let mut failed = statement();
        failed.outcome = Some(Outcome::Error);
        let line = serde_json::to_string(&failed).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin()).unwrap();
        assert!(m.starts_with("<133>1 "), "{m}");

        let checkpoint = Record {
            time: "2026-12-02T09:30:00.000001Z".into(),
            seq: 19,
            kind: Kind::Checkpoint,
            log: Some("00ff".into()),
            ..Record::default()
        };
        let line = serde_json::to_string(&checkpoint).unwrap();
        let m = render(line.as_bytes(), SyslogFormat::Cef, &origin()).unwrap();
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
        let m = render(line.as_bytes(), SyslogFormat::Json, &o).unwrap();
        assert!(
            m.starts_with("<38>1 2026-12-02T09:30:00.250000Z - pgveil 1 "),
            "{m}"
        );
    }

    #[test]
    fn what_is_not_a_record_is_not_rendered() {
        assert!(render(b"not json", SyslogFormat::Cef, &origin()).is_none());
        assert!(render(b"{\"seq\":1}", SyslogFormat::Cef, &origin()).is_none());
        assert!(render(&[0xff, 0xfe], SyslogFormat::Json, &origin()).is_none());
    }
}
