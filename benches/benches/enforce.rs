//! Enforcement micro-benchmarks: the fast path plus a parse-cache hit, a cold analysis of a
//! three-table join, and the DataRow transform. Run:
//! `cargo bench -p pgveil-benches --bench enforce`.
use std::hint::black_box;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgveil::catalog::snapshot::RawCatalog;
use pgveil::catalog::Snapshot;
use pgveil::enforce::rows::{self, ColumnOp, Op, RowPlan, Scratch, Tally};
use pgveil::sql::{self, Env, ParseCache, Scanner};
use pgveil_policy::crypto::{KeySet, MasterKey, Mode};
use pgveil_policy::mask::Mask;
use pgveil_policy::model::Action;
use pgveil_policy::CompiledPolicy;

const POLICY: &str = include_str!("../../examples/logistics/policy.yaml");
const SCHEMA: &str = include_str!("../../examples/logistics/schema.sql");
const JOIN: &str = "SELECT c.name, c.phone, w.waybill_no, s.status FROM customers c \
    JOIN shipments s ON s.customer_id = c.id JOIN waybills w ON w.shipment_id = s.id \
    WHERE s.status = 'delivered' AND c.id = $1 ORDER BY w.created_at DESC LIMIT 20";

fn fixture() -> (Arc<CompiledPolicy>, Snapshot) {
    let policy = CompiledPolicy::from_str("policy.yaml", POLICY).expect("example policy");
    let tables = sql::ddl::tables(SCHEMA).expect("example schema");
    let raw = RawCatalog::from_tables(tables.into_iter().map(|t| (t.schema, t.name, t.columns)));
    let snapshot = Snapshot::build(raw, &policy);
    (policy, snapshot)
}

fn analysis(c: &mut Criterion) {
    let (policy, snapshot) = fixture();
    let roles = policy.resolve_roles("support_app", &[] as &[&str]);
    let env = Env {
        policy: &policy,
        snapshot: &snapshot,
        roles: &roles,
    };
    let scanner = Scanner::new(&policy, &snapshot);
    let mut g = c.benchmark_group("analysis");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fast path (no protected name)", |b| {
        let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        b.iter(|| black_box(scanner.needs_analysis(black_box(sql))))
    });
    let cache = ParseCache::new(1000);
    cache.insert(JOIN, 1, &roles, Arc::new(sql::analyze(JOIN, &env)));
    g.bench_function("scan + parse-cache hit (3-table join)", |b| {
        b.iter(|| {
            assert!(scanner.needs_analysis(JOIN.as_bytes()));
            black_box(cache.get(black_box(JOIN), 1, &roles).is_some())
        })
    });
    g.bench_function("cold analysis (3-table join)", |b| {
        b.iter(|| black_box(sql::analyze(black_box(JOIN), &env).is_ok()))
    });
    g.finish();
}

fn data_row(c: &mut Criterion) {
    let keys = KeySet::new(vec![(1, MasterKey::from_bytes([7; 32]))], 1).expect("keys");
    let phone = Arc::new(keys.domain("phone"));
    let id_card = Arc::new(keys.domain("id_card"));
    let key = keys.pseudonym_key();
    let op = |column, cipher: Option<Arc<_>>, op| {
        Some(ColumnOp {
            column,
            level: 1,
            action: Action::Mask,
            type_oid: 25,
            plain_type: 25,
            cipher,
            op,
        })
    };
    // 8 columns; 3 transformed: decrypt + mask, decrypt + mask, mask.
    let plan = RowPlan {
        ops: vec![
            None,
            op(0, None, Op::Mask(Mask::parse("cn_name").expect("mask"))),
            op(
                1,
                Some(phone.clone()),
                Op::Mask(Mask::parse("cn_mobile").expect("mask")),
            ),
            op(
                2,
                Some(id_card.clone()),
                Op::Mask(Mask::parse("cn_id_card").expect("mask")),
            ),
            None,
            None,
            None,
            None,
        ],
        qualified: vec![String::new(); 8],
        copy: None,
        audit: None,
        anomaly: Vec::new(),
        roles: Default::default(),
    };
    let phone_env = phone
        .encrypt(Mode::Deterministic, b"13812345678")
        .expect("encrypt");
    let id_env = id_card
        .encrypt(Mode::Deterministic, b"11010519491231002X")
        .expect("encrypt");
    let values: [&[u8]; 8] = [
        b"42",
        "王小明".as_bytes(),
        phone_env.as_bytes(),
        id_env.as_bytes(),
        b"delivered",
        b"2026-11-23 10:00:00+08",
        b"SF1234567890123",
        "北京".as_bytes(),
    ];
    let mut body = BytesMut::new();
    body.put_i16(values.len() as i16);
    for v in values {
        body.put_i32(v.len() as i32);
        body.put_slice(v);
    }
    let mut g = c.benchmark_group("transform");
    g.throughput(Throughput::Elements(3));
    let (mut scratch, mut tally, mut out) = (Scratch::default(), Tally::default(), BytesMut::new());
    g.bench_function("DataRow, 3 of 8 columns (2 decrypt+mask, 1 mask)", |b| {
        b.iter(|| {
            out.clear();
            rows::data_row(
                black_box(&body),
                &plan,
                &[],
                &key,
                &mut scratch,
                &mut tally,
                &mut out,
            )
            .expect("transform");
            black_box(out.len())
        })
    });
    // The same row and masks on plaintext (pgbench.sh's pgveil-mask target): the transform
    // without decryption.
    let plain_plan = RowPlan {
        ops: plan
            .ops
            .iter()
            .map(|o| {
                o.as_ref().map(|o| ColumnOp {
                    column: o.column,
                    level: o.level,
                    action: o.action,
                    type_oid: o.type_oid,
                    plain_type: o.plain_type,
                    cipher: None,
                    op: match &o.op {
                        Op::Mask(m) => Op::Mask(m.clone()),
                        Op::Plain => Op::Plain,
                        Op::Null => Op::Null,
                    },
                })
            })
            .collect(),
        qualified: vec![String::new(); 8],
        copy: None,
        audit: None,
        anomaly: Vec::new(),
        roles: Default::default(),
    };
    let mut plain_values = values;
    plain_values[2] = b"13812345678";
    plain_values[3] = b"11010519491231002X";
    let mut plain_body = BytesMut::new();
    plain_body.put_i16(plain_values.len() as i16);
    for v in plain_values {
        plain_body.put_i32(v.len() as i32);
        plain_body.put_slice(v);
    }
    g.bench_function("DataRow, 3 of 8 columns masked, no decryption", |b| {
        b.iter(|| {
            out.clear();
            rows::data_row(
                black_box(&plain_body),
                &plain_plan,
                &[],
                &key,
                &mut scratch,
                &mut tally,
                &mut out,
            )
            .expect("transform");
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, analysis, data_row);
criterion_main!(benches);
