//! Expressions: the forms read precisely (comparisons, IN, IS NULL, subqueries), and the
//! generic walk for the rest.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn expr(&mut self, e: &Expr, ctx: Ctx) -> Result<Src, Refusal> {
        // Deep trees (nested views' definitions among them) recurse here: grow the stack
        // when little of it is left, whatever thread this runs on.
        stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || self.expr_inner(e, ctx))
    }

    fn expr_inner(&mut self, e: &Expr, ctx: Ctx) -> Result<Src, Refusal> {
        let usage = match ctx {
            Ctx::Project => Usage::Projection,
            other => other.generic_usage(),
        };
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.reference(e, ctx, usage),
            Expr::Nested(inner) => self.expr(inner, ctx),
            Expr::BinaryOp { left, op, right }
                if matches!(ctx, Ctx::Pred | Ctx::Join)
                    && matches!(op, BinaryOperator::And | BinaryOperator::Or) =>
            {
                self.expr(left, ctx)?;
                self.expr(right, ctx)?;
                Ok(Src::Pass)
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } if matches!(ctx, Ctx::Pred | Ctx::Join) => {
                self.expr(expr, ctx)?;
                Ok(Src::Pass)
            }
            Expr::BinaryOp { left, op, right }
                if matches!(ctx, Ctx::Pred | Ctx::Join)
                    && matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) =>
            {
                let form = if matches!(op, BinaryOperator::Eq) {
                    LookupForm::Eq
                } else {
                    LookupForm::NotEq
                };
                match (bare(left), bare(right)) {
                    (Some(a), Some(b)) => self.column_equality(a, b)?,
                    (Some(a), None) if valueish(right) => self.lookup(a, right, ctx, form)?,
                    (None, Some(b)) if valueish(left) => {
                        self.lookup(b, left, ctx, LookupForm::Single)?
                    }
                    _ => {
                        self.generic(e, ctx)?;
                    }
                }
                Ok(Src::Pass)
            }
            Expr::InList { expr, list, .. }
                if matches!(ctx, Ctx::Pred | Ctx::Join)
                    && bare(expr).is_some()
                    && list.iter().all(valueish) =>
            {
                if let Some(b) = bare(expr) {
                    if list.is_empty() {
                        self.reference(b, ctx, eq_usage(ctx))?;
                    }
                    for item in list {
                        self.lookup(b, item, ctx, LookupForm::Item)?;
                    }
                }
                Ok(Src::Pass)
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if matches!(ctx, Ctx::Pred | Ctx::Join) && bare(left).is_some() => {
                match bare(left) {
                    Some(b) if self.any_lookup(b, right, ctx)? => {}
                    _ => self.generic(e, ctx)?,
                }
                Ok(Src::Pass)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner)
                if matches!(ctx, Ctx::Pred | Ctx::Join) && bare(inner).is_some() =>
            {
                if let Some(b) = bare(inner) {
                    // NULL stays NULL under encryption: the test works on ciphertext.
                    self.nullness = true;
                    let r = self.reference(b, ctx, eq_usage(ctx));
                    self.nullness = false;
                    r?;
                }
                Ok(Src::Pass)
            }
            Expr::InSubquery { expr, subquery, .. } if matches!(ctx, Ctx::Pred | Ctx::Join) => {
                let outs = self.query(subquery)?;
                let eq = bare(expr).is_some() && outs.len() == 1;
                let u = if eq {
                    Usage::JoinKey { equality: true }
                } else {
                    Usage::FunctionArg
                };
                for o in outs.iter().copied() {
                    if let Src::Col(c) = o {
                        self.use_col(c, u)?;
                    }
                }
                match bare(expr) {
                    Some(b) if eq => {
                        let inner = outs.first().copied().unwrap_or(Src::Pass);
                        let left = match self.resolve(b) {
                            Ref::Col(Src::Col(c)) => Some(c),
                            _ => None,
                        };
                        let right = src_col(inner);
                        let clash = match (left, right) {
                            (Some(x), Some(y)) => {
                                (self.encrypted(x) || self.encrypted(y))
                                    && !self.same_ciphertext(x, y)
                            }
                            (Some(x), None) | (None, Some(x)) => self.encrypted(x),
                            (None, None) => false,
                        };
                        if clash {
                            let c = left.or(right).unwrap_or_default();
                            let col = self.env.policy.column(c);
                            return Err(Refusal::in_subquery_mismatch(
                                &col.qualified(),
                                col.encrypt.name(),
                                &col.domain,
                                col.level,
                            ));
                        }
                        self.reference(b, Ctx::Join, u)?;
                    }
                    _ => {
                        self.expr(expr, Ctx::Arg)?;
                    }
                }
                Ok(Src::Pass)
            }
            Expr::Exists { subquery, .. } => {
                self.query(subquery)?;
                Ok(Src::Pass)
            }
            Expr::Subquery(q) => {
                let before = (self.reveal_events, self.revealed.clone());
                for o in self.query(q)? {
                    if let Src::Col(c) = o {
                        self.use_col(c, Usage::FunctionArg)?;
                    }
                }
                if matches!(ctx, Ctx::Project | Ctx::Arg) {
                    self.subquery_revealed(before);
                }
                Ok(Src::Pass)
            }
            Expr::Value(_) => Ok(Src::Pass),
            Expr::Function(f) if count_distinct(f).is_some() => {
                // count(DISTINCT col) counts groups of equal whole values.
                if let Some(col) = count_distinct(f) {
                    self.grouped(|a| a.reference(col, Ctx::Group, Usage::GroupOrder))?;
                }
                Ok(Src::Pass)
            }
            _ => {
                self.generic(e, ctx)?;
                Ok(Src::Pass)
            }
        }
    }

    /// Any other expression: every protected name inside is used in the most restricted way
    /// the context allows; subqueries inside are analysed in this scope.
    pub(super) fn generic(&mut self, e: &Expr, ctx: Ctx) -> Result<(), Refusal> {
        let mut v = Collect::default();
        let _ = e.visit(&mut v);
        self.collected(v, ctx)
    }

    pub(super) fn collected(&mut self, v: Collect, ctx: Ctx) -> Result<(), Refusal> {
        let usage = ctx.generic_usage();
        for f in &v.functions {
            self.check_function(f)?;
        }
        if !self.packs && v.packing.iter().any(|f| self.packs_protected(f)) {
            self.packs = true;
        }
        if let Some(arg) = v.bad_set_config {
            return Err(Refusal::set_config(&arg));
        }
        for q in &v.subqueries {
            let before = (self.reveal_events, self.revealed.clone());
            for o in self.query(q)? {
                if let Src::Col(c) = o {
                    self.use_col(c, Usage::FunctionArg)?;
                }
            }
            if matches!(ctx, Ctx::Project | Ctx::Arg) {
                self.subquery_revealed(before);
            }
        }
        for r in &v.refs {
            self.reference(r, Ctx::Arg, usage)?;
        }
        for w in &v.whole_rows {
            let cols = self
                .levels
                .iter()
                .rev()
                .find_map(|l| l.iter().find(|i| &i.name == w))
                .map(|i| i.protected())
                .unwrap_or_default();
            for c in cols {
                self.use_col(c, Usage::FunctionArg)?;
            }
        }
        Ok(())
    }

    pub(super) fn function_arg(&mut self, a: &FunctionArg) -> Result<(), Refusal> {
        let arg = match a {
            FunctionArg::Named { arg, .. }
            | FunctionArg::ExprNamed { arg, .. }
            | FunctionArg::Unnamed(arg) => arg,
        };
        if let FunctionArgExpr::Expr(e) = arg {
            self.expr(e, Ctx::Arg)?;
        }
        Ok(())
    }

    /// A subquery in a result position was analysed (`before`: the reveal count and the
    /// revealed columns before it): note the columns it revealed, once for this subquery.
    fn subquery_revealed(&mut self, before: (usize, Vec<ColumnId>)) {
        if self.reveal_events == before.0 {
            return;
        }
        // The columns revealed inside it: those new since; when none is new, every column
        // revealed so far (it may have used any of them again).
        let mut inside: Vec<ColumnId> = self
            .revealed
            .iter()
            .copied()
            .filter(|c| !before.1.contains(c))
            .collect();
        if inside.is_empty() {
            inside = before.1;
        }
        self.subquery_reveals.extend(inside);
    }

    /// Whether a gathering aggregate or constructor takes a protected value: a protected
    /// column or a whole row holding one, or a subquery (which is not looked into here).
    fn packs_protected(&self, f: &Function) -> bool {
        let mut inside = Collect::default();
        // Its arguments, FILTER, WITHIN GROUP ordering and window: everything it reads.
        let _ = f.visit(&mut inside);
        if !inside.subqueries.is_empty() || matches!(f.args, FunctionArguments::Subquery(_)) {
            return true;
        }
        let whole_row = |name: &String| {
            self.levels
                .iter()
                .rev()
                .find_map(|l| l.iter().find(|i| &i.name == name))
                .is_some_and(|i| !i.protected().is_empty())
        };
        inside.refs.iter().any(|r| match self.resolve(r) {
            Ref::Col(Src::Col(_)) | Ref::Unresolved => true,
            Ref::WholeRow(cols) => !cols.is_empty(),
            Ref::Col(_) => false,
        }) || inside.whole_rows.iter().any(whole_row)
    }

    pub(super) fn check_function(&self, name: &str) -> Result<(), Refusal> {
        if name == "set_config" {
            self.changes(super::SessionChange::Role);
        }
        if let Some(reach) = crate::catalog::functions::reach(name) {
            if !self.unrestricted() {
                return Err(Refusal::runs_sql_text(name, reach.describe()));
            }
        }
        if self.env.snapshot.changes_reading(name) && !self.unrestricted() {
            return Err(Refusal::reading_function(name));
        }
        if let Some(cols) = self.env.snapshot.function_exposes(name) {
            for &c in cols {
                let d = self.decide(c);
                if d.action != Action::Allow {
                    return Err(Refusal::function_over_protected(
                        name,
                        self.exposure(c, d.action),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a generic walk found at its own level (not inside nested queries).
#[derive(Default)]
pub(super) struct Collect {
    depth: usize,
    refs: Vec<Expr>,
    subqueries: Vec<Query>,
    functions: Vec<String>,
    whole_rows: Vec<String>,
    bad_set_config: Option<String>,
    /// Calls of [`PACKING`] functions.
    packing: Vec<Function>,
}

/// Aggregates and constructors whose one result gathers the values of many rows (PostgreSQL
/// 15's, and the SQL/JSON ones of later versions).
const PACKING: &[&str] = &[
    "array",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_agg_strict",
    "jsonb_agg_strict",
    "json_object_agg",
    "jsonb_object_agg",
    "json_object_agg_strict",
    "jsonb_object_agg_strict",
    "json_object_agg_unique",
    "jsonb_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_object_agg_unique_strict",
    "json_arrayagg",
    "json_objectagg",
    "xmlagg",
    "range_agg",
    "range_intersect_agg",
    // Aggregates other than count, min and max: arithmetic can pack many values into one
    // (`sum(x::numeric * 10^(9 * id))`).
    "sum",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "any_value",
];

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.subqueries.push(q.clone());
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.refs.push(e.clone()),
            Expr::QualifiedWildcard(n, _) => {
                if let Some(last) = name_parts(n).last() {
                    self.whole_rows.push(last.clone());
                }
            }
            Expr::Function(f) => self.function(f),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Collect {
    fn function(&mut self, f: &Function) {
        let name = name_parts(&f.name).last().cloned().unwrap_or_default();
        if let FunctionArguments::List(list) = &f.args {
            for a in &list.args {
                let arg = match a {
                    FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg) => arg,
                };
                if let FunctionArgExpr::QualifiedWildcard(n) = arg {
                    if let Some(last) = name_parts(n).last() {
                        self.whole_rows.push(last.clone());
                    }
                }
            }
            if name == "set_config" {
                let first = list.args.first().and_then(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                        Value::SingleQuotedString(s) => Some(s.to_ascii_lowercase()),
                        _ => None,
                    },
                    _ => None,
                });
                // The role is followed (a barrier, then the server is asked); the settings
                // that decide how SQL is read are changed with SET, which pgveil follows
                // exactly, not through a name pgveil may not see.
                match first.as_deref() {
                    Some("standard_conforming_strings" | "client_encoding") => {
                        self.bad_set_config = first.clone()
                    }
                    Some(_) => {}
                    None => self.bad_set_config = Some("a computed name".into()),
                }
            }
        }
        // Window functions read other rows' values into this one (lag, nth_value, ...), and
        // ordered-set aggregates gather by their ordering.
        if PACKING.contains(&name.as_str()) || f.over.is_some() || !f.within_group.is_empty() {
            self.packing.push(f.clone());
        }
        self.functions.push(name);
    }
}

/// The bare column of `count(DISTINCT col)`, written plainly: no FILTER, OVER, WITHIN GROUP
/// or ORDER BY inside, and named `count` (any schema qualification must be `pg_catalog`).
fn count_distinct(f: &Function) -> Option<&Expr> {
    let parts = name_parts(&f.name);
    let plain_name = match parts.as_slice() {
        [n] => n == "count",
        [schema, n] => schema == "pg_catalog" && n == "count",
        _ => false,
    };
    if !plain_name
        || f.filter.is_some()
        || f.over.is_some()
        || !f.within_group.is_empty()
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if !matches!(
        list.duplicate_treatment,
        Some(sqlparser::ast::DuplicateTreatment::Distinct)
    ) || !list.clauses.is_empty()
    {
        return None;
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => bare(e),
        _ => None,
    }
}
