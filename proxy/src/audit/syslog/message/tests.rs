//! The syslog messages as a SIEM receives them: CEF and JSON, shortened and marked.
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
    assert!(
        t.starts_with(
            "<134>1 2026-12-02T09:30:00.250000Z dbproxy pgveil 42 statement - CEF:0|pgveil|pgveil|"
        ),
        "{t}"
    );
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
        let limited = render(line.as_bytes(), format, &origin(), Some(whole.text.len())).unwrap();
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
