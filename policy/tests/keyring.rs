//! The keyring file: generation, versions, permissions, corruption.
use pgveil_policy::crypto::Mode;
use pgveil_policy::keyring::{Keyring, KeyringError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A fresh temporary directory, removed when it drops.
fn tmpdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pgveil-keyring-test-{name}-"))
        .tempdir()
        .unwrap()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn generate_rotate_and_reload() {
    let tmp = tmpdir("rotate");
    let d = tmp.path();
    let p = d.join("keys.json");
    let k = Keyring::generate(1_700_000_000).unwrap();
    k.save(&p, true).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(matches!(k.save(&p, true), Err(KeyringError::Exists { .. })));
    let v1 = Keyring::load(&p).unwrap();
    assert_eq!(v1.active_version(), 1);
    assert_eq!(v1.list()[0].created, "2023-11-14T22:13:20Z");
    let env = v1
        .into_key_set()
        .domain("phone")
        .encrypt(Mode::Deterministic, b"13812345678")
        .unwrap();

    let mut k = Keyring::load(&p).unwrap();
    assert_eq!(k.add_version(1_700_000_100).unwrap(), 2);
    k.save(&p, false).unwrap();
    let k2 = Keyring::load(&p).unwrap();
    let list = k2.list();
    assert_eq!(
        list.iter()
            .map(|i| (i.version, i.active))
            .collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_ne!(list[0].fingerprint, list[1].fingerprint);
    let ks = k2.into_key_set();
    assert_eq!(
        ks.domain("phone").decrypt(env.as_bytes()).unwrap(),
        b"13812345678"
    );
    let json = std::fs::read_to_string(&p).unwrap();
    assert!(
        !format!("{list:?}").contains(&json[json.find("\"key\": \"").unwrap() + 8..][..20]),
        "listing never shows key material"
    );
}

#[test]
fn refuses_readable_keyring() {
    let tmp = tmpdir("perms");
    let d = tmp.path();
    let p = d.join("keys.json");
    Keyring::generate(0).unwrap().save(&p, true).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Keyring::load(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: keyring is readable by group or others (mode 0644); run `chmod 600 {}`",
            p.display(),
            p.display()
        )
    );
}

#[test]
fn corrupted_and_truncated() {
    let tmp = tmpdir("corrupt");
    let d = tmp.path();
    let p = d.join("keys.json");
    let k = Keyring::generate(0).unwrap();
    let good = k.to_json();
    let name = p.display().to_string();
    let load = |data: &[u8]| {
        write(&p, data, 0o600);
        Keyring::load(&p).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(load(b""), Err(format!("{name}: keyring is empty")));
    for cut in [1, 10, good.len() / 2, good.len() - 3] {
        let e = load(&good.as_bytes()[..cut]).unwrap_err();
        assert!(
            e.starts_with(&format!("{name}:")) && e.contains("keyring is not valid JSON"),
            "{e}"
        );
    }
    // Flip one character of the key material: the fingerprint check catches it.
    let i = good.find("\"key\": \"").unwrap() + 10;
    let mut bad = good.clone().into_bytes();
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let e = load(&bad).unwrap_err();
    assert!(
        e.contains("key does not match its fingerprint") && e.contains("the keyring is corrupted"),
        "{e}"
    );
    let e = load(good.replace("\"active\": 1", "\"active\": 7").as_bytes()).unwrap_err();
    assert_eq!(e, format!("{name}: active version 7 is not in the keyring"));
    let e = load(good.replace("pgveil-keyring-v1", "other").as_bytes()).unwrap_err();
    assert_eq!(
        e,
        format!("{name}: unknown keyring format \"other\" (expected \"pgveil-keyring-v1\")")
    );
    let e = load(b"\x00\x01\x02binary\xff").unwrap_err();
    assert!(e.contains("keyring is not valid JSON"), "{e}");
    assert_eq!(load(good.as_bytes()), Ok(()));
}
