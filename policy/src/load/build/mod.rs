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
    /// A string naming one of `names` (`key` says where, `what` what it names).
    fn named<T>(
        &mut self,
        n: &Node,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Option<T> {
        let s = self.string(n, key)?;
        let found = parse(s);
        if found.is_none() {
            self.unknown(n, what, s, names);
        }
        found
    }

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

mod anomaly;
mod rules;
mod tables;

use anomaly::build_anomaly;
pub(crate) use rules::selector_matches;
use rules::{build_defaults, build_rules};
use tables::{build_tables, parse_mask};
