//! `rules:` and `defaults:`: who gets which action on which columns.
use super::*;

pub(super) fn build_rules(
    cx: &mut Ctx,
    n: &Node,
    levels: &[&str],
    roles: &[Role],
    columns: &[Column],
) -> Vec<Rule> {
    let Value::Seq(items) = &n.value else {
        cx.err(n, format!("rules must be a list, found {}", n.type_name()));
        return Vec::new();
    };
    let mut rules: Vec<Rule> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if let Some(r) = build_rule(cx, index, item, levels, roles, columns) {
            if let Some(prev) = rules.iter().find(|p| {
                p.roles == r.roles && p.wildcard == r.wildcard && p.selector == r.selector
            }) {
                cx.err_hint(
                    item,
                    format!(
                        "rule {} repeats the roles and selector of {}",
                        index + 1,
                        prev.label()
                    ),
                    Some("merge them: only one of the two can take effect".into()),
                );
            }
            rules.push(r);
        }
    }
    rules
}

pub(super) fn build_rule(
    cx: &mut Ctx,
    index: usize,
    n: &Node,
    levels: &[&str],
    roles: &[Role],
    columns: &[Column],
) -> Option<Rule> {
    let what = format!("rule {}", index + 1);
    let m = cx.map(n, &what)?;
    cx.check_keys(m, &RULE_KEYS, &what);
    let mut ok = true;
    let name = get(m, "name")
        .and_then(|v| cx.string(v, "name"))
        .map(str::to_string);

    // roles
    let mut role_ids: Vec<RoleId> = Vec::new();
    let mut wildcard = false;
    match get(m, "roles") {
        Some(rn) => {
            let names = cx.strings(rn, "a role name");
            let role_names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            for (s, node) in &names {
                if *s == "*" {
                    wildcard = true;
                } else if let Some(i) = roles.iter().position(|r| r.name == *s) {
                    if !role_ids.contains(&i) {
                        role_ids.push(i);
                    }
                } else {
                    let mut known = role_names.clone();
                    known.push("*");
                    cx.unknown(node, "role", s, &known);
                    ok = false;
                }
            }
            if wildcard && names.len() > 1 {
                cx.err(rn, "`*` already matches every login; list it alone");
                ok = false;
            }
            if names.is_empty() {
                ok = false;
            }
        }
        None => {
            cx.err_hint(
                n,
                format!("{what} has no `roles`"),
                Some("use `roles: [\"*\"]` for every login".into()),
            );
            ok = false;
        }
    }
    role_ids.sort_unstable();

    // selector: exactly one of level, kinds, columns
    let present: Vec<(&Node, &Node)> = ["level", "kinds", "columns"]
        .iter()
        .filter_map(|k| get_entry(m, k))
        .collect();
    if present.is_empty() {
        cx.err(
            n,
            format!("{what} needs one of `level`, `kinds` or `columns`"),
        );
        ok = false;
    }
    if present.len() > 1 {
        cx.err_hint(
            present[1].0,
            format!("{what} has more than one of `level`, `kinds` and `columns`"),
            Some("split it into one rule per selector".into()),
        );
        ok = false;
    }
    let selector = match present.first() {
        Some((k, v)) => match k.as_str() {
            Some("level") => {
                let mut ids: Vec<LevelId> = Vec::new();
                for (s, node) in cx.strings(v, "a level name") {
                    match levels.iter().position(|l| *l == s) {
                        Some(i) => ids.push(i),
                        None => {
                            cx.unknown(node, "level", s, levels);
                            ok = false;
                        }
                    }
                }
                Selector::Levels(ids)
            }
            Some("kinds") => {
                let mut ks = Vec::new();
                for (s, node) in cx.strings(v, "a kind") {
                    match Kind::parse(s) {
                        Some(k) => ks.push(k),
                        None => {
                            cx.unknown(node, "kind", s, &Kind::NAMES);
                            ok = false;
                        }
                    }
                }
                Selector::Kinds(ks)
            }
            _ => {
                let mut ids = Vec::new();
                for (s, node) in cx.strings(v, "a column") {
                    match resolve_column(s, columns) {
                        Ok(i) => ids.push(i),
                        Err((msg, hint)) => {
                            cx.err_hint(node, msg, hint);
                            ok = false;
                        }
                    }
                }
                Selector::Columns(ids)
            }
        },
        None => Selector::Levels(Vec::new()),
    };

    // action
    let action = match get(m, "action") {
        Some(a) => cx.action(a),
        None => {
            cx.err(
                n,
                format!(
                    "{what} has no `action` (one of {})",
                    list_names(&Action::NAMES)
                ),
            );
            None
        }
    };
    let lookup = match get(m, "lookup") {
        Some(l) => {
            match l.value {
                Value::Bool(b) => {
                    if b && action.is_some() && action != Some(Action::Mask) {
                        cx.err_hint(
                        l,
                        "`lookup` only applies to rules with `action: mask`",
                        Some("`allow` already permits every use; other actions never permit lookups".into()),
                    );
                        ok = false;
                    }
                    b
                }
                _ => {
                    cx.err(
                        l,
                        format!("lookup must be true or false, found {}", l.type_name()),
                    );
                    ok = false;
                    false
                }
            }
        }
        None => false,
    };
    let mask = match get(m, "mask") {
        Some(mn) => {
            if action.is_some() && action != Some(Action::Mask) {
                cx.err(mn, "`mask` only applies to rules with `action: mask`");
                ok = false;
            }
            let mk = parse_mask(cx, mn);
            ok &= mk.is_some();
            mk
        }
        None => None,
    };
    let action = action?;
    if !ok {
        return None;
    }
    let rule = Rule {
        index,
        name,
        roles: role_ids,
        wildcard,
        selector,
        action,
        lookup,
        mask,
        pos: pos(n),
    };
    if lookup {
        let any_det = columns.iter().enumerate().any(|(i, c)| {
            c.encrypt == EncryptMode::Deterministic && selector_matches(&rule.selector, i, c)
        });
        if !any_det {
            if let Some(l) = get(m, "lookup") {
                cx.err_hint(
                    l,
                    "`lookup: true` has no effect: none of the selected columns is encrypted deterministically",
                    Some("equality lookups on a masked column need `encrypt: deterministic`".into()),
                );
            }
            return None;
        }
    }
    Some(rule)
}

pub(crate) fn selector_matches(s: &Selector, id: usize, c: &Column) -> bool {
    match s {
        Selector::Levels(ls) => ls.contains(&c.level),
        Selector::Kinds(ks) => ks.contains(&c.kind),
        Selector::Columns(cs) => cs.contains(&id),
    }
}

/// `schema.table.column` or `table.column` (schema `public`).
pub(super) fn resolve_column(
    s: &str,
    columns: &[Column],
) -> Result<usize, (String, Option<String>)> {
    let Some((t, c)) = s.rsplit_once('.') else {
        return Err((
            format!("column \"{s}\" must be written as schema.table.column"),
            Some("for example public.customers.id_card".into()),
        ));
    };
    let table = crate::model::normalize_table(t);
    if let Some(i) = columns
        .iter()
        .position(|x| x.table == table && x.column == c)
    {
        return Ok(i);
    }
    let in_table: Vec<&str> = columns
        .iter()
        .filter(|x| x.table == table)
        .map(|x| x.column.as_str())
        .collect();
    if in_table.is_empty() {
        let tables: Vec<&str> = columns.iter().map(|x| x.table.as_str()).collect();
        let hint = did_you_mean(&table, tables).map(|t| format!("did you mean `{t}.{c}`?"));
        return Err((format!("rule names column \"{table}.{c}\" of a table that is not classified under `tables`"), hint));
    }
    let hint = did_you_mean(c, in_table.iter().copied())
        .map(|x| format!("did you mean `{table}.{x}`?"))
        .or_else(|| Some(format!("classify it under `tables: {table}:` first")));
    Err((
        format!("rule names unclassified column \"{table}.{c}\""),
        hint,
    ))
}

pub(super) fn build_defaults(
    cx: &mut Ctx,
    entry: Option<(&Node, &Node)>,
    root: &Node,
    levels: &[&str],
) -> Vec<Action> {
    let mut out: Vec<Option<Action>> = vec![None; levels.len()];
    let Some((key, n)) = entry else {
        cx.err_hint(
            root,
            "missing key `defaults` (the action per level when no rule matches)",
            Some(format!(
                "for example `defaults: {{ {} }}`",
                levels
                    .iter()
                    .map(|l| format!("{l}: deny"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        return vec![Action::Deny; levels.len()];
    };
    if let Some(m) = cx.map(n, "defaults") {
        for (i, (k, v)) in m.iter().enumerate() {
            let Some(lname) = cx.string(k, "a level name") else {
                continue;
            };
            if m[..i].iter().any(|(p, _)| p.as_str() == Some(lname)) {
                cx.err(k, format!("duplicate key `{lname}` in defaults"));
                continue;
            }
            let Some(li) = levels.iter().position(|l| *l == lname) else {
                cx.unknown(k, "level", lname, levels);
                continue;
            };
            if let Some(a) = cx.action(v) {
                out[li] = Some(a);
            }
        }
        let missing: Vec<&str> = levels
            .iter()
            .zip(&out)
            .filter(|(_, a)| a.is_none())
            .map(|(l, _)| *l)
            .collect();
        let all_listed = m
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .filter(|k| levels.contains(k))
            .count();
        if !missing.is_empty() && all_listed + missing.len() == levels.len() {
            cx.err(
                key,
                format!(
                    "defaults has no action for level {}",
                    missing
                        .iter()
                        .map(|l| format!("\"{l}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    out.into_iter().map(|a| a.unwrap_or(Action::Deny)).collect()
}
