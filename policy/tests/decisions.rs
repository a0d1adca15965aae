//! Rule precedence, multi-role combination, usages and the lookup exception.
use pgveil_policy::compile::Source;
use pgveil_policy::mask::PseudonymKey;
use pgveil_policy::{Action, CompiledPolicy, RoleSet, Transform, Usage};
use std::sync::Arc;

const POLICY: &str = r#"version: 1
levels: [core, important, general]
roles:
  dispatcher: [dispatch_app]
  support:    [support_app, "support_*"]
  analyst:    [bi_reader]
  auditor:    [compliance]
  contractor: [ext_*]
tables:
  public.customers:
    id_card:  { level: core,      kind: cn_id_card, encrypt: deterministic }
    phone:    { level: important, kind: cn_mobile,  encrypt: deterministic }
    name:     { level: important, kind: cn_name }
    address:  { level: important, kind: address,    encrypt: randomized }
    city:     { level: general }
  public.bookings:
    passport_no: { level: core, kind: passport, encrypt: randomized, mask: "keep(1,2)" }
rules:
  - { roles: [dispatcher], level: important, action: allow }
  - { roles: [dispatcher], level: core,      action: mask }
  - { roles: [support],    level: important, action: mask, lookup: true }
  - { roles: [support],    kinds: [address], action: null }
  - { roles: [support],    columns: [customers.name], action: allow }
  - { roles: [auditor],    columns: [public.customers.id_card], action: allow }
  - { roles: [analyst],    kinds: [cn_mobile], action: hash }
  - { roles: [contractor], level: important, action: mask }
  - { roles: [contractor], columns: [public.customers.phone], action: deny, name: no-phones-for-contractors }
  - { roles: [contractor], columns: [public.customers.name], action: allow }
  - { roles: ["*"],        level: core,      action: deny }
defaults: { core: deny, important: mask, general: allow }
"#;

fn policy() -> Arc<CompiledPolicy> {
    CompiledPolicy::from_str("t.yaml", POLICY).unwrap_or_else(|d| panic!("{d}"))
}

fn roles(p: &CompiledPolicy, login: &str, groups: &[&str]) -> RoleSet {
    p.resolve_roles(login, groups)
}

fn col(p: &CompiledPolicy, c: &str) -> usize {
    let (t, c) = c.rsplit_once('.').unwrap();
    p.column_id(t, c).unwrap()
}

#[test]
fn role_resolution() {
    let p = policy();
    assert_eq!(
        p.role_names(&roles(&p, "dispatch_app", &[])),
        ["dispatcher"]
    );
    assert_eq!(p.role_names(&roles(&p, "support_7", &[])), ["support"]);
    assert_eq!(
        p.role_names(&roles(&p, "alice", &["compliance", "bi_reader"])),
        ["analyst", "auditor"]
    );
    assert!(roles(&p, "nobody", &[]).is_empty());
}

#[test]
fn design_example_semantics() {
    let p = policy();
    let disp = roles(&p, "dispatch_app", &[]);
    // Named rules take precedence over the wildcard deny: dispatcher masks core.
    assert_eq!(
        p.decide(&disp, col(&p, "customers.id_card")).action,
        Action::Mask
    );
    assert_eq!(
        p.decide(&disp, col(&p, "customers.phone")).action,
        Action::Allow
    );
    // Support has no core rule: the wildcard deny applies.
    let sup = roles(&p, "support_app", &[]);
    let d = p.decide(&sup, col(&p, "customers.id_card"));
    assert_eq!((d.action, d.source), (Action::Deny, Source::Wildcard(10)));
    // Most specific wins: kind rule over level rule, column rule over level rule.
    assert_eq!(
        p.decide(&sup, col(&p, "customers.address")).action,
        Action::Null
    );
    assert_eq!(
        p.decide(&sup, col(&p, "customers.name")).action,
        Action::Allow
    );
    assert_eq!(
        p.decide(&sup, col(&p, "customers.phone")).action,
        Action::Mask
    );
    // Auditor: column allow beats the wildcard; other core columns are denied.
    let aud = roles(&p, "compliance", &[]);
    assert_eq!(
        p.decide(&aud, col(&p, "customers.id_card")).action,
        Action::Allow
    );
    assert_eq!(
        p.decide(&aud, col(&p, "bookings.passport_no")).action,
        Action::Deny
    );
    // No policy role: wildcard, then defaults.
    let none = roles(&p, "nobody", &[]);
    assert_eq!(
        p.decide(&none, col(&p, "customers.phone")).source,
        Source::Default
    );
    assert_eq!(
        p.decide(&none, col(&p, "customers.phone")).action,
        Action::Mask
    );
    assert_eq!(
        p.decide(&none, col(&p, "customers.city")).action,
        Action::Allow
    );
    assert_eq!(
        p.decide(&none, col(&p, "customers.id_card")).action,
        Action::Deny
    );
}

#[test]
fn deny_beats_more_specific_rules_of_the_same_role() {
    let p = policy();
    let ext = roles(&p, "ext_acme", &[]);
    // contractor: level mask + column deny on phone -> deny.
    let d = p.decide(&ext, col(&p, "customers.phone"));
    assert_eq!((d.action, d.source), (Action::Deny, Source::Rule(8)));
    // column allow on name beats the level mask (no deny involved).
    assert_eq!(
        p.decide(&ext, col(&p, "customers.name")).action,
        Action::Allow
    );
}

#[test]
fn several_roles_combine() {
    let p = policy();
    // dispatcher (allow phone) + support (mask phone): least restrictive.
    let both = roles(&p, "x", &["dispatch_app", "support_app"]);
    assert_eq!(
        p.decide(&both, col(&p, "customers.phone")).action,
        Action::Allow
    );
    // support's wildcard deny on id_card is only a fallback: dispatcher's mask wins.
    assert_eq!(
        p.decide(&both, col(&p, "customers.id_card")).action,
        Action::Mask
    );
    // A rule that names a role and denies: deny, whatever the other roles grant.
    let ext_and_disp = roles(&p, "ext_1", &["dispatch_app"]);
    let d = p.decide(&ext_and_disp, col(&p, "customers.phone"));
    assert_eq!(d.action, Action::Deny);
    let reason = p
        .check_usage(&ext_and_disp, col(&p, "customers.phone"), Usage::Projection)
        .unwrap_err();
    assert_eq!(
        reason.to_string(),
        "permission denied for column public.customers.phone: reading it is not allowed (level important, action deny; rule 9 \"no-phones-for-contractors\" (line 27))"
    );
}

#[test]
fn usages_and_lookup() {
    let p = policy();
    let sup = roles(&p, "support_app", &[]);
    let phone = col(&p, "customers.phone");
    assert!(p.check_usage(&sup, phone, Usage::Projection).is_ok());
    assert!(
        p.check_usage(&sup, phone, Usage::Predicate { equality: true })
            .is_ok(),
        "lookup on deterministic"
    );
    assert!(p
        .check_usage(&sup, phone, Usage::JoinKey { equality: true })
        .is_ok());
    for u in [
        Usage::Predicate { equality: false },
        Usage::JoinKey { equality: false },
        Usage::GroupOrder,
        Usage::FunctionArg,
    ] {
        let e = p.check_usage(&sup, phone, u).unwrap_err();
        assert_eq!(e.action, Action::Mask);
    }
    let e = p.check_usage(&sup, phone, Usage::GroupOrder).unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied for column public.customers.phone: grouping or sorting by it is not allowed (level important, action mask; rule 3 (line 21))"
    );
    // The level rule's lookup does not reach the address column (null, randomized).
    let addr = col(&p, "customers.address");
    assert!(p
        .check_usage(&sup, addr, Usage::Predicate { equality: true })
        .is_err());
    // Masked without lookup: no equality either.
    let none = roles(&p, "nobody", &[]);
    assert!(p
        .check_usage(&none, phone, Usage::Predicate { equality: true })
        .is_err());
    // Allow permits everything; deny nothing.
    let disp = roles(&p, "dispatch_app", &[]);
    assert!(p.check_usage(&disp, phone, Usage::FunctionArg).is_ok());
    let e = p
        .check_usage(&none, col(&p, "customers.id_card"), Usage::Projection)
        .unwrap_err();
    assert_eq!(e.decided_by, "rule 11 (line 29)");
    // Hash is projection-only.
    let an = roles(&p, "bi_reader", &[]);
    assert!(p.check_usage(&an, phone, Usage::Projection).is_ok());
    assert!(p
        .check_usage(&an, phone, Usage::Predicate { equality: true })
        .is_err());
}

#[test]
fn transforms_run() {
    let p = policy();
    let key = PseudonymKey::new(b"k");
    let mut out = String::new();
    let disp = roles(&p, "dispatch_app", &[]);
    let t = p.decide(&disp, col(&p, "customers.id_card")).transform;
    assert!(t.apply("11010519491231002X", &key, &mut out));
    assert_eq!(out, "110105********002X");
    out.clear();
    let t = p
        .decide(&roles(&p, "nobody", &[]), col(&p, "customers.phone"))
        .transform;
    assert!(t.apply("13812345678", &key, &mut out));
    assert_eq!(out, "138****5678");
    out.clear();
    let sup = roles(&p, "support_app", &[]);
    let t = p.decide(&sup, col(&p, "customers.address")).transform;
    assert_eq!(t, Transform::Null);
    assert!(!t.apply("北京市海淀区", &key, &mut out));
    // Column mask override.
    let t = p.decide(&disp, col(&p, "bookings.passport_no")).transform;
    out.clear();
    assert!(t.apply("E12345678", &key, &mut out));
    assert_eq!(out, "E******78");
    // Hash.
    let t = p
        .decide(&roles(&p, "bi_reader", &[]), col(&p, "customers.phone"))
        .transform;
    out.clear();
    assert!(t.apply("13812345678", &key, &mut out));
    assert_eq!(out.len(), 16);
}

#[test]
fn version_is_a_content_hash() {
    let a = policy();
    let b = CompiledPolicy::from_str("t.yaml", POLICY).unwrap();
    assert_eq!(a.version(), b.version());
    assert!(a.version().starts_with("sha256:"));
    let c = CompiledPolicy::from_str("t.yaml", &POLICY.replace("general: allow", "general: mask"))
        .unwrap();
    assert_ne!(a.version(), c.version());
    assert!(a.is_protected_table("customers"));
    assert!(a.is_protected_table("public.bookings"));
    assert!(!a.is_protected_table("public.shipments"));
}
