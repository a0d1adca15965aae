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
use pgveil_policy::crypto::{DomainCipher, KeySet, MasterKey, Mode};
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

/// The 8-column row plan: 3 columns masked (`name`, `phone`, `id_card`); `phone` and `id_card`
/// decrypted first when their ciphers are given.
fn row_plan(phone: Option<Arc<DomainCipher>>, id_card: Option<Arc<DomainCipher>>) -> RowPlan {
    let op = |column, cipher, mask| {
        Some(ColumnOp {
            column,
            level: 1,
            action: Action::Mask,
            type_oid: 25,
            plain_type: 25,
            plain_typmod: -1,
            cipher,
            op: Op::Mask(Mask::parse(mask).expect("mask")),
        })
    };
    RowPlan {
        ops: vec![
            None,
            op(0, None, "cn_name"),
            op(1, phone, "cn_mobile"),
            op(2, id_card, "cn_id_card"),
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
        width: None,
    }
}

/// A DataRow body of `phone` and `id_card` as given (envelopes or plaintext) among 6 others.
fn row_body(phone: &[u8], id_card: &[u8]) -> BytesMut {
    let values: [&[u8]; 8] = [
        b"42",
        "王小明".as_bytes(),
        phone,
        id_card,
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
    body
}

fn data_row(c: &mut Criterion) {
    let keys = KeySet::new(vec![(1, MasterKey::from_bytes([7; 32]))], 1).expect("keys");
    let phone = Arc::new(keys.domain("phone"));
    let id_card = Arc::new(keys.domain("id_card"));
    let key = keys.pseudonym_key();
    let (phone_plain, id_plain) = (&b"13812345678"[..], &b"11010519491231002X"[..]);
    let phone_env = phone
        .encrypt(Mode::Deterministic, phone_plain)
        .expect("encrypt");
    let id_env = id_card
        .encrypt(Mode::Deterministic, id_plain)
        .expect("encrypt");
    let cases = [
        (
            "DataRow, 3 of 8 columns (2 decrypt+mask, 1 mask)",
            row_plan(Some(phone), Some(id_card)),
            row_body(phone_env.as_bytes(), id_env.as_bytes()),
        ),
        // The same row and masks on plaintext (pgbench.sh's pgveil-mask target): the
        // transform without decryption.
        (
            "DataRow, 3 of 8 columns masked, no decryption",
            row_plan(None, None),
            row_body(phone_plain, id_plain),
        ),
    ];
    let mut g = c.benchmark_group("transform");
    g.throughput(Throughput::Elements(3));
    let (mut scratch, mut tally, mut out) = (Scratch::default(), Tally::default(), BytesMut::new());
    for (name, plan, body) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                rows::data_row(
                    black_box(body),
                    plan,
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
    }
    g.finish();
}

criterion_group!(benches, analysis, data_row);
criterion_main!(benches);
