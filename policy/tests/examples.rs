//! The shipped example policies load cleanly and decide what their comments say.
use pgveil_policy::{Action, CompiledPolicy, Usage};
use std::path::Path;

fn load(name: &str) -> std::sync::Arc<CompiledPolicy> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("policy.yaml");
    match CompiledPolicy::from_path(&p) {
        Ok(c) => c,
        Err(d) => panic!("{d}"),
    }
}

#[test]
fn logistics_loads_and_decides() {
    let p = load("logistics");
    let id_card = p.column_id("public.customers", "id_card").unwrap();
    let phone = p.column_id("customers", "phone").unwrap();
    let dispatcher = p.resolve_roles("dispatch_app", &[] as &[&str]);
    assert_eq!(p.decide(&dispatcher, id_card).action, Action::Mask);
    assert_eq!(p.decide(&dispatcher, phone).action, Action::Allow);
    let support = p.resolve_roles("support_night", &[] as &[&str]);
    assert_eq!(p.role_names(&support), ["support"]);
    assert_eq!(p.decide(&support, id_card).action, Action::Deny);
    assert!(p
        .check_usage(&support, phone, Usage::Predicate { equality: true })
        .is_ok());
    assert!(p
        .check_usage(&support, phone, Usage::Predicate { equality: false })
        .is_err());
    let auditor = p.resolve_roles("someone", &["compliance"]);
    assert_eq!(p.decide(&auditor, id_card).action, Action::Allow);
    assert_eq!(
        p.decide(&auditor, phone).action,
        Action::Mask,
        "important default"
    );
}

#[test]
fn travel_loads_and_decides() {
    let p = load("travel");
    let card = p.column_id("public.bookings", "card_number").unwrap();
    let agent = p.resolve_roles("agent_42", &[] as &[&str]);
    let err = p.check_usage(&agent, card, Usage::Projection).unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied for column public.bookings.card_number: reading it is not allowed (level core, action deny; rule 5 \"agent-no-cards\" (line 33))"
    );
    let passport = p.column_id("public.travellers", "passport_no").unwrap();
    assert_eq!(p.decide(&agent, passport).action, Action::Mask);
    assert!(p
        .check_usage(&agent, passport, Usage::Predicate { equality: true })
        .is_ok());
}
