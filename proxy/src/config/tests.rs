use super::file::parse_file;
use super::*;

#[test]
fn file_values_and_flag_override() {
    let file = parse_file(
        "c.yaml",
        "listen: 0.0.0.0:7000\nupstream:\n  host: db\n  port: 5433\n  tls: { mode: verify-full, ca_file: /ca.pem }\nlimits:\n  idle_timeout: 5m\n",
    )
    .unwrap();
    let mut c = Config::default();
    c.apply_file(file);
    assert_eq!(c.listen, "0.0.0.0:7000");
    assert_eq!(c.upstream.tls_mode, UpstreamTlsMode::VerifyFull);
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
    let args = ServeArgs {
        upstream_port: Some(6000),
        ..Default::default()
    };
    c.apply_args(&args);
    assert_eq!(c.upstream.port, 6000);
    assert_eq!(c.upstream.host, "db");
    assert!(c.validate().is_ok());
}

#[test]
fn unknown_key_is_named_with_position() {
    let err = parse_file("c.yaml", "upstream:\n  hots: db\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("c.yaml:2:"), "{text}");
    assert!(text.contains("hots"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn bad_enum_value_names_the_key() {
    let err = parse_file("c.yaml", "upstream:\n  tls:\n    mode: requier\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("upstream.tls.mode"), "{text}");
    assert!(text.contains("c.yaml:3:"), "{text}");
    assert!(!text.contains("error: line"), "{text}");
}

#[test]
fn bad_duration_names_the_key() {
    let err = parse_file("c.yaml", "limits:\n  startup_timeout: soon\n").unwrap_err();
    assert!(err.to_string().contains("limits.startup_timeout"), "{err}");
}

#[test]
fn half_configured_tls_is_rejected() {
    let mut c = Config::default();
    c.set_client_tls(Some("/cert.pem".into()), None);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.starts_with("tls.key_file"), "{err}");
}

#[test]
fn socket_directory_upstream_refuses_required_tls() {
    let mut c = Config::default();
    c.upstream.host = "/var/run/postgresql".into();
    assert!(c.validate().is_ok(), "prefer (the default) is fine");
    c.upstream.tls_mode = UpstreamTlsMode::Disable;
    assert!(c.validate().is_ok());
    for mode in [UpstreamTlsMode::Require, UpstreamTlsMode::VerifyFull] {
        c.upstream.tls_mode = mode;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("upstream.tls.mode:"), "{err}");
        assert!(err.contains(mode.name()), "{err}");
        assert!(err.contains("Unix-domain socket"), "{err}");
    }
}
#[test]
fn audit_section() {
    let f = parse_file(
        "c.yaml",
        "audit:\n  file: /var/log/pgveil/audit.jsonl\n  fsync: always\n  queue_capacity: 50\n  rotate: { max_bytes: 1048576, max_age: 1h }\n  checkpoint: { every: 10, interval: 5s }\n",
    )
    .unwrap();
    let a = resolve_audit(f.audit).unwrap().unwrap();
    assert_eq!(a.fsync, crate::config::audit::FsyncPolicy::Always);
    assert_eq!((a.queue_capacity, a.max_bytes), (50, 1_048_576));
    assert_eq!(a.max_age, Duration::from_secs(3600));
    assert_eq!(
        (a.checkpoint_every, a.checkpoint_interval),
        (10, Duration::from_secs(5))
    );
    let f = parse_file("c.yaml", "audit:\n  fsync: never\n").unwrap();
    let e = resolve_audit(f.audit).unwrap_err().to_string();
    assert!(e.starts_with("audit.file: required"), "{e}");
    let e = parse_file("c.yaml", "audit:\n  file: a\n  fsync: sometimes\n").unwrap_err();
    assert!(e.to_string().contains("audit.fsync"), "{e}");
    assert!(resolve_audit(None).unwrap().is_none());
}

#[test]
fn audit_syslog_section() {
    use crate::config::audit::{Facility, SyslogAddress, SyslogFormat};
    let f = parse_file(
        "c.yaml",
        "audit:\n  file: a.jsonl\n  syslog: { address: 'tcp://siem:601', format: json, facility: auth }\n",
    )
    .unwrap();
    let s = resolve_audit(f.audit).unwrap().unwrap().syslog.unwrap();
    assert_eq!(s.address, SyslogAddress::Tcp("siem:601".into()));
    assert_eq!(s.format, SyslogFormat::Json);
    assert_eq!(s.facility.code(), 4);
    let f = parse_file(
        "c.yaml",
        "audit:\n  file: a.jsonl\n  syslog: { address: 'udp://127.0.0.1:514' }\n",
    )
    .unwrap();
    let s = resolve_audit(f.audit).unwrap().unwrap().syslog.unwrap();
    assert_eq!(
        (s.format, s.facility, s.max_datagram),
        (SyslogFormat::Cef, Facility::LOCAL0, 2048),
        "CEF to local0 in datagrams of at most 2048 bytes by default"
    );
    let f = parse_file(
        "c.yaml",
        "audit:\n  file: a.jsonl\n  syslog: { address: 'udp://127.0.0.1:514', max_datagram: 8192 }\n",
    )
    .unwrap();
    let s = resolve_audit(f.audit).unwrap().unwrap().syslog.unwrap();
    assert_eq!(s.max_datagram, 8192);
    for (yaml, want) in [
        ("syslog: { format: cef }", "audit.syslog.address: required"),
        (
            "syslog: { address: '10.0.0.1:514' }",
            "audit.syslog.address: `10.0.0.1:514`: expected udp://",
        ),
        (
            "syslog: { address: 'udp://h:514', facility: local9 }",
            "audit.syslog.facility: unknown facility `local9`",
        ),
        (
            "syslog: { address: 'udp://h:514', max_datagram: 512 }",
            "audit.syslog.max_datagram: must be between 1024 and 65507",
        ),
        (
            "syslog: { address: 'udp://h:514', max_datagram: 65508 }",
            "audit.syslog.max_datagram: must be between 1024 and 65507",
        ),
    ] {
        let f = parse_file("c.yaml", &format!("audit:\n  file: a.jsonl\n  {yaml}\n")).unwrap();
        let e = resolve_audit(f.audit).unwrap_err().to_string();
        assert!(e.starts_with(want), "{yaml}: {e}");
    }
    let e = parse_file(
        "c.yaml",
        "audit:\n  file: a\n  syslog: { address: 'udp://h:1', format: leef }\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("audit.syslog.format"), "{e}");
}

#[test]
fn a_policy_runs_on_every_cpu_unless_told_otherwise() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let with_policy = ServeArgs {
        policy: Some("policy.yaml".into()),
        keyring: Some("pgveil.keys".into()),
        catalog_user: Some("pgveil_catalog".into()),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&with_policy).unwrap().worker_threads, cpus);
    let told = ServeArgs {
        worker_threads: Some(1),
        ..with_policy
    };
    assert_eq!(Config::resolve(&told).unwrap().worker_threads, 1);
    let pass_through = Config::resolve(&ServeArgs::default()).unwrap();
    assert_eq!(pass_through.worker_threads, cpus.saturating_sub(1).max(1));
}
