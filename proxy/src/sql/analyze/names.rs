//! Names: how identifiers fold, and the names PostgreSQL gives output columns.
use super::*;

/// The name PostgreSQL gives an unaliased output column, when it is a column reference.
pub(super) fn expr_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(ident(i)),
        Expr::CompoundIdentifier(is) => is.last().map(ident),
        Expr::Nested(inner) => expr_name(inner),
        _ => None,
    }
}

pub(super) fn set_output_names(e: &SetExpr) -> Vec<Option<String>> {
    match e {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|it| match it {
                SelectItem::UnnamedExpr(e) => expr_name(e),
                SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => set_output_names(&q.body),
        SetExpr::SetOperation { left, .. } => set_output_names(left),
        _ => Vec::new(),
    }
}

pub(super) fn unnamed_outputs(outs: &[Src], q: &Query) -> Vec<Col> {
    let names = set_output_names(&q.body);
    outs.iter()
        .enumerate()
        .map(|(i, s)| Col {
            name: names.get(i).cloned().flatten().unwrap_or_default(),
            src: *s,
        })
        .collect()
}

pub(super) fn name_outputs(
    alias: &sqlparser::ast::TableAlias,
    outs: &[Src],
    q: &Query,
) -> Vec<Col> {
    name_outputs_from(alias, outs, &set_output_names(&q.body))
}

pub(super) fn name_outputs_from(
    alias: &sqlparser::ast::TableAlias,
    outs: &[Src],
    names: &[Option<String>],
) -> Vec<Col> {
    outs.iter()
        .enumerate()
        .map(|(i, s)| Col {
            name: alias
                .columns
                .get(i)
                .map(|c| ident(&c.name))
                .or_else(|| names.get(i).cloned().flatten())
                .unwrap_or_default(),
            src: *s,
        })
        .collect()
}

pub(super) fn rename_columns(item: &mut Item, alias: &sqlparser::ast::TableAlias) {
    if let Some(cols) = &mut item.cols {
        for (c, a) in cols.iter_mut().zip(&alias.columns) {
            c.name = ident(&a.name);
        }
    }
}
