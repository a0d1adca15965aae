//! Envelope encryption: known answers, tampering, determinism, round trips, key versions.
use base64::engine::{general_purpose::STANDARD_NO_PAD, Engine};
use pgveil_policy::crypto::{
    envelope_key_version, is_envelope, DecryptError, KeySet, MasterKey, Mode, ENVELOPE_PREFIX,
};
use proptest::prelude::*;

fn keyset(fill: u8, versions: &[u32], active: u32) -> KeySet {
    let v = versions
        .iter()
        .map(|v| (*v, MasterKey::from_bytes([fill.wrapping_add(*v as u8); 32])))
        .collect();
    KeySet::new(v, active).unwrap()
}

// Pinned once from this implementation; any change to derivation, nonce or layout breaks them,
// which is the point: existing ciphertext must stay readable.
const KAT_DET_PHONE: &str = "pgv1:AAAAAb7pnuFtTk2Y2TEn2YE/Ytq3Kc4S68nL6lOFbIhYVifrx3dSwHIQ1Q";
const KAT_RAND_NONCE7: &str = "pgv1:AAAAAQcHBwcHBwcHBwcHB7pXdWXCSncKeNFfjMPQ3sAv0GY+ETep6GvTiYU";
const KAT_DET_EMPTY: &str = "pgv1:AAAAAd6HKz7XXACvd2mE6Ju0CeQVuwuhXl94SQGuLdI";

#[test]
fn known_answers() {
    let ks = keyset(0x41, &[1], 1); // key bytes 0x42 * 32
    let phone = ks.domain("phone");
    assert_eq!(
        phone.encrypt(Mode::Deterministic, b"13812345678").unwrap(),
        KAT_DET_PHONE
    );
    assert_eq!(
        phone.encrypt(Mode::Deterministic, b"").unwrap(),
        KAT_DET_EMPTY
    );
    assert_eq!(
        phone
            .encrypt_with_nonce_for_tests([7; 12], "张三 hello".as_bytes())
            .unwrap(),
        KAT_RAND_NONCE7
    );
    assert_eq!(
        phone.decrypt(KAT_DET_PHONE.as_bytes()).unwrap(),
        b"13812345678"
    );
    assert_eq!(
        phone.decrypt(KAT_RAND_NONCE7.as_bytes()).unwrap(),
        "张三 hello".as_bytes()
    );
    assert_eq!(phone.decrypt(KAT_DET_EMPTY.as_bytes()).unwrap(), b"");
    assert!(KAT_DET_PHONE.starts_with(ENVELOPE_PREFIX));
    assert_eq!(envelope_key_version(KAT_DET_PHONE.as_bytes()), Ok(1));
    assert_eq!(
        MasterKey::from_bytes([0x42; 32]).fingerprint(),
        "68d4b7fbf52849e4"
    );
}

#[test]
fn deterministic_equality_and_domains() {
    let ks = keyset(1, &[1], 1);
    let a = ks.domain("phone");
    let b = ks.domain("phone");
    let other = ks.domain("id_card");
    let x = a.encrypt(Mode::Deterministic, b"13812345678").unwrap();
    assert_eq!(
        x,
        b.encrypt(Mode::Deterministic, b"13812345678").unwrap(),
        "same domain joins"
    );
    assert_ne!(x, a.encrypt(Mode::Deterministic, b"13812345679").unwrap());
    assert_ne!(
        x,
        other.encrypt(Mode::Deterministic, b"13812345678").unwrap(),
        "domains are separate"
    );
    assert_eq!(
        other.decrypt(x.as_bytes()),
        Err(DecryptError::AuthenticationFailed)
    );
    let r1 = a.encrypt(Mode::Randomized, b"13812345678").unwrap();
    let r2 = a.encrypt(Mode::Randomized, b"13812345678").unwrap();
    assert_ne!(r1, r2, "randomized mode uses fresh nonces");
    assert_eq!(a.decrypt(r1.as_bytes()).unwrap(), b"13812345678");
}

#[test]
fn flipping_any_byte_is_detected() {
    let ks = keyset(9, &[1], 1);
    let c = ks.domain("phone");
    for mode in [Mode::Deterministic, Mode::Randomized] {
        let env = c.encrypt(mode, b"13812345678").unwrap();
        let raw = STANDARD_NO_PAD
            .decode(&env[ENVELOPE_PREFIX.len()..])
            .unwrap();
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = raw.clone();
                t[i] ^= bit;
                let forged = format!("{ENVELOPE_PREFIX}{}", STANDARD_NO_PAD.encode(&t));
                let e = c.decrypt(forged.as_bytes()).unwrap_err();
                if i < 4 {
                    assert!(
                        matches!(e, DecryptError::UnknownKeyVersion(_)),
                        "byte {i}: {e:?}"
                    );
                } else {
                    assert_eq!(e, DecryptError::AuthenticationFailed, "byte {i}");
                }
            }
        }
        // Text-level damage: every character flipped gives an error, never plaintext.
        let bytes = env.as_bytes();
        for i in 0..bytes.len() {
            let mut t = bytes.to_vec();
            t[i] ^= 0x01;
            let e = c.decrypt(&t).unwrap_err();
            if i < ENVELOPE_PREFIX.len() {
                assert_eq!(e, DecryptError::NotAnEnvelope, "prefix byte {i}");
            }
        }
        // Truncation.
        for cut in 0..bytes.len() {
            assert!(c.decrypt(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}

/// The envelope's body is canonical unpadded standard base64, as another implementation reads
/// it; a body that decodes to the same bytes but is spelled differently (set trailing bits,
/// padding, whitespace) is not an envelope.
#[test]
fn envelope_body_is_canonical_base64() {
    let c = keyset(4, &[1], 1).domain("phone");
    for len in 0..40usize {
        let plain: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        for mode in [Mode::Deterministic, Mode::Randomized] {
            let env = c.encrypt(mode, &plain).unwrap();
            let body = &env[ENVELOPE_PREFIX.len()..];
            let raw = STANDARD_NO_PAD
                .decode(body)
                .expect("another decoder reads it");
            assert_eq!(STANDARD_NO_PAD.encode(&raw), body);
            assert_eq!(c.decrypt(env.as_bytes()).unwrap(), plain);
            // Spellings of the same bytes that are not canonical.
            let last = body.len() - 1;
            if body.len() % 4 != 0 {
                let mut t = env.clone().into_bytes();
                let i = ENVELOPE_PREFIX.len() + last;
                // The last character's unused low bits, set: same bytes for a lax decoder.
                t[i] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(b64_index(t[i]) | 1) as usize];
                assert_eq!(c.decrypt(&t), Err(DecryptError::NotAnEnvelope), "len {len}");
                assert_eq!(
                    c.decrypt(format!("{env}=").as_bytes()),
                    Err(DecryptError::NotAnEnvelope)
                );
            }
            assert!(c.decrypt(format!("{env}\n").as_bytes()).is_err());
            assert!(c
                .decrypt(format!("{} {}", &env[..10], &env[10..]).as_bytes())
                .is_err());
        }
    }
}

fn b64_index(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    }
}

#[test]
fn not_an_envelope() {
    let c = keyset(3, &[1], 1).domain("d");
    for s in [
        "",
        "13812345678",
        "pgv1:",
        "pgv1:!!!!",
        "pgv1:AAAA",
        "PGV1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            c.decrypt(s.as_bytes()),
            Err(DecryptError::NotAnEnvelope),
            "{s}"
        );
        assert!(!is_envelope(s.as_bytes()), "{s}");
    }
    let env = c.encrypt(Mode::Randomized, b"x").unwrap();
    assert!(is_envelope(env.as_bytes()));
}

#[test]
fn wrong_master_key_and_versions() {
    let old = keyset(5, &[1], 1);
    let env_v1 = old
        .domain("phone")
        .encrypt(Mode::Deterministic, b"13800000000")
        .unwrap();
    // Wrong master key for the same version: authentication fails, nothing is returned.
    let wrong = keyset(6, &[1], 1);
    assert_eq!(
        wrong.domain("phone").decrypt(env_v1.as_bytes()),
        Err(DecryptError::AuthenticationFailed)
    );
    // A newer keyring (v1 kept, v2 active) still reads v1 and writes v2.
    let rotated = keyset(5, &[1, 2], 2);
    let c = rotated.domain("phone");
    assert_eq!(c.decrypt(env_v1.as_bytes()).unwrap(), b"13800000000");
    let env_v2 = c.encrypt(Mode::Deterministic, b"13800000000").unwrap();
    assert_eq!(envelope_key_version(env_v2.as_bytes()), Ok(2));
    assert_ne!(env_v1, env_v2);
    // A keyring without v2 cannot read it.
    assert_eq!(
        old.domain("phone").decrypt(env_v2.as_bytes()),
        Err(DecryptError::UnknownKeyVersion(2))
    );
}

fn pseudonym(keys: &KeySet, value: &str) -> String {
    let mut out = String::new();
    keys.pseudonym_key().pseudonym(value.as_bytes(), &mut out);
    out
}

#[test]
fn pseudonyms_follow_the_lowest_version() {
    let v1 = pseudonym(&keyset(5, &[1], 1), "13800000000");
    // Adding a version and making it active keeps pseudonyms (they are join keys).
    assert_eq!(pseudonym(&keyset(5, &[1, 2], 2), "13800000000"), v1);
    assert_eq!(pseudonym(&keyset(5, &[1, 2, 3], 3), "13800000000"), v1);
    // Versions listed out of order: still the lowest.
    let unordered = KeySet::new(
        vec![
            (2, MasterKey::from_bytes([7; 32])),
            (1, MasterKey::from_bytes([6; 32])),
        ],
        2,
    )
    .unwrap();
    assert_eq!(pseudonym(&unordered, "13800000000"), v1);
    // Retiring version 1 changes them: version 2 now derives the key.
    let retired = pseudonym(&keyset(5, &[2, 3], 3), "13800000000");
    assert_ne!(retired, v1);
    assert_eq!(pseudonym(&keyset(5, &[2], 2), "13800000000"), retired);
    // A different master key gives different pseudonyms.
    assert_ne!(pseudonym(&keyset(9, &[1], 1), "13800000000"), v1);
}

#[test]
fn buffers_are_reused() {
    let c = keyset(2, &[1], 1).domain("phone");
    let (mut scratch, mut out, mut plain) = (Vec::new(), String::new(), Vec::new());
    c.encrypt_into(Mode::Deterministic, b"13812345678", &mut scratch, &mut out)
        .unwrap();
    c.decrypt_into(out.as_bytes(), &mut plain).unwrap();
    assert_eq!(plain, b"13812345678");
    let (cap_s, cap_o, cap_p) = (scratch.capacity(), out.capacity(), plain.capacity());
    for _ in 0..100 {
        out.clear();
        c.encrypt_into(Mode::Deterministic, b"13812345678", &mut scratch, &mut out)
            .unwrap();
        c.decrypt_into(out.as_bytes(), &mut plain).unwrap();
    }
    assert_eq!(
        (scratch.capacity(), out.capacity(), plain.capacity()),
        (cap_s, cap_o, cap_p)
    );
}

proptest! {
    #[test]
    fn round_trip_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), det in any::<bool>()) {
        let c = keyset(11, &[1], 1).domain("any");
        let mode = if det { Mode::Deterministic } else { Mode::Randomized };
        let env = c.encrypt(mode, &data).unwrap();
        prop_assert!(is_envelope(env.as_bytes()));
        prop_assert_eq!(c.decrypt(env.as_bytes()).unwrap(), data);
    }

    #[test]
    fn round_trip_utf8(s in "\\PC*") {
        let c = keyset(12, &[1], 1).domain("text");
        let env = c.encrypt(Mode::Deterministic, s.as_bytes()).unwrap();
        prop_assert_eq!(&env, &c.encrypt(Mode::Deterministic, s.as_bytes()).unwrap());
        let back = c.decrypt(env.as_bytes()).unwrap();
        prop_assert_eq!(String::from_utf8(back).unwrap(), s);
    }

    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        let c = keyset(13, &[1], 1).domain("any");
        let mut prefixed = ENVELOPE_PREFIX.as_bytes().to_vec();
        prefixed.extend_from_slice(&data);
        prop_assert!(c.decrypt(&data).is_err() || data.starts_with(ENVELOPE_PREFIX.as_bytes()));
        let _ = c.decrypt(&prefixed);
        let _ = envelope_key_version(&prefixed);
    }
}
