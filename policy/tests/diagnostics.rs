//! Every malformed-policy case reports the exact diagnostic, with line and column.
use pgveil_policy::load::{load_bytes, load_str};

const BASE: &str = "version: 1
levels: [core, important, general]
roles:
  support: [support_app, \"support_*\"]
  auditor: [compliance]
tables:
  public.customers:
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic }
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic }
    address: { level: important, kind: address, encrypt: randomized }
rules:
  - { roles: [support], level: important, action: mask }
defaults: { core: deny, important: mask, general: allow }
";

fn diags(text: &str) -> String {
    match load_str("p.yaml", text) {
        Ok(_) => "OK".to_string(),
        Err(d) => d.to_string(),
    }
}

/// BASE with one line replaced (1-based).
fn with_line(n: usize, line: &str) -> String {
    BASE.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn base_is_clean() {
    assert_eq!(diags(BASE), "OK");
}

#[test]
fn unknown_level_with_hint() {
    let t = with_line(
        8,
        "    id_card: { level: cor, kind: cn_id_card, encrypt: deterministic }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:8:23: unknown level \"cor\" (expected core, important, general)\n  hint: did you mean `core`?"
    );
}

#[test]
fn unknown_key_did_you_mean() {
    let t = with_line(
        9,
        "    phone:   { levle: important, kind: cn_mobile, encrypt: deterministic }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:9:14: column \"public.customers.phone\" has no `level`\n\
         p.yaml:9:16: unknown key `levle` in column \"public.customers.phone\"\n  hint: did you mean `level`?"
    );
}

#[test]
fn unknown_top_level_key() {
    let t = format!("{BASE}rulez: []\n");
    assert_eq!(
        diags(&t),
        "p.yaml:14:1: unknown key `rulez` in the policy file\n  hint: did you mean `rules`?"
    );
}

#[test]
fn unknown_kind_role_action_mask() {
    let t = with_line(
        10,
        "    address: { level: important, kind: adress, encrypt: randomized, mask: \"kepe(1,2)\" }",
    );
    let t = t.replace(
        "- { roles: [support], level: important, action: mask }",
        "- { roles: [suport], level: important, action: maks }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:40: unknown kind \"adress\" (expected cn_id_card, cn_mobile, cn_name, bank_card, email, passport, address, pnr, waybill, date, text)\n  hint: did you mean `address`?\n\
         p.yaml:10:76: unknown mask `kepe`\n  hint: did you mean `keep`?\n\
         p.yaml:12:15: unknown role \"suport\" (expected support, auditor, *)\n  hint: did you mean `support`?\n\
         p.yaml:12:50: unknown action \"maks\" (expected allow, hash, mask, null, deny)\n  hint: did you mean `mask`?"
    );
}

#[test]
fn bad_mask_arguments_point_inside_the_string() {
    let t = with_line(
        10,
        "    address: { level: important, kind: address, mask: \"keep(1,x)\" }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:63: `keep` argument `x` is not a whole number from 0 to 64"
    );
    let t = with_line(
        10,
        "    address: { level: important, kind: address, mask: keep(2) }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:60: mask `keep` takes 2 arguments, found 1\n  hint: write keep(FIRST,LAST), for example keep(1,2)"
    );
}

#[test]
fn duplicate_column_yaml_key() {
    let t = with_line(10, "    phone: { level: important, kind: cn_mobile }");
    assert_eq!(
        diags(&t),
        "p.yaml:10:5: duplicate column \"public.customers.phone\" (first at line 9)"
    );
}

#[test]
fn duplicate_table_after_schema_default() {
    let t = format!(
        "{}\n  customers:\n    x: {{ level: general }}\n{}",
        &BASE[..BASE.find("rules:").unwrap() - 1],
        &BASE[BASE.find("rules:").unwrap()..]
    );
    assert_eq!(
        diags(&t),
        "p.yaml:11:3: duplicate table \"public.customers\" (first at line 7)"
    );
}

#[test]
fn rule_names_unclassified_column() {
    let t = with_line(12, "  - { roles: [auditor], columns: [public.customers.id_crad, public.orders.x, nodots], action: allow }");
    assert_eq!(
        diags(&t),
        "p.yaml:12:35: rule names unclassified column \"public.customers.id_crad\"\n  hint: did you mean `public.customers.id_card`?\n\
         p.yaml:12:61: rule names column \"public.orders.x\" of a table that is not classified under `tables`\n\
         p.yaml:12:78: column \"nodots\" must be written as schema.table.column\n  hint: for example public.customers.id_card"
    );
}

#[test]
fn deterministic_on_kinds_without_lookup() {
    let t = with_line(
        10,
        "    address: { level: important, kind: address, encrypt: deterministic }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:58: deterministic encryption is not allowed for kind `address`: it cannot support equality lookups\n  hint: free text is not looked up by exact value and repeats leak; use `encrypt: randomized`"
    );
    let t = with_line(
        10,
        "    dob: { level: important, kind: date, encrypt: deterministic }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:51: deterministic encryption is not allowed for kind `date`: it cannot support equality lookups\n  hint: dates have few distinct values, so equal ciphertexts reveal them; use `encrypt: randomized`"
    );
    let t = with_line(
        10,
        "    notes: { level: important, encrypt: deterministic }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:10:41: deterministic encryption is not allowed for kind `text` (the default kind): it cannot support equality lookups\n  hint: free text is not looked up by exact value and repeats leak; use `encrypt: randomized`"
    );
}

#[test]
fn rule_selector_problems() {
    let t = with_line(12, "  - { roles: [support], action: mask }");
    assert_eq!(
        diags(&t),
        "p.yaml:12:5: rule 1 needs one of `level`, `kinds` or `columns`"
    );
    let t = with_line(
        12,
        "  - { roles: [support], level: core, kinds: [cn_mobile], action: mask }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:12:38: rule 1 has more than one of `level`, `kinds` and `columns`\n  hint: split it into one rule per selector"
    );
    let t = with_line(
        12,
        "  - { roles: [\"*\", support], level: core, action: deny }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:12:14: `*` already matches every login; list it alone"
    );
    let t = with_line(12, "  - { level: core, action: deny }");
    assert_eq!(
        diags(&t),
        "p.yaml:12:5: rule 1 has no `roles`\n  hint: use `roles: [\"*\"]` for every login"
    );
}

#[test]
fn lookup_and_mask_misuse() {
    let t = with_line(
        12,
        "  - { roles: [support], level: important, action: allow, lookup: true, mask: redact }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:12:66: `lookup` only applies to rules with `action: mask`\n  hint: `allow` already permits every use; other actions never permit lookups\n\
         p.yaml:12:78: `mask` only applies to rules with `action: mask`"
    );
    let t = with_line(
        12,
        "  - { roles: [support], kinds: [address], action: mask, lookup: true }",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:12:65: `lookup: true` has no effect: none of the selected columns is encrypted deterministically\n  hint: equality lookups on a masked column need `encrypt: deterministic`"
    );
}

#[test]
fn repeated_rule() {
    let t = with_line(12, "  - { roles: [support], level: important, action: mask }\n  - { roles: [support], level: important, action: allow }");
    assert_eq!(
        diags(&t),
        "p.yaml:13:5: rule 2 repeats the roles and selector of rule 1 (line 12)\n  hint: merge them: only one of the two can take effect"
    );
}

#[test]
fn defaults_problems() {
    let t = with_line(13, "defaults: { core: deny, importnt: mask }");
    assert_eq!(
        diags(&t),
        "p.yaml:13:1: defaults has no action for level \"important\", \"general\"\n\
         p.yaml:13:25: unknown level \"importnt\" (expected core, important, general)\n  hint: did you mean `important`?"
    );
    let t = BASE.replace(
        "defaults: { core: deny, important: mask, general: allow }\n",
        "",
    );
    assert_eq!(
        diags(&t),
        "p.yaml:1:1: missing key `defaults` (the action per level when no rule matches)\n  hint: for example `defaults: { core: deny, important: deny, general: deny }`"
    );
}

#[test]
fn version_and_levels() {
    let t = with_line(1, "version: 2");
    assert_eq!(
        diags(&t),
        "p.yaml:1:10: unsupported policy version 2 (expected 1)"
    );
    let t = with_line(2, "levels: [core, important, core, general]");
    assert_eq!(diags(&t), "p.yaml:2:27: duplicate level \"core\"");
}

#[test]
fn domain_mixing_kinds() {
    let t = with_line(9, "    phone:   { level: important, kind: cn_mobile, encrypt: deterministic, domain: cn_id_card }");
    assert_eq!(
        diags(&t),
        "p.yaml:9:5: key domain \"cn_id_card\" mixes kind `cn_mobile` with kind `cn_id_card` of public.customers.id_card (line 8)\n  hint: give this column its own `domain:`"
    );
}

#[test]
fn an_anomaly_limit_counts_rows_or_refusals_not_both() {
    let both = format!("{BASE}anomaly:\n  - {{ name: a, max_rows: 5, max_denied: 3, per: 1m }}\n");
    assert_eq!(
        diags(&both),
        "p.yaml:15:41: anomaly limit 1 has both `max_rows` and `max_denied`\n  hint: one limit per rule: write two rules"
    );
    let neither = format!("{BASE}anomaly:\n  - {{ name: a, per: 1m }}\n");
    assert_eq!(
        diags(&neither),
        "p.yaml:15:5: anomaly limit 1 has no limit: `max_rows` (rows per window), `max_denied` (refusals per window) or `hours` (allowed hours)"
    );
    let denied =
        format!("{BASE}anomaly:\n  - {{ name: probing, max_denied: 3, per: 10m, then: deny }}\n");
    assert_eq!(diags(&denied), "OK");
}

#[test]
fn an_hours_rule_names_its_bad_part() {
    let ok = format!(
        "{BASE}anomaly:\n  - {{ name: night, level: core, hours: 07:00-20:00, days: mon-fri, timezone: Asia/Shanghai, then: deny }}\n  - {{ name: late, hours: \"22:00-06:00\", days: [fri, sat] }}\n"
    );
    assert_eq!(diags(&ok), "OK");
    let p = load_str("p.yaml", &ok).unwrap();
    assert_eq!(
        p.anomaly[1].per_seconds, 3600,
        "hours rules alert once an hour by default"
    );
    let cases = [
        (
            "{ name: x, hours: 7-20 }",
            "p.yaml:15:23: hours must be a range such as 07:00-20:00, found \"7-20\"",
        ),
        (
            "{ name: x, hours: 07:00-20:00, days: mon-fry }",
            "p.yaml:15:42: unknown day \"fry\" (expected mon, tue, wed, thu, fri, sat, sun, or a range such as mon-fri)",
        ),
        (
            "{ name: x, hours: 07:00-20:00, timezone: Asia/Shanghia }",
            "p.yaml:15:46: unknown time zone \"Asia/Shanghia\" (an IANA name such as Europe/Berlin or Asia/Shanghai, or UTC)",
        ),
        (
            "{ name: x, hours: 07:00-07:00 }",
            "p.yaml:15:23: hours \"07:00-07:00\" is empty; for the whole day write 00:00-24:00",
        ),
        (
            "{ name: x, max_rows: 5, per: 1m, timezone: UTC }",
            "p.yaml:15:48: `timezone` applies only to a rule with `hours`",
        ),
        (
            "{ name: x, max_rows: 5, per: 1m, hours: 07:00-20:00 }",
            "p.yaml:15:45: anomaly limit 1 has both `max_rows` and `hours`\n  hint: one limit per rule: write two rules",
        ),
    ];
    for (rule, want) in cases {
        let t = format!("{BASE}anomaly:\n  - {rule}\n");
        assert_eq!(diags(&t), want, "{rule}");
    }
}

#[test]
fn anomaly_problems() {
    let t = format!(
        "{BASE}anomaly:\n  - {{ name: a, level: core, max_rows: 0, per: 1 minute, then: block }}\n"
    );
    assert_eq!(
        diags(&t),
        "p.yaml:15:39: max_rows must be a positive integer\n\
         p.yaml:15:47: per must be a duration such as 30s, 1m, 1h or 1d\n\
         p.yaml:15:63: unknown anomaly action \"block\" (expected log, deny)"
    );
}

#[test]
fn all_problems_reported_at_once() {
    let t = with_line(8, "    id_card: { level: cor, kind: id_card }");
    let t = t.replace("action: mask }", "action: msk }");
    let out = diags(&t);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("p.yaml:")).count(),
        3,
        "{out}"
    );
}

#[test]
fn empty_binary_and_broken_input() {
    assert_eq!(diags(""), "p.yaml:1:1: policy file is empty\n  hint: start from examples/logistics/policy.yaml or see docs/policy.md");
    assert_eq!(diags("  \n# only a comment\n"), "p.yaml:1:1: policy file is empty\n  hint: start from examples/logistics/policy.yaml or see docs/policy.md");
    let bin = b"version: 1\nlevels: [a\x00\x01\x02\xff]";
    assert_eq!(
        load_bytes("p.yaml", bin).unwrap_err().to_string(),
        "p.yaml:2:11: file is binary, not a YAML policy (NUL byte)"
    );
    let latin1 = b"version: 1\n# caf\xe9\n";
    assert_eq!(
        load_bytes("p.yaml", latin1).unwrap_err().to_string(),
        "p.yaml:2:6: file is not valid UTF-8 text\n  hint: save the policy as UTF-8"
    );
    assert_eq!(
        diags("- a\n- b\n"),
        "p.yaml:1:1: the policy file must be a mapping, found a list"
    );
    let e = diags("version: 1\nlevels: [core\ntables: {}\n");
    assert!(e.starts_with("p.yaml:3:"), "{e}");
    assert!(e.contains("YAML syntax error"), "{e}");
}

#[test]
fn random_bytes_never_panic() {
    // A cheap deterministic fuzz: byte soup and truncations of a valid policy.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in 0..400 {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            const SOUP: &[u8] = b"ab:{}[]- \n\"'#*&!|>0129.,xyz\xff\xe4";
            v.push(SOUP[(x % SOUP.len() as u64) as usize]);
        }
        let _ = load_bytes("f.yaml", &v);
    }
    for cut in 0..BASE.len() {
        if BASE.is_char_boundary(cut) {
            let _ = load_str("f.yaml", &BASE[..cut]);
        }
    }
}

#[test]
fn an_anomaly_rule_without_roles_is_a_warning_not_an_error() {
    let text = format!(
        "{BASE}anomaly:\n  - {{ name: everyone, max_rows: 5, per: 1m, then: deny }}\n  - {{ name: support_only, roles: [support], max_rows: 5, per: 1m }}\n"
    );
    let policy = load_str("p.yaml", &text).expect("a valid policy");
    let w = policy.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].pos.line, 15);
    assert!(
        w[0].message
            .starts_with("anomaly rule \"everyone\" has no roles: it limits every login"),
        "{}",
        w[0].message
    );
    assert!(load_str("p.yaml", BASE).unwrap().warnings().is_empty());
}
