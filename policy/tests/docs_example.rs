//! The complete example and the worked-example table in docs/policy.md stay true.
use pgveil_policy::{Action, CompiledPolicy, Usage};

fn doc_policy() -> std::sync::Arc<CompiledPolicy> {
    let doc = include_str!("../../docs/policy.md");
    let start = doc.find("## A complete example").unwrap();
    let block = &doc[start..];
    let body = &block[block.find("```yaml\n").unwrap() + 8..];
    let yaml = &body[..body.find("```").unwrap()];
    CompiledPolicy::from_str("docs/policy.md", yaml).unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn worked_examples() {
    let p = doc_policy();
    let c = |t: &str, c: &str| p.column_id(t, c).unwrap();
    let (id, phone, addr) = (
        c("customers", "id_card"),
        c("customers", "phone"),
        c("customers", "address"),
    );
    let act =
        |login: &str, groups: &[&str], col| p.decide(&p.resolve_roles(login, groups), col).action;
    assert_eq!(
        [
            act("dispatch_app", &[], id),
            act("dispatch_app", &[], phone),
            act("dispatch_app", &[], addr)
        ],
        [Action::Mask, Action::Allow, Action::Allow]
    );
    assert_eq!(
        [
            act("support_7", &[], id),
            act("support_7", &[], phone),
            act("support_7", &[], addr)
        ],
        [Action::Deny, Action::Mask, Action::Mask]
    );
    assert_eq!(
        [
            act("alice", &["compliance"], id),
            act("alice", &["compliance"], phone)
        ],
        [Action::Allow, Action::Mask]
    );
    assert_eq!(
        [act("bi_reader", &[], id), act("bi_reader", &[], phone)],
        [Action::Deny, Action::Mask]
    );
    assert_eq!(
        [
            act("bob", &["dispatch_app", "support_app"], id),
            act("bob", &["dispatch_app", "support_app"], phone)
        ],
        [Action::Mask, Action::Allow]
    );
    let sup = p.resolve_roles("support_7", &[] as &[&str]);
    assert!(p
        .check_usage(&sup, phone, Usage::Predicate { equality: true })
        .is_ok());
    assert!(p
        .check_usage(&sup, addr, Usage::Predicate { equality: true })
        .is_err());
    let e1 = p
        .check_usage(&sup, id, Usage::Projection)
        .unwrap_err()
        .to_string();
    let e2 = p
        .check_usage(&sup, phone, Usage::GroupOrder)
        .unwrap_err()
        .to_string();
    let doc = include_str!("../../docs/policy.md");
    assert!(doc.contains(&e1), "docs/policy.md should quote: {e1}");
    assert!(doc.contains(&e2), "docs/policy.md should quote: {e2}");
}
