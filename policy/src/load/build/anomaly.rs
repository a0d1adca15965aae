//! `anomaly:`: the limits on reads per login, and their windows.
use super::*;

/// The one limit of an anomaly rule: `max_rows`, `max_denied`, or `hours` (with `days` and
/// `timezone`).
pub(super) fn anomaly_limit(
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

pub(super) fn parse_duration(s: &str) -> Option<u64> {
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

pub(super) fn build_anomaly(
    cx: &mut Ctx,
    n: &Node,
    levels: &[&str],
    roles: &[Role],
) -> Vec<Anomaly> {
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
