//! Queries: CTEs, set operations, SELECT lists, and the clauses that sort or group.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn query(&mut self, q: &Query) -> Result<Vec<Src>, Refusal> {
        stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || self.query_inner(q))
    }

    fn query_inner(&mut self, q: &Query) -> Result<Vec<Src>, Refusal> {
        let mut pushed = false;
        if let Some(with) = &q.with {
            self.ctes.push(HashMap::new());
            pushed = true;
            for cte in &with.cte_tables {
                let name = ident(&cte.alias.name);
                let outs = if with.recursive {
                    // A recursive query can carry values from row to row (a name appended
                    // to the last): its rows can hold any number of stored values.
                    let before = self.reveal_events;
                    let outs = self.recursive_cte(&name, &cte.alias, &cte.query)?;
                    self.packs |= self.reveal_events > before;
                    outs
                } else {
                    let outs = self.query(&cte.query)?;
                    name_outputs(&cte.alias, &outs, &cte.query)
                };
                if let Some(m) = self.ctes.last_mut() {
                    m.insert(name, outs);
                }
            }
        }
        let result = self.query_body(q);
        if pushed {
            self.ctes.pop();
        }
        result
    }

    pub(super) fn query_body(&mut self, q: &Query) -> Result<Vec<Src>, Refusal> {
        let outs = match q.body.as_ref() {
            SetExpr::Select(s) => self.select(s, Some(q))?,
            other => {
                let outs = self.set_expr(other)?;
                if let Some(ob) = &q.order_by {
                    if let OrderByKind::Expressions(list) = &ob.kind {
                        let names = set_output_names(other);
                        for o in list {
                            self.order_item(&o.expr, &outs, &names)?;
                        }
                    }
                }
                outs
            }
        };
        if let Some(l) = &q.limit_clause {
            let mut v = Collect::default();
            let _ = l.visit(&mut v);
            self.collected(v, Ctx::Arg)?;
        }
        Ok(outs)
    }

    pub(super) fn recursive_cte(
        &mut self,
        name: &str,
        alias: &sqlparser::ast::TableAlias,
        q: &Query,
    ) -> Result<Vec<Col>, Refusal> {
        if let SetExpr::SetOperation {
            left,
            right,
            op,
            set_quantifier,
            ..
        } = q.body.as_ref()
        {
            let left_outs = self.set_expr(left)?;
            let cols = name_outputs_from(alias, &left_outs, &set_output_names(left));
            if let Some(m) = self.ctes.last_mut() {
                m.insert(name.to_string(), cols.clone());
            }
            let right_outs = self.set_expr(right)?;
            let merged = self.merge_set(*op, *set_quantifier, &left_outs, &right_outs)?;
            return Ok(name_outputs_from(alias, &merged, &set_output_names(left)));
        }
        let outs = self.query(q)?;
        Ok(name_outputs(alias, &outs, q))
    }

    pub(super) fn set_expr(&mut self, e: &SetExpr) -> Result<Vec<Src>, Refusal> {
        match e {
            SetExpr::Select(s) => self.select(s, None),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                let l = self.set_expr(left)?;
                let r = self.set_expr(right)?;
                self.merge_set(*op, *set_quantifier, &l, &r)
            }
            SetExpr::Values(v) => {
                let mut width = 0;
                for row in &v.rows {
                    width = width.max(row.content.len());
                    for e in &row.content {
                        self.expr(e, Ctx::Arg)?;
                    }
                }
                Ok(vec![Src::Pass; width])
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                let mut inner = Analyzer::new(self.env, self.text);
                inner.ctes = self.ctes.clone();
                let plan = inner.statement(s)?;
                self.touched.extend(plan.touched);
                self.sites.extend(plan.sites);
                self.revealed.extend(plan.revealed);
                self.packs |= plan.packs;
                self.spread_in.extend(plan.spread);
                Ok(plan.outputs)
            }
            SetExpr::Table(t) => {
                let parts: Vec<String> = t
                    .schema_name
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .chain(t.table_name.iter().map(|s| s.to_ascii_lowercase()))
                    .collect();
                let item = self.relation_cols(&parts)?;
                Ok(match item.and_then(|i| i.cols) {
                    Some(cols) => cols.into_iter().map(|c| c.src).collect(),
                    None => vec![Src::Opaque],
                })
            }
            SetExpr::Merge(_) => Err(Refusal::unsupported(
                "pgveil cannot analyse MERGE on protected data".into(),
                None,
            )),
        }
    }

    pub(super) fn merge_set(
        &mut self,
        op: SetOperator,
        q: SetQuantifier,
        l: &[Src],
        r: &[Src],
    ) -> Result<Vec<Src>, Refusal> {
        let dedup = !matches!(q, SetQuantifier::All) || !matches!(op, SetOperator::Union);
        let opaque = l.contains(&Src::Opaque) || r.contains(&Src::Opaque);
        if l.len() != r.len() || opaque {
            if l.iter().chain(r).any(|s| matches!(s, Src::Col(_))) {
                return Err(Refusal::unsupported(
                    "pgveil cannot line up the columns of this set operation over protected data"
                        .into(),
                    Some("list the columns explicitly instead of using *"),
                ));
            }
            return Ok(vec![Src::Opaque]);
        }
        let mut out = Vec::with_capacity(l.len());
        for (a, b) in l.iter().zip(r) {
            let merged = match (a, b) {
                (Src::Col(x), Src::Col(y)) if x != y => {
                    // Two different columns in one output: only clear readers may mix them.
                    self.use_col(*x, Usage::FunctionArg)?;
                    self.use_col(*y, Usage::FunctionArg)?;
                    let (cx, cy) = (self.env.policy.column(*x), self.env.policy.column(*y));
                    if cx.encrypt != EncryptMode::None || cy.encrypt != EncryptMode::None {
                        return Err(Refusal::encrypted_set_merge(
                            &cx.qualified(),
                            &cy.qualified(),
                        ));
                    }
                    Src::Pass
                }
                (Src::Col(x), _) | (_, Src::Col(x)) => Src::Col(*x),
                _ => Src::Pass,
            };
            if dedup {
                if let Src::Col(c) = merged {
                    self.use_col(c, Usage::GroupOrder)?;
                }
            }
            out.push(merged);
        }
        Ok(out)
    }

    pub(super) fn select(
        &mut self,
        s: &Select,
        query: Option<&Query>,
    ) -> Result<Vec<Src>, Refusal> {
        self.push_level(Vec::new());
        let r = self.select_inner(s, query);
        self.pop_level();
        r
    }

    pub(super) fn select_inner(
        &mut self,
        s: &Select,
        query: Option<&Query>,
    ) -> Result<Vec<Src>, Refusal> {
        for t in &s.from {
            self.table_with_joins(t)?;
        }
        if let Some(w) = &s.selection {
            self.expr(w, Ctx::Pred)?;
        }
        let mut outs = Vec::new();
        let mut names = Vec::new();
        for it in &s.projection {
            self.select_item(it, &mut outs, &mut names)?;
        }
        match &s.distinct {
            Some(Distinct::Distinct) => {
                for o in &outs {
                    if let Src::Col(c) = o {
                        self.grouped(|a| a.use_col(*c, Usage::GroupOrder))?;
                    }
                }
            }
            Some(Distinct::On(exprs)) => {
                for e in exprs {
                    self.order_item(e, &outs, &names)?;
                }
            }
            _ => {}
        }
        match &s.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs {
                    self.group_item(e, &outs, &names)?;
                }
            }
            GroupByExpr::All(_) => {
                for o in outs.clone() {
                    if let Src::Col(c) = o {
                        self.grouped(|a| a.use_col(c, Usage::GroupOrder))?;
                    }
                }
            }
        }
        if let Some(h) = &s.having {
            self.expr(h, Ctx::Pred)?;
        }
        for w in &s.named_window {
            let mut v = Collect::default();
            let _ = w.visit(&mut v);
            self.collected(v, Ctx::Group)?;
        }
        if let Some(q) = query {
            if let Some(ob) = &q.order_by {
                if let OrderByKind::Expressions(list) = &ob.kind {
                    for o in list {
                        self.order_item(&o.expr, &outs, &names)?;
                    }
                }
            }
        }
        if s.into.is_some() {
            self.moved(&outs)?;
        }
        if !s.lateral_views.is_empty() || s.prewhere.is_some() || s.qualify.is_some() {
            return Err(Refusal::unsupported(
                "pgveil cannot analyse this SELECT form over protected data".into(),
                None,
            ));
        }
        Ok(outs)
    }

    /// An ORDER BY or DISTINCT ON item, resolved as PostgreSQL does (SQL-92 first, then
    /// SQL-99): a bare name is an output column when one has that name (all of them, when
    /// several do), an integer an output position, anything else an expression over the
    /// input columns (where output names are not visible).
    pub(super) fn order_item(
        &mut self,
        e: &Expr,
        outs: &[Src],
        names: &[Option<String>],
    ) -> Result<(), Refusal> {
        let e = unparenthesized(e);
        if let Some(n) = ordinal(e) {
            return self.output_used(outs.get(n.wrapping_sub(1)).copied());
        }
        let named = match e {
            Expr::Identifier(i) => self.outputs_used(&ident(i), outs, names)?,
            _ => false,
        };
        if named {
            return Ok(());
        }
        self.expr(e, Ctx::Group).map(|_| ())
    }

    /// A GROUP BY item, resolved as PostgreSQL does: a bare name is an input column when a
    /// FROM item of this level has a column of that name, else an output column of that
    /// name, else an expression; an integer is an output position; ROLLUP, CUBE and GROUPING
    /// SETS apply the same rules to each of their items.
    pub(super) fn group_item(
        &mut self,
        e: &Expr,
        outs: &[Src],
        names: &[Option<String>],
    ) -> Result<(), Refusal> {
        let e = unparenthesized(e);
        match e {
            Expr::Rollup(sets) | Expr::Cube(sets) | Expr::GroupingSets(sets) => {
                for set in sets {
                    for item in set {
                        self.group_item(item, outs, names)?;
                    }
                }
                return Ok(());
            }
            Expr::Tuple(items) => {
                for item in items {
                    self.group_item(item, outs, names)?;
                }
                return Ok(());
            }
            _ => {}
        }
        // A bare name or position groups by whole values; an expression computes on them.
        if let Some(n) = ordinal(e) {
            return self.grouped(|a| a.output_used(outs.get(n.wrapping_sub(1)).copied()));
        }
        if let Expr::Identifier(i) = e {
            let n = ident(i);
            let input = self.levels.last().is_some_and(|l| {
                l.iter()
                    .any(|it| it.cols.iter().flatten().any(|c| c.name == n))
            });
            if !input && self.grouped(|a| a.outputs_used(&n, outs, names))? {
                return Ok(());
            }
        }
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            return self.grouped(|a| a.expr(e, Ctx::Group)).map(|_| ());
        }
        self.expr(e, Ctx::Group).map(|_| ())
    }

    /// The output columns named `name`, sorted or grouped by; `false` when none has that name.
    fn outputs_used(
        &mut self,
        name: &str,
        outs: &[Src],
        names: &[Option<String>],
    ) -> Result<bool, Refusal> {
        let matched = outputs_named(name, outs, names);
        for src in &matched {
            self.output_used(Some(*src))?;
        }
        Ok(!matched.is_empty())
    }

    /// An output column sorted or grouped by.
    fn output_used(&mut self, src: Option<Src>) -> Result<(), Refusal> {
        match src {
            Some(Src::Col(c)) => self.use_col(c, Usage::GroupOrder),
            _ => Ok(()),
        }
    }

    pub(super) fn select_item(
        &mut self,
        it: &SelectItem,
        outs: &mut Vec<Src>,
        names: &mut Vec<Option<String>>,
    ) -> Result<(), Refusal> {
        match it {
            SelectItem::UnnamedExpr(e) => {
                let src = self.expr(e, Ctx::Project)?;
                outs.push(src);
                names.push(expr_name(e));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let src = self.expr(expr, Ctx::Project)?;
                outs.push(src);
                names.push(Some(ident(alias)));
            }
            SelectItem::ExprWithAliases { expr, .. } => {
                self.expr(expr, Ctx::Arg)?;
                outs.push(Src::Opaque);
                names.push(None);
            }
            SelectItem::Wildcard(_) => {
                let items: Vec<Item> = self.levels.last().cloned().unwrap_or_default();
                for item in items {
                    self.expand(&item, outs, names)?;
                }
            }
            SelectItem::QualifiedWildcard(kind, _) => match kind {
                SelectItemQualifiedWildcardKind::ObjectName(n) => {
                    let parts = name_parts(n);
                    let Some(last) = parts.last() else {
                        return Ok(());
                    };
                    let item = self
                        .levels
                        .iter()
                        .rev()
                        .find_map(|l| l.iter().find(|i| &i.name == last).cloned());
                    match item {
                        Some(item) => self.expand(&item, outs, names)?,
                        None => outs.push(Src::Opaque),
                    }
                }
                SelectItemQualifiedWildcardKind::Expr(e) => {
                    self.expr(e, Ctx::Arg)?;
                    outs.push(Src::Opaque);
                }
            },
        }
        Ok(())
    }

    pub(super) fn expand(
        &mut self,
        item: &Item,
        outs: &mut Vec<Src>,
        names: &mut Vec<Option<String>>,
    ) -> Result<(), Refusal> {
        match &item.cols {
            Some(cols) => {
                let serial = self.serials.last().copied().unwrap_or_default();
                for c in cols {
                    if let Src::Col(id) = c.src {
                        self.exposed(Some((serial, item.name.clone())), id, Usage::Projection);
                        self.use_col(id, Usage::Projection)?;
                    }
                    outs.push(c.src);
                    names.push(Some(c.name.clone()));
                }
            }
            None => {
                outs.push(Src::Opaque);
                names.push(None);
            }
        }
        Ok(())
    }
}

/// An expression without the parentheses around it.
fn unparenthesized(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => unparenthesized(inner),
        _ => e,
    }
}

/// An integer constant in ORDER BY or GROUP BY: an output position.
fn ordinal(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The sources of the output columns named `name`.
fn outputs_named(name: &str, outs: &[Src], names: &[Option<String>]) -> Vec<Src> {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.as_deref() == Some(name))
        .map(|(i, _)| outs.get(i).copied().unwrap_or(Src::Pass))
        .collect()
}
