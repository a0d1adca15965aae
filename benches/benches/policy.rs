//! Policy core micro-benchmarks: mask throughput per kind, and envelope encrypt / decrypt per
//! mode on 16-64 byte values, and the two parts of opening an envelope. Run: `cargo bench -p pgveil-benches --bench policy`.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgveil_policy::crypto::{KeySet, MasterKey, Mode};
use pgveil_policy::mask::{Mask, PseudonymKey};
use std::hint::black_box;

fn keyset() -> KeySet {
    KeySet::new(vec![(1, MasterKey::from_bytes([7; 32]))], 1).expect("active version exists")
}

fn masks(c: &mut Criterion) {
    let key = PseudonymKey::new(b"bench");
    let cases: [(&str, &str); 14] = [
        ("cn_id_card", "11010519491231002X"),
        ("cn_mobile", "13812345678"),
        ("cn_name", "欧阳修文"),
        ("bank_card", "6222021234567890123"),
        ("email", "zhangsan@example.com"),
        ("passport", "E12345678"),
        ("address", "北京市海淀区马连洼街道289号"),
        ("pnr", "ABC123"),
        ("waybill", "EE123456785CN"),
        ("date", "1990-03-07"),
        ("keep(1,2)", "G12345678"),
        ("redact", "some free text value"),
        ("constant('N/A')", "anything"),
        ("hash", "13812345678"),
    ];
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(1));
    for (expr, value) in cases {
        let m = Mask::parse(expr).expect("valid mask");
        let mut out = String::with_capacity(64);
        g.bench_with_input(BenchmarkId::from_parameter(expr), value, |b, v| {
            b.iter(|| {
                out.clear();
                m.apply(black_box(v), &key, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let ks = keyset();
    let d = ks.domain("phone");
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    for len in [16usize, 20, 32, 64] {
        let value: Vec<u8> = (0..len).map(|i| b'0' + (i % 10) as u8).collect();
        for (name, mode) in [
            ("deterministic", Mode::Deterministic),
            ("randomized", Mode::Randomized),
        ] {
            let (mut scratch, mut out) = (Vec::with_capacity(128), String::with_capacity(160));
            g.bench_with_input(
                BenchmarkId::new(format!("encrypt_{name}"), len),
                &value,
                |b, v| {
                    b.iter(|| {
                        out.clear();
                        d.encrypt_into(mode, black_box(v), &mut scratch, &mut out)
                            .expect("encrypts");
                        black_box(out.len())
                    })
                },
            );
            let env = d.encrypt(mode, &value).expect("encrypts");
            let mut plain = Vec::with_capacity(128);
            g.bench_with_input(
                BenchmarkId::new(format!("decrypt_{name}"), len),
                &env,
                |b, e| {
                    b.iter(|| {
                        d.decrypt_into(black_box(e.as_bytes()), &mut plain)
                            .expect("decrypts");
                        black_box(plain.len())
                    })
                },
            );
        }
    }
    g.finish();
}

/// The proxy's per-value read path: decrypt an envelope, then mask the plaintext.
fn decrypt_then_mask(c: &mut Criterion) {
    let ks = keyset();
    let d = ks.domain("phone");
    let key = ks.pseudonym_key();
    let value = "13812345678@mail.com"; // 20 bytes
    let env = d
        .encrypt(Mode::Deterministic, value.as_bytes())
        .expect("encrypts");
    let mask = Mask::Keep { first: 3, last: 4 };
    let (mut plain, mut out) = (Vec::with_capacity(64), String::with_capacity(64));
    let mut g = c.benchmark_group("read_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decrypt_mask_20B", |b| {
        b.iter(|| {
            d.decrypt_into(black_box(env.as_bytes()), &mut plain)
                .expect("decrypts");
            out.clear();
            if let Ok(s) = std::str::from_utf8(&plain) {
                mask.apply(s, &key, &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

/// The two parts of opening a deterministic envelope of an 18-byte value, apart: base64 decode
/// of the 67-character body (the `base64-simd` crate the policy crate uses, and the `base64`
/// crate it used before) and ring's AES-256-GCM open of the decoded bytes.
fn envelope_parts(c: &mut Criterion) {
    use base64::Engine as _;
    use ring::aead;
    let d = keyset().domain("id_card");
    let env = d
        .encrypt(Mode::Deterministic, b"11010519491231002X")
        .expect("encrypts");
    let body = env.as_bytes()["pgv1:".len()..].to_vec();
    let raw = base64_simd::STANDARD_NO_PAD
        .decode_to_vec(&body)
        .expect("decodes");
    let mut g = c.benchmark_group("envelope_parts");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(128);
    g.bench_function("base64-simd decode, 67 chars", |b| {
        b.iter(|| {
            buf.clear();
            base64_simd::STANDARD_NO_PAD
                .decode_append(black_box(&body), &mut buf)
                .expect("decodes");
            black_box(buf.len())
        })
    });
    let mut slice = [0u8; 64];
    g.bench_function("base64 crate decode, 67 chars", |b| {
        b.iter(|| {
            let n = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode_slice(black_box(&body), &mut slice)
                .expect("decodes");
            black_box(n)
        })
    });
    // ring alone, with a key of its own over the same shape: 4-byte version as AAD, 12-byte
    // nonce, 18-byte plaintext, 16-byte tag.
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &[9; 32]).expect("key"));
    let nonce = [3u8; 12];
    let mut sealed = raw[16..16 + 18].to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from([0, 0, 0, 1]),
        &mut sealed,
    )
    .expect("seals");
    let mut work = sealed.clone();
    g.bench_function("ring AES-256-GCM open, 18 bytes", |b| {
        b.iter(|| {
            work.copy_from_slice(&sealed);
            let n = key
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from([0, 0, 0, 1]),
                    black_box(&mut work),
                )
                .expect("opens")
                .len();
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, masks, crypto, decrypt_then_mask, envelope_parts);
criterion_main!(benches);
