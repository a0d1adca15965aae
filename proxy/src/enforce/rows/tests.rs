use super::*;
use crate::protocol::encoding::ClientEncoding;
use pgveil_policy::crypto::{KeySet, MasterKey, Mode};
use proptest::prelude::*;

fn keys() -> KeySet {
    KeySet::new(vec![(1, MasterKey::from_bytes([7; 32]))], 1).expect("keys")
}

fn column(cipher: Option<Arc<DomainCipher>>, op: Op) -> Option<ColumnOp> {
    Some(ColumnOp {
        column: 0,
        level: 0,
        action: Action::Mask,
        type_oid: TEXT_OID,
        plain_type: TEXT_OID,
        plain_typmod: -1,
        cipher,
        op,
    })
}

fn plan(ops: Vec<Option<ColumnOp>>) -> RowPlan {
    RowPlan {
        qualified: vec!["public.t.c".into(); ops.len()],
        ops,
        ..RowPlan::default()
    }
}

/// A DataRow body; `None` is SQL NULL.
fn body(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b
}

/// The values of a whole DataRow frame.
fn values(frame: &[u8]) -> Vec<Option<Vec<u8>>> {
    assert_eq!(frame[0], b'D');
    let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    assert_eq!(len + 1, frame.len(), "frame length");
    let n = i16::from_be_bytes([frame[5], frame[6]]) as usize;
    let mut at = 7;
    let mut out = Vec::new();
    for _ in 0..n {
        let l = i32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
        at += 4;
        if l < 0 {
            out.push(None);
        } else {
            out.push(Some(frame[at..at + l as usize].to_vec()));
            at += l as usize;
        }
    }
    assert_eq!(at, frame.len(), "no bytes after the last column");
    out
}

fn transform(plan: &RowPlan, body: &[u8]) -> Result<BytesMut, RowError> {
    transform_in(ClientEncoding::Utf8, plan, body)
}

fn transform_in(enc: ClientEncoding, plan: &RowPlan, body: &[u8]) -> Result<BytesMut, RowError> {
    let ks = keys();
    let mut out = BytesMut::from(&b"prefix"[..]);
    data_row(
        body,
        plan,
        &[],
        &ks.pseudonym_key(),
        &mut Scratch {
            encoding: enc,
            ..Scratch::default()
        },
        &mut Tally::default(),
        &mut out,
    )?;
    assert_eq!(&out[..6], b"prefix", "appends after what `out` held");
    Ok(out.split_off(6))
}

#[test]
fn untouched_runs_nulls_and_transformed_columns_anywhere() {
    let ks = keys();
    let phone = Arc::new(ks.domain("phone"));
    let env = phone.encrypt(Mode::Deterministic, b"13812345678").unwrap();
    let mobile = || Op::Mask(Mask::parse("cn_mobile").unwrap());
    // Transformed columns first, in the middle, last, next to each other, and NULL.
    let p = plan(vec![
        column(Some(phone.clone()), mobile()),
        None,
        None,
        column(None, Op::Null),
        column(Some(phone.clone()), Op::Plain),
        None,
        column(Some(phone.clone()), mobile()),
        column(None, mobile()),
    ]);
    let row = body(&[
        Some(env.as_bytes()),
        Some(b"untouched"),
        None,
        Some(b"gone"),
        Some(env.as_bytes()),
        Some(b""),
        None,
        Some(b"13900000000"),
    ]);
    let out = transform(&p, &row).unwrap();
    assert_eq!(
        values(&out),
        vec![
            Some(b"138****5678".to_vec()),
            Some(b"untouched".to_vec()),
            None,
            None,
            Some(b"13812345678".to_vec()),
            Some(Vec::new()),
            None,
            Some(b"139****0000".to_vec()),
        ]
    );
    // Columns past the plan's end pass untouched; so does a row of none.
    let out = transform(&plan(vec![]), &body(&[Some(b"a"), None])).unwrap();
    assert_eq!(values(&out), vec![Some(b"a".to_vec()), None]);
    let out = transform(&p, &body(&[])).unwrap();
    assert_eq!(values(&out), Vec::<Option<Vec<u8>>>::new());
}

#[test]
fn malformed_rows_are_refused() {
    let p = plan(vec![None, column(None, Op::Null)]);
    let good = body(&[Some(b"abc"), Some(b"secret")]);
    for cut in 0..good.len() {
        assert!(
            matches!(transform(&p, &good[..cut]), Err(RowError::Malformed(_))),
            "cut at {cut}"
        );
    }
    // A length that runs past the end.
    let mut bad = body(&[Some(b"abc")]);
    bad[2..6].copy_from_slice(&1000i32.to_be_bytes());
    assert!(matches!(transform(&p, &bad), Err(RowError::Malformed(_))));
}

proptest! {
    /// Whatever the row and plan, untouched columns come out byte for byte, nulled ones
    /// as NULL, masked ones masked; the frame is well formed.
    #[test]
    fn rows_keep_untouched_columns_exactly(
        cols in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0u8..3),
            0..12,
        ),
    ) {
        let ops = cols
            .iter()
            .map(|(_, k)| match k {
                0 => None,
                1 => column(None, Op::Null),
                _ => column(None, Op::Mask(Mask::Redact)),
            })
            .collect();
        let p = plan(ops);
        let vals: Vec<Option<&[u8]>> = cols.iter().map(|(v, _)| v.as_deref()).collect();
        let out = transform(&p, &body(&vals)).unwrap();
        let got = values(&out);
        prop_assert_eq!(got.len(), cols.len());
        for ((v, k), g) in cols.iter().zip(&got) {
            match (k, v) {
                (_, None) | (1, _) => prop_assert_eq!(g, &None),
                (0, Some(v)) => prop_assert_eq!(g.as_deref(), Some(&v[..])),
                (_, Some(v)) => {
                    let want = Mask::Redact.apply_to_string(
                        &String::from_utf8_lossy(v),
                        &keys().pseudonym_key(),
                    );
                    prop_assert_eq!(g.as_deref(), Some(want.as_bytes()));
                }
            }
        }
    }
}

#[test]
fn values_arrive_and_leave_in_the_client_encoding() {
    let ks = keys();
    let names = Arc::new(ks.domain("name"));
    let env = names
        .encrypt(Mode::Deterministic, "张伟".as_bytes())
        .unwrap();
    let name = || Op::Mask(Mask::parse("cn_name").unwrap());
    let p = plan(vec![
        column(Some(names.clone()), Op::Plain),
        column(Some(names.clone()), name()),
        column(None, name()),
        None,
    ]);
    let gbk = ClientEncoding::Gbk;
    let stored = gbk.encode("王芳芳").unwrap().into_owned();
    let row = body(&[
        Some(env.as_bytes()),
        Some(env.as_bytes()),
        Some(&stored),
        Some(b"\xd6\xd0"),
    ]);
    let out = values(&transform_in(gbk, &p, &row).unwrap());
    let read = |v: &Option<Vec<u8>>| gbk.decode(v.as_deref().unwrap()).unwrap().into_owned();
    // Decrypted: the UTF-8 plaintext in GBK; masked: masked as text, then GBK.
    assert_eq!(read(&out[0]), "张伟");
    let masked = |v: &str| {
        let mut o = String::new();
        Mask::parse("cn_name")
            .unwrap()
            .apply(v, &ks.pseudonym_key(), &mut o);
        o
    };
    assert_eq!(read(&out[1]), masked("张伟"));
    assert_eq!(read(&out[2]), masked("王芳芳"));
    assert_ne!(read(&out[2]), "王芳芳");
    // Untouched: the server's bytes.
    assert_eq!(out[3].as_deref(), Some(&b"\xd6\xd0"[..]));
    // A decrypted character GBK lacks: the server's own 22P05.
    let odd = names
        .encrypt(Mode::Deterministic, "\u{1e3f}".as_bytes())
        .unwrap();
    let p = plan(vec![column(Some(names.clone()), Op::Plain)]);
    let e = transform_in(gbk, &p, &body(&[Some(odd.as_bytes())])).unwrap_err();
    assert!(matches!(e, RowError::Untranslatable(_)), "{e}");
}
