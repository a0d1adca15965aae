//! `pgveil keys ...` end to end, through the built binary.
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn pgveil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(args)
        .output()
        .expect("run pgveil")
}

/// A fresh temporary directory, removed when it drops.
fn dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pgveil-cli-keys-{name}-"))
        .tempdir()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn generate_add_list() {
    let tmp = dir("flow");
    let d = tmp.path();
    let f = d.join("keyring.json");
    let fs = f.to_str().unwrap();
    let out = pgveil(&["keys", "generate", "--out", fs]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = pgveil(&["keys", "generate", "--out", fs]);
    assert_ne!(again.status.code(), Some(0), "never overwrites");
    assert!(text(&again.stderr).contains("refusing to overwrite"));

    assert_eq!(pgveil(&["keys", "add-version", fs]).status.code(), Some(0));
    let list = pgveil(&["keys", "list", fs]);
    assert_eq!(list.status.code(), Some(0));
    let t = text(&list.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(lines[1].starts_with("1 ") && !lines[1].ends_with('*'));
    assert!(lines[2].starts_with("2 ") && lines[2].ends_with('*'));
    // No key material in the listing.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    for k in json["keys"].as_array().unwrap() {
        assert!(!t.contains(k["key"].as_str().unwrap()));
        assert!(t.contains(k["fingerprint"].as_str().unwrap()));
    }
}

#[test]
fn readable_keyring_is_refused() {
    let tmp = dir("perm");
    let d = tmp.path();
    let f = d.join("keyring.json");
    let fs = f.to_str().unwrap();
    assert_eq!(
        pgveil(&["keys", "generate", "--out", fs]).status.code(),
        Some(0)
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = pgveil(&["keys", "list", fs]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("pgveil: {fs}: keyring is readable by group or others (mode 0640); run `chmod 600 {fs}`\n")
    );
}

#[test]
fn corrupted_keyring_is_reported() {
    let tmp = dir("corrupt");
    let d = tmp.path();
    let f = d.join("keyring.json");
    let fs = f.to_str().unwrap();
    std::fs::write(&f, b"{\"format\": \"pgveil-keyring-v1\", \"act").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = pgveil(&["keys", "list", fs]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.starts_with(&format!("pgveil: {fs}:1:")) && e.contains("keyring is not valid JSON"),
        "{e}"
    );
    assert!(!e.contains("panicked"));
}
