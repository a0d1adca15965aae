//! `tables:`: the classified columns, their kinds, encryption and masks.
use super::*;

pub(super) fn build_tables(cx: &mut Ctx, n: &Node, levels: &[&str]) -> Vec<Column> {
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

pub(super) fn build_column(
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
        Some(k) => cx.named(k, "kind", "kind", Kind::parse, &Kind::NAMES),
        None => Some(Kind::Text),
    };
    let encrypt = match get(m, "encrypt") {
        Some(e) => cx.named(
            e,
            "encrypt",
            "encryption mode",
            EncryptMode::parse,
            &EncryptMode::NAMES,
        ),
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

pub(super) fn parse_mask(cx: &mut Ctx, n: &Node) -> Option<Mask> {
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
pub(super) fn check_domains(cx: &mut Ctx, columns: &[Column]) {
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
