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
