//! From a node tree to a validated [`Policy`], collecting every problem.
use super::node::{Node, Value};
use crate::diag::{did_you_mean, Diagnostic};
use crate::hours::HoursError;
use crate::mask::Mask;
use crate::model::{
    Action, Anomaly, AnomalyAction, Column, EncryptMode, Kind, LevelId, Limit, Policy, Pos, Role,
    RoleId, Rule, Selector,
};

const TOP_KEYS: [&str; 7] = [
    "version", "levels", "roles", "tables", "rules", "defaults", "anomaly",
];
const COLUMN_KEYS: [&str; 5] = ["level", "kind", "encrypt", "domain", "mask"];
const RULE_KEYS: [&str; 8] = [
    "name", "roles", "level", "kinds", "columns", "action", "lookup", "mask",
];
const ANOMALY_KEYS: [&str; 10] = [
    "name",
    "level",
    "roles",
    "max_rows",
    "max_denied",
    "hours",
    "days",
    "timezone",
    "per",
    "then",
];

struct Ctx<'a> {
    text: &'a str,
    diags: Vec<Diagnostic>,
}

fn pos(n: &Node) -> Pos {
    Pos {
        line: n.line,
        col: n.col,
    }
}

fn list_names(names: &[&str]) -> String {
    names.join(", ")
}

impl<'a> Ctx<'a> {
    fn err(&mut self, n: &Node, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(n.line, n.col, msg));
    }

    fn err_hint(&mut self, n: &Node, msg: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::new(n.line, n.col, msg);
        d.hint = hint;
        self.diags.push(d);
    }

    /// An "unknown X" error with a did-you-mean hint, or the list of valid names.
    fn unknown(&mut self, n: &Node, what: &str, name: &str, known: &[&str]) {
        let msg = format!("unknown {what} \"{name}\" (expected {})", list_names(known));
        let hint =
            did_you_mean(name, known.iter().copied()).map(|s| format!("did you mean `{s}`?"));
        self.err_hint(n, msg, hint);
    }

    fn map<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &n.value {
            Value::Map(m) => Some(m),
            _ => {
                self.err(
                    n,
                    format!("{what} must be a mapping, found {}", n.type_name()),
                );
                None
            }
        }
    }

    fn string<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n str> {
        match &n.value {
            Value::Str(s) if !s.trim().is_empty() => Some(s),
            Value::Str(_) => {
                self.err(n, format!("{what} must not be empty"));
                None
            }
            _ => {
                self.err(
                    n,
                    format!("{what} must be a string, found {}", n.type_name()),
                );
                None
            }
        }
    }

    /// A string or a list of strings.
    fn strings<'n>(&mut self, n: &'n Node, what: &str) -> Vec<(&'n str, &'n Node)> {
        match &n.value {
            Value::Seq(items) => {
                if items.is_empty() {
                    self.err(n, format!("{what} must not be an empty list"));
                }
                items
                    .iter()
                    .filter_map(|i| self.string(i, what).map(|s| (s, i)))
                    .collect()
            }
            _ => self
                .string(n, what)
                .map(|s| vec![(s, n)])
                .unwrap_or_default(),
        }
    }

    /// Reports unknown keys (with did-you-mean) and duplicate keys of a mapping.
    fn check_keys(&mut self, m: &[(Node, Node)], allowed: &[&str], what: &str) {
        for (i, (k, _)) in m.iter().enumerate() {
            let name = k.key_text();
            if let Some((first, _)) = m[..i].iter().find(|(p, _)| p.key_text() == name) {
                self.err(
                    k,
                    format!(
                        "duplicate key `{name}` in {what} (first at line {})",
                        first.line
                    ),
                );
                continue;
            }
            if !allowed.contains(&name.as_str()) {
                let hint = did_you_mean(&name, allowed.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some(format!("allowed keys: {}", list_names(allowed))));
                self.err_hint(k, format!("unknown key `{name}` in {what}"), hint);
            }
        }
    }

    /// An action name. YAML reads a bare `null` as a null value; accept it when it is spelled
    /// `null` in the file, and nothing else (an empty value is an error, not `null`).
    fn action(&mut self, n: &Node) -> Option<Action> {
        if matches!(n.value, Value::Null) && self.source_at(n).starts_with("null") {
            return Some(Action::Null);
        }
        let s = self.string(n, "action")?;
        let act = Action::parse(s);
        if act.is_none() {
            self.unknown(n, "action", s, &Action::NAMES);
        }
        act
    }

    /// The source text from a node's position to the end of its line.
    fn source_at(&self, n: &Node) -> &'a str {
        let line = self
            .text
            .lines()
            .nth((n.line.max(1) - 1) as usize)
            .unwrap_or("");
        let start = line
            .char_indices()
            .nth((n.col.max(1) - 1) as usize)
            .map_or(line.len(), |(i, _)| i);
        &line[start..]
    }

    /// Column of the first character inside a scalar: skips an opening quote.
    fn scalar_inner_col(&self, n: &Node) -> u64 {
        let line = self
            .text
            .lines()
            .nth((n.line.max(1) - 1) as usize)
            .unwrap_or("");
        match line.chars().nth((n.col.max(1) - 1) as usize) {
            Some('"' | '\'') => n.col + 1,
            _ => n.col,
        }
    }
}

fn get<'n>(m: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn get_entry<'n>(m: &'n [(Node, Node)], key: &str) -> Option<(&'n Node, &'n Node)> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(k, v)| (k, v))
}

pub fn build(root: &Node, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    let mut cx = Ctx {
        text,
        diags: Vec::new(),
    };
    let Some(top) = cx.map(root, "the policy file") else {
        return Err(cx.diags);
    };
    cx.check_keys(top, &TOP_KEYS, "the policy file");

    let version = match get(top, "version") {
        Some(n) => match n.value {
            Value::Int(1) => 1,
            Value::Int(v) => {
                cx.err(n, format!("unsupported policy version {v} (expected 1)"));
                1
            }
            _ => {
                cx.err(
                    n,
                    format!("version must be an integer, found {}", n.type_name()),
                );
                1
            }
        },
        None => {
            cx.err(root, "missing key `version` (expected `version: 1`)");
            1
        }
    };

    let levels = build_levels(&mut cx, top, root);
    let level_names: Vec<&str> = levels.iter().map(String::as_str).collect();
    let roles = match get(top, "roles") {
        Some(n) => build_roles(&mut cx, n),
        None => Vec::new(),
    };
    let columns = match get(top, "tables") {
        Some(n) => build_tables(&mut cx, n, &level_names),
        None => {
            cx.err(root, "missing key `tables` (the classified columns)");
            Vec::new()
        }
    };
    let rules = match get(top, "rules") {
        Some(n) => build_rules(&mut cx, n, &level_names, &roles, &columns),
        None => Vec::new(),
    };
    let defaults = build_defaults(&mut cx, get_entry(top, "defaults"), root, &level_names);
    let anomaly = match get(top, "anomaly") {
        Some(n) => build_anomaly(&mut cx, n, &level_names, &roles),
        None => Vec::new(),
    };

    if cx.diags.is_empty() {
        Ok(Policy {
            version,
            levels,
            roles,
            columns,
            rules,
            defaults,
            anomaly,
        })
    } else {
        Err(cx.diags)
    }
}

fn build_levels(cx: &mut Ctx, top: &[(Node, Node)], root: &Node) -> Vec<String> {
    let Some(n) = get(top, "levels") else {
        cx.err_hint(
            root,
            "missing key `levels` (most to least sensitive)",
            Some("for example `levels: [core, important, general]`".into()),
        );
        return Vec::new();
    };
    let Value::Seq(items) = &n.value else {
        cx.err(
            n,
            format!(
                "levels must be a list, most to least sensitive, found {}",
                n.type_name()
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.err(n, "levels must list at least one level");
    }
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if let Some(s) = cx.string(i, "a level name") {
            if out.iter().any(|l| l == s) {
                cx.err(i, format!("duplicate level \"{s}\""));
            } else {
                out.push(s.to_string());
            }
        }
    }
    out
}

fn build_roles(cx: &mut Ctx, n: &Node) -> Vec<Role> {
    let Some(m) = cx.map(n, "roles") else {
        return Vec::new();
    };
    let mut roles: Vec<Role> = Vec::new();
    for (k, v) in m {
        let Some(name) = cx.string(k, "a role name") else {
            continue;
        };
        if name == "*" {
            cx.err(k, "`*` is reserved: in rules it means every login");
            continue;
        }
        if let Some(first) = roles.iter().find(|r| r.name == name) {
            cx.err(
                k,
                format!(
                    "duplicate role \"{name}\" (first at line {})",
                    first.pos.line
                ),
            );
            continue;
        }
        let members = cx
            .strings(v, "a role member")
            .into_iter()
            .map(|(s, _)| s.to_string())
            .collect();
        roles.push(Role {
            name: name.to_string(),
            members,
            pos: pos(k),
        });
    }
    roles
}

fn valid_table_name(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

fn build_tables(cx: &mut Ctx, n: &Node, levels: &[&str]) -> Vec<Column> {
    let Some(m) = cx.map(n, "tables") else {
        return Vec::new();
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut seen_tables: Vec<(String, u64)> = Vec::new();
    for (tk, tv) in m {
        let Some(tname) = cx.string(tk, "a table name") else {
            continue;
        };
        if !valid_table_name(tname) {
            cx.err(
                tk,
                format!("invalid table name \"{tname}\" (expected schema.table or table)"),
            );
            continue;
        }
        let table = crate::model::normalize_table(tname);
        if let Some((_, line)) = seen_tables.iter().find(|(t, _)| *t == table) {
            cx.err(
                tk,
                format!("duplicate table \"{table}\" (first at line {line})"),
            );
            continue;
        }
        seen_tables.push((table.clone(), tk.line));
        let Some(cols) = cx.map(tv, &format!("table \"{table}\"")) else {
            continue;
        };
        if cols.is_empty() {
            cx.err(tv, format!("table \"{table}\" lists no columns"));
        }
        for (ck, cv) in cols {
            let Some(cname) = cx.string(ck, "a column name") else {
                continue;
            };
            if let Some(first) = columns
                .iter()
                .find(|c| c.table == table && c.column == cname)
            {
                cx.err(
                    ck,
                    format!(
                        "duplicate column \"{table}.{cname}\" (first at line {})",
                        first.pos.line
                    ),
                );
                continue;
            }
            if let Some(c) = build_column(cx, &table, cname, ck, cv, levels) {
                columns.push(c);
            }
        }
    }
    check_domains(cx, &columns);
    columns
}

fn build_column(
    cx: &mut Ctx,
    table: &str,
    name: &str,
    key: &Node,
    n: &Node,
    levels: &[&str],
) -> Option<Column> {
    let what = format!("column \"{table}.{name}\"");
    let m = cx.map(n, &what)?;
    cx.check_keys(m, &COLUMN_KEYS, &what);
    let level = match get(m, "level") {
        Some(l) => cx
            .string(l, "level")
            .and_then(|s| match levels.iter().position(|x| *x == s) {
                Some(i) => Some(i),
                None => {
                    cx.unknown(l, "level", s, levels);
                    None
                }
            }),
        None => {
            cx.err(n, format!("{what} has no `level`"));
            None
        }
    };
    let kind = match get(m, "kind") {
        Some(k) => cx.string(k, "kind").and_then(|s| {
            let kind = Kind::parse(s);
            if kind.is_none() {
                cx.unknown(k, "kind", s, &Kind::NAMES);
            }
            kind
        }),
        None => Some(Kind::Text),
    };
    let encrypt = match get(m, "encrypt") {
        Some(e) => cx.string(e, "encrypt").and_then(|s| {
            let mode = EncryptMode::parse(s);
            if mode.is_none() {
                cx.unknown(e, "encryption mode", s, &EncryptMode::NAMES);
            }
            mode
        }),
        None => Some(EncryptMode::None),
    };
    let domain = match get(m, "domain") {
        Some(d) => {
            let s = cx.string(d, "domain").map(str::to_string);
            if encrypt == Some(EncryptMode::None) {
                cx.err_hint(
                    d,
                    format!("{what} has a `domain` but is not encrypted"),
                    Some(
                        "add `encrypt: deterministic` or `encrypt: randomized`, or remove `domain`"
                            .into(),
                    ),
                );
            }
            s
        }
        None => None,
    };
    let mask = match get(m, "mask") {
        Some(mn) => parse_mask(cx, mn),
        None => kind.map(Mask::default_for),
    };
    let (level, kind, encrypt, mask) = (level?, kind?, encrypt?, mask?);
    if encrypt == EncryptMode::Deterministic && !kind.supports_lookup() {
        let node = get(m, "encrypt").unwrap_or(n);
        let default_note = if get(m, "kind").is_none() {
            " (the default kind)"
        } else {
            ""
        };
        cx.err_hint(
            node,
            format!("deterministic encryption is not allowed for kind `{kind}`{default_note}: it cannot support equality lookups"),
            Some(match kind {
                Kind::Date => "dates have few distinct values, so equal ciphertexts reveal them; use `encrypt: randomized`".into(),
                _ => "free text is not looked up by exact value and repeats leak; use `encrypt: randomized`".into(),
            }),
        );
        return None;
    }
    let domain = domain.unwrap_or_else(|| kind.name().to_string());
    Some(Column {
        table: table.to_string(),
        column: name.to_string(),
        level,
        kind,
        encrypt,
        domain,
        mask,
        pos: pos(key),
    })
}

fn parse_mask(cx: &mut Ctx, n: &Node) -> Option<Mask> {
    let s = cx.string(n, "mask")?;
    match Mask::parse(s) {
        Ok(m) => Some(m),
        Err(e) => {
            let col = cx.scalar_inner_col(n) + e.offset as u64;
            let mut d = Diagnostic::new(n.line, col, e.message);
            d.hint = e.hint;
            cx.diags.push(d);
            None
        }
    }
}

/// Deterministic columns that share a key domain must hold the same kind of data: joining a
/// phone number to an ID number is never meaningful.
fn check_domains(cx: &mut Ctx, columns: &[Column]) {
    let det: Vec<&Column> = columns
        .iter()
        .filter(|c| c.encrypt == EncryptMode::Deterministic)
        .collect();
    for (i, c) in det.iter().enumerate() {
        if let Some(first) = det[..i]
            .iter()
            .find(|p| p.domain == c.domain && p.kind != c.kind)
        {
            cx.diags.push(
                Diagnostic::new(
                    c.pos.line,
                    c.pos.col,
                    format!(
                        "key domain \"{}\" mixes kind `{}` with kind `{}` of {} (line {})",
                        c.domain,
                        c.kind,
                        first.kind,
                        first.qualified(),
                        first.pos.line
                    ),
                )
                .with_hint("give this column its own `domain:`"),
            );
        }
    }
}

fn build_rules(
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

fn build_rule(
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
fn resolve_column(s: &str, columns: &[Column]) -> Result<usize, (String, Option<String>)> {
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

fn build_defaults(
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

/// The one limit of an anomaly rule: `max_rows`, `max_denied`, or `hours` (with `days` and
/// `timezone`).
fn anomaly_limit(
    cx: &mut Ctx,
    m: &[(Node, Node)],
    item: &Node,
    what: &str,
    positive: &dyn Fn(&mut Ctx, &str) -> Option<u64>,
) -> Option<Limit> {
    let given: Vec<&str> = ["max_rows", "max_denied", "hours"]
        .into_iter()
        .filter(|k| get(m, k).is_some())
        .collect();
    if given.len() > 1 {
        let second = get(m, given[1]).unwrap_or(item);
        cx.err_hint(
            second,
            format!("{what} has both `{}` and `{}`", given[0], given[1]),
            Some("one limit per rule: write two rules".into()),
        );
        return None;
    }
    for k in ["days", "timezone"] {
        if let (Some(v), None) = (get(m, k), get(m, "hours")) {
            cx.err(v, format!("`{k}` applies only to a rule with `hours`"));
        }
    }
    match given.first().copied() {
        Some("max_rows") => positive(cx, "max_rows").map(Limit::Rows),
        Some("max_denied") => positive(cx, "max_denied").map(Limit::Denied),
        Some(_) => {
            let h = get(m, "hours")?;
            let range = cx.string(h, "hours")?;
            let days_node = get(m, "days");
            let days: Option<Vec<&str>> = days_node.map(|d| match &d.value {
                Value::Str(s) => s.split(',').collect(),
                _ => cx.strings(d, "a day").into_iter().map(|(s, _)| s).collect(),
            });
            let zone_node = get(m, "timezone");
            let zone = zone_node.and_then(|z| cx.string(z, "timezone"));
            if zone_node.is_some() && zone.is_none() {
                return None;
            }
            match crate::hours::Hours::new(range, days.as_deref(), zone) {
                Ok(hours) => Some(Limit::Hours(hours)),
                Err(e) => {
                    let at = match e {
                        HoursError::Range(_) => None,
                        HoursError::Days(_) => days_node,
                        HoursError::Zone(_) => zone_node,
                    };
                    cx.err(at.unwrap_or(h), e.to_string());
                    None
                }
            }
        }
        None => {
            cx.err(
                item,
                format!("{what} has no limit: `max_rows` (rows per window), `max_denied` (refusals per window) or `hours` (allowed hours)"),
            );
            None
        }
    }
}

fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = if num.is_empty() { 1 } else { num.parse().ok()? };
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let v = n.checked_mul(mult)?;
    (v > 0).then_some(v)
}

fn build_anomaly(cx: &mut Ctx, n: &Node, levels: &[&str], roles: &[Role]) -> Vec<Anomaly> {
    let Value::Seq(items) = &n.value else {
        cx.err(
            n,
            format!("anomaly must be a list, found {}", n.type_name()),
        );
        return Vec::new();
    };
    let mut out: Vec<Anomaly> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("anomaly limit {}", i + 1);
        let Some(m) = cx.map(item, &what) else {
            continue;
        };
        cx.check_keys(m, &ANOMALY_KEYS, &what);
        let name = match get(m, "name") {
            Some(v) => cx.string(v, "name").map(str::to_string),
            None => {
                cx.err(item, format!("{what} has no `name`"));
                None
            }
        };
        if let (Some(nm), Some(v)) = (&name, get(m, "name")) {
            if let Some(first) = out.iter().find(|a| &a.name == nm) {
                cx.err(
                    v,
                    format!(
                        "duplicate anomaly limit \"{nm}\" (first at line {})",
                        first.pos.line
                    ),
                );
            }
        }
        let level = get(m, "level").and_then(|l| {
            let s = cx.string(l, "level")?;
            let id = levels.iter().position(|x| *x == s);
            if id.is_none() {
                cx.unknown(l, "level", s, levels);
            }
            id
        });
        let mut role_ids = Vec::new();
        if let Some(rn) = get(m, "roles") {
            let role_names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            for (s, node) in cx.strings(rn, "a role name") {
                match roles.iter().position(|r| r.name == s) {
                    Some(id) => role_ids.push(id),
                    None => cx.unknown(node, "role", s, &role_names),
                }
            }
        }
        let positive = |cx: &mut Ctx, key: &str| {
            get(m, key).and_then(|v| match v.value {
                Value::Int(x) if x > 0 => Some(x as u64),
                _ => {
                    cx.err(v, format!("{key} must be a positive integer"));
                    None
                }
            })
        };
        let limit = anomaly_limit(cx, m, item, &what, &positive);
        let per = match get(m, "per") {
            Some(v) => {
                let parsed = v.as_str().and_then(parse_duration);
                if parsed.is_none() {
                    cx.err_hint(v, "per must be a duration such as 30s, 1m, 1h or 1d", None);
                }
                parsed
            }
            // Hours rules alert at most once an hour per login unless told otherwise.
            None if get(m, "hours").is_some() => Some(3600),
            None => {
                cx.err(item, format!("{what} has no `per` (the window, e.g. 1m)"));
                None
            }
        };
        let then = match get(m, "then") {
            Some(v) => match v.as_str() {
                Some("log") => Some(AnomalyAction::Log),
                Some("deny") => Some(AnomalyAction::Deny),
                Some(s) => {
                    cx.unknown(v, "anomaly action", s, &["log", "deny"]);
                    None
                }
                None => {
                    cx.err(v, format!("then must be a string, found {}", v.type_name()));
                    None
                }
            },
            None => Some(AnomalyAction::Log),
        };
        if let (Some(name), Some(limit), Some(per_seconds), Some(then)) = (name, limit, per, then) {
            out.push(Anomaly {
                name,
                level,
                limit,
                per_seconds,
                then,
                roles: role_ids,
                pos: pos(item),
            });
        }
    }
    out
}
