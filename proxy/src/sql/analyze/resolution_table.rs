//! Name resolution in ORDER BY, GROUP BY, DISTINCT ON, HAVING and window clauses, checked
//! against PostgreSQL 15's own: `proxy/tests/data/pg15_name_resolution.tsv` holds 135
//! statements with the column the server resolved each clause to (from `EXPLAIN (VERBOSE)`'s
//! sort and group keys, on a `customers(id, name, phone, city)` table). A statement whose
//! sort or group key is a protected column (or the whole row) must be refused for a login
//! that may only read that column masked; one that names no protected column at all must pass.
use super::tests::{fixture, run};

const CASES: &str = include_str!("../../../tests/data/pg15_name_resolution.tsv");

/// Whether the server's key for this case is a protected column of the fixture.
fn key_is_protected(resolved: &str, evidence: &str) -> bool {
    let resolved = resolved.split(" (").next().unwrap_or(resolved);
    let keys = evidence.split(" || rows").next().unwrap_or("");
    let named = |s: &str| s.contains("name") || s.contains("phone") || s.contains("whole-row");
    named(resolved)
        || (keys.contains("Key:") && (keys.contains(".name") || keys.contains(".phone")))
}

#[test]
fn clauses_resolve_names_as_postgres_does() {
    let f = fixture();
    let mut checked = 0;
    for line in CASES.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [clause, sql, resolved, evidence] = cols[..] else {
            panic!("bad line: {line}");
        };
        if resolved.starts_with("error") {
            continue;
        }
        let outcome = run(&f, "support_app", sql);
        if key_is_protected(resolved, evidence) {
            assert!(
                outcome.is_err(),
                "{clause}: `{sql}` passed, but PostgreSQL resolves it to {resolved} ({evidence})"
            );
            checked += 1;
        } else if !sql.contains("name") && !sql.contains("phone") && !sql.contains('*') {
            if let Err(r) = outcome {
                panic!(
                    "{clause}: `{sql}` was refused ({}), but its key is {resolved}",
                    r.message
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 55, "only {checked} cases checked");
}
