//! One row per refusal rule the analysis applies: a statement it refuses (and the rule that
//! must be named), and a near neighbour that must pass. The rules applied outside the analysis
//! have their tests where they are applied: `column_denied`, `mixed_parameter` and `no_key`
//! (`enforce/plan.rs`, through `enforce_read`/`enforce_write`), `bad_value` (`enforce/write.rs`
//! and `enforce_write`), `unreadable_session` and `catalog_unavailable` (`enforce_read`),
//! `anomaly` (`enforce_audit`), `fast_path_call` (`enforce_read`).
use super::tests::{fixture, run};
use crate::sql::Rule;

/// (rule, login refused, refused SQL, login passing, neighbour SQL)
const TABLE: &[(Rule, &str, &str, &str, &str)] = &[
    (
        Rule::ColumnUse,
        "support_app",
        "SELECT id FROM customers ORDER BY name",
        "support_app",
        "SELECT name FROM customers ORDER BY id",
    ),
    (
        Rule::RandomizedEquality,
        "owner_app",
        "SELECT id FROM shipments WHERE address = 'x'",
        "owner_app",
        "SELECT id FROM shipments WHERE sender_phone = 'x'",
    ),
    (
        Rule::OnCiphertext,
        "owner_app",
        "SELECT id FROM customers WHERE phone LIKE '138%'",
        "owner_app",
        "SELECT id FROM customers WHERE phone = '138'",
    ),
    (
        Rule::ComputedLookup,
        "owner_app",
        "SELECT id FROM customers WHERE phone = CAST(-5 AS text)",
        "owner_app",
        "SELECT id FROM customers WHERE phone = CAST('5' AS text)",
    ),
    (
        Rule::EncryptionMismatch,
        "owner_app",
        "SELECT c.id FROM customers c JOIN shipments s ON c.phone = s.id_card",
        "owner_app",
        "SELECT c.id FROM customers c JOIN shipments s ON c.phone = s.sender_phone",
    ),
    (
        Rule::ComputedWrite,
        "owner_app",
        "INSERT INTO customers (id, phone) VALUES (1, lower('X'))",
        "owner_app",
        "INSERT INTO customers (id, phone) VALUES (1, 'x')",
    ),
    (
        Rule::CiphertextMoved,
        "owner_app",
        "INSERT INTO orders (id, note) SELECT id, phone FROM customers",
        "owner_app",
        "INSERT INTO orders (id, note) SELECT id, name FROM customers",
    ),
    (
        Rule::UnlocatableValue,
        "owner_app",
        "INSERT INTO customers (id, phone) VALUES (1, text '138')",
        "owner_app",
        "INSERT INTO customers (id, phone) VALUES (1, '138'::text)",
    ),
    (
        Rule::ExposingObject,
        "support_app",
        "SELECT phone FROM v_contacts",
        "dispatch_app",
        "SELECT phone FROM v_contacts",
    ),
    (
        Rule::ExposingObject,
        "support_app",
        "SELECT first_name()",
        "owner_app",
        "SELECT first_name()",
    ),
    (
        Rule::RunsSqlText,
        "support_app",
        "SELECT query_to_xml('select name from customers', true, true, '')",
        "support_app",
        "SELECT xmlforest(city) FROM customers",
    ),
    (
        Rule::OpaqueCode,
        "support_app",
        "CREATE VIEW v AS SELECT name FROM customers",
        "owner_app",
        "CREATE VIEW v AS SELECT name FROM customers",
    ),
    (
        Rule::OpaqueCode,
        "support_app",
        "DO $$ BEGIN PERFORM name FROM customers; END $$",
        "owner_app",
        "DO $$ BEGIN PERFORM name FROM customers; END $$",
    ),
    (
        Rule::SessionChange,
        "support_app",
        "SET ROLE owner_app; SELECT name FROM customers",
        "support_app",
        "SET ROLE owner_app; SELECT 1",
    ),
    (
        Rule::SessionChange,
        "support_app",
        "SELECT set_config('role', 'owner_app', false); SELECT phone FROM customers",
        "support_app",
        "SELECT set_config('role', 'owner_app', false)",
    ),
    (
        Rule::SessionChange,
        "support_app",
        "SET standard_conforming_strings = off; SELECT 1",
        "support_app",
        "SET application_name = 'crm'; SELECT 1",
    ),
    (
        Rule::SessionChange,
        "support_app",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "support_app",
        "SELECT set_config('search_path', 'public', false)",
    ),
    (
        Rule::AmbiguousName,
        "support_app",
        "SELECT name FROM generate_series(1, 2) g",
        "support_app",
        "SELECT g FROM generate_series(1, 2) g",
    ),
    (
        Rule::Unanalysable,
        "support_app",
        "SELECT name FROM customers WHERE",
        "support_app",
        "SELECT name FROM customers WHERE id = 1",
    ),
    (
        Rule::Unsupported,
        "support_app",
        "DECLARE c CURSOR FOR SELECT name FROM customers",
        "support_app",
        "DECLARE c CURSOR FOR SELECT id FROM customers",
    ),
    (
        Rule::NeedsClear,
        "support_app",
        "EXPLAIN SELECT name FROM customers",
        "owner_app",
        "EXPLAIN SELECT name FROM customers",
    ),
];

#[test]
fn each_rule_refuses_its_case_and_passes_its_neighbour() {
    let f = fixture();
    for (rule, refused_login, refused, passing_login, neighbour) in TABLE {
        match run(&f, refused_login, refused) {
            Err(r) => assert_eq!(
                r.rule,
                *rule,
                "{refused} as {refused_login}: refused by {} ({}), expected {}",
                r.rule.name(),
                r.message,
                rule.name()
            ),
            Ok(_) => panic!(
                "{refused} as {refused_login} passed; expected {}",
                rule.name()
            ),
        }
        if let Err(r) = run(&f, passing_login, neighbour) {
            panic!(
                "{neighbour} as {passing_login} was refused ({}: {}); it is the near neighbour of {}",
                r.rule.name(),
                r.message,
                rule.name()
            );
        }
    }
}

/// Refusals applied outside the analysis, with example arguments: (where it is applied and
/// tested, the refusal).
fn applied_elsewhere() -> Vec<(&'static str, crate::sql::Refusal)> {
    use crate::sql::Refusal;
    vec![
        (
            "`enforce/plan.rs` (tests: enforce_read)",
            Refusal::column_denied("public.customers.id_card", "default for level core", 0),
        ),
        (
            "`enforce/write.rs` (tests: enforce_write)",
            Refusal::mixed_parameter(1, "public.customers.phone", "public.customers.address", 1),
        ),
        (
            "`enforce/write.rs` (tests: enforce_write)",
            Refusal::no_key("phone", "public.customers.phone", 1),
        ),
        (
            "`enforce/write.rs`, with the texts of its `WriteError` (tests: enforce_write); for \
             example a value for an encrypted integer column that is not an integer",
            Refusal::bad_value(
                crate::protocol::sqlstate::INVALID_TEXT_REPRESENTATION,
                "invalid value for encrypted column public.customers.points: invalid input \
                 syntax for type integer: \"x\""
                    .into(),
                None,
                2,
            ),
        ),
        (
            "`enforce/enforcer.rs` (tests: enforce_read)",
            Refusal::unreadable_session(),
        ),
        (
            "`session/enforced/client.rs`, Parse and Bind in a GBK, GB18030, EUC_CN or BIG5 session (tests: adversarial)",
            Refusal::legacy_name("BIG5"),
        ),
        (
            "`sql/analyze/expr.rs`, a call of a function whose body may change how SQL is read (tests: adversarial)",
            Refusal::reading_function("set_setting"),
        ),
        (
            "`enforce/enforcer.rs` (tests: enforce_read)",
            Refusal::catalog_unavailable("tms", "connection refused"),
        ),
        (
            "`enforce/anomaly.rs` (tests: enforce_audit)",
            Refusal::anomaly_limit(
                "bulk-export",
                "support_app",
                "read 51 rows of level important",
                std::time::Duration::from_secs(60),
                50,
            ),
        ),
        (
            "`enforce/frontend.rs` (tests: transparency)",
            Refusal::fast_path_call(),
        ),
        (
            "`enforce/frontend.rs` (tests: anomaly_evasion)",
            Refusal::fetch_from_portal(),
        ),
        (
            "`enforce/plan.rs` (tests: enforce_write)",
            Refusal::parameter_used_elsewhere(2, "public.customers.phone", 1),
        ),
        (
            "`enforce/plan.rs` (tests: anomaly_evasion)",
            Refusal::anomaly_packing("bulk", "important"),
        ),
        (
            "`sql/analyze/mod.rs` (tests: anomaly_evasion)",
            Refusal::too_complex(50_010, 50_000),
        ),
        (
            "`session/enforced/client.rs` (tests: roles, adversarial)",
            Refusal::unsettled_reading(),
        ),
        (
            "`session/enforced/client.rs` (tests: roles)",
            Refusal::role_unknown("57014"),
        ),
        (
            "`sql/analyze/from.rs`, after one more catalog read (tests: transparency)",
            Refusal::unknown_protected_table("public.customers"),
        ),
        (
            "`sql/analyze/from.rs`, when the catalog lacks a policy column (tests: enforce_read)",
            Refusal::policy_mismatch("public.customers", &["phone".to_string()]),
        ),
    ]
}

/// docs/refusals.md, as the analysis and the constructors produce it.
fn refusal_reference() -> String {
    let f = fixture();
    let mut out = String::from(
        "# What pgveil refuses, rule by rule\n\n\
         Generated by `proxy/src/sql/analyze/rule_table.rs` from the refusal rules' own code: a \
         test fails when this file and the code disagree (regenerate with \
         `PGVEIL_WRITE_DOCS=1 cargo test -p pgveil --lib refusal_reference`). Each rule of the \
         analysis is shown with a statement it refuses, the exact error the client gets, and a \
         near neighbour it passes, against the test policy of \
         `proxy/src/sql/analyze/tests.rs` (`support_app` reads important columns masked, \
         `owner_app` everything in clear; `customers.phone` and `id_card` are deterministic, \
         `shipments.address` randomized). Why each rule exists, and what it protects: \
         [security.md](security.md).\n\n## Rules of the analysis\n\n",
    );
    for (rule, refused_login, refused, passing_login, neighbour) in TABLE {
        let Err(r) = run(&f, refused_login, refused) else {
            continue;
        };
        out.push_str(&format!(
            "### `{}` ({})\n\n- refused, as `{refused_login}`: `{refused}`\n- error: {}\n",
            rule.name(),
            r.sqlstate,
            r.message
        ));
        if let Some(h) = &r.hint {
            out.push_str(&format!("- hint: {h}\n"));
        }
        out.push_str(&format!(
            "- passes, as `{passing_login}`: `{neighbour}`\n\n"
        ));
    }
    out.push_str("## Rules applied outside the analysis\n\nWith example arguments.\n\n");
    for (place, r) in applied_elsewhere() {
        out.push_str(&format!(
            "### `{}` ({})\n\n- applied in {place}\n- error: {}\n",
            r.rule.name(),
            r.sqlstate,
            r.message
        ));
        if let Some(h) = &r.hint {
            out.push_str(&format!("- hint: {h}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn refusal_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/refusals.md");
    let want = refusal_reference();
    if std::env::var_os("PGVEIL_WRITE_DOCS").is_some() {
        if let Err(e) = std::fs::write(&path, &want) {
            panic!("write {}: {e}", path.display());
        }
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/refusals.md is out of date with the refusal rules; regenerate it with \
         PGVEIL_WRITE_DOCS=1 cargo test -p pgveil --lib refusal_reference"
    );
}

#[test]
fn every_rule_is_in_the_reference() {
    let text = refusal_reference();
    for rule in Rule::ALL {
        assert!(
            text.contains(&format!("### `{}` (", rule.name())),
            "{} has no entry in docs/refusals.md",
            rule.name()
        );
    }
}
