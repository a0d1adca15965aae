//! Writes and lookups: values written into, or compared with, encrypted columns, located in
//! the SQL text so that pgveil can encrypt them.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn update(
        &mut self,
        u: &sqlparser::ast::Update,
    ) -> Result<(Kind, Vec<Src>), Refusal> {
        self.push_level(Vec::new());
        self.table_with_joins(&u.table)?;
        self.write_target(&u.table)?;
        if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from
        {
            for t in f {
                self.table_with_joins(t)?;
            }
        }
        for a in &u.assignments {
            self.assignment(a)?;
        }
        self.filtered(u.selection.as_ref(), u.returning.as_deref())
    }

    /// The WHERE and RETURNING of an UPDATE or DELETE, which end its scope.
    fn filtered(
        &mut self,
        selection: Option<&Expr>,
        returning: Option<&[SelectItem]>,
    ) -> Result<(Kind, Vec<Src>), Refusal> {
        if let Some(w) = selection {
            self.expr(w, Ctx::Pred)?;
        }
        let out = self.returning(returning)?;
        self.pop_level();
        Ok(out)
    }

    pub(super) fn delete(
        &mut self,
        d: &sqlparser::ast::Delete,
    ) -> Result<(Kind, Vec<Src>), Refusal> {
        self.push_level(Vec::new());
        let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
        for t in f.iter().chain(d.using.iter().flatten()) {
            self.table_with_joins(t)?;
        }
        if let Some(t) = f.first() {
            self.write_target(t)?;
        }
        self.filtered(d.selection.as_ref(), d.returning.as_deref())
    }

    /// The relation an UPDATE or DELETE writes (the first item of its scope).
    fn write_target(&self, t: &TableWithJoins) -> Result<(), Refusal> {
        if let TableFactor::Table { name, .. } = &t.relation {
            self.writes_unknown_policy_table(&name_parts(name))?;
            if let Some(item) = self.levels.last().and_then(|l| l.first()) {
                self.writable(&name_parts(name), item)?;
            }
        }
        Ok(())
    }

    pub(super) fn insert(
        &mut self,
        ins: &sqlparser::ast::Insert,
    ) -> Result<(Kind, Vec<Src>), Refusal> {
        let TableObject::TableName(table) = &ins.table else {
            return Err(Refusal::unsupported(
                "pgveil cannot analyse INSERT INTO a table function".into(),
                None,
            ));
        };
        let parts = name_parts(table);
        self.writes_unknown_policy_table(&parts)?;
        let target = self.relation_cols(&parts)?;
        let target_name = ins
            .table_alias
            .as_ref()
            .map(|a| ident(&a.alias))
            .unwrap_or_else(|| parts.last().cloned().unwrap_or_default());
        let mut item = target.clone().unwrap_or(Item {
            name: target_name.clone(),
            cols: None,
        });
        item.name = target_name;
        self.writable(&parts, &item)?;
        // The protected column each inserted position writes, if any.
        let listed: Vec<String> = ins
            .columns
            .iter()
            .filter_map(|c| name_parts(c).last().cloned())
            .collect();
        let targets: Vec<Option<ColumnId>> = match &item.cols {
            Some(cols) if listed.is_empty() => cols.iter().map(|c| src_col(c.src)).collect(),
            Some(cols) => listed
                .iter()
                .map(|n| {
                    cols.iter()
                        .find(|c| &c.name == n)
                        .and_then(|c| src_col(c.src))
                })
                .collect(),
            None => Vec::new(),
        };
        let encrypted_target = |i: usize, a: &Self| {
            targets
                .get(i)
                .copied()
                .flatten()
                .filter(|c| a.encrypted(*c))
        };
        if let Some(src) = &ins.source {
            let plain_values = src.with.is_none()
                && src.order_by.is_none()
                && src.limit_clause.is_none()
                && matches!(src.body.as_ref(), SetExpr::Values(_));
            match src.body.as_ref() {
                SetExpr::Values(v) if plain_values => {
                    for row in &v.rows {
                        for (i, e) in row.content.iter().enumerate() {
                            match encrypted_target(i, self) {
                                Some(c) => self.store_value(e, c)?,
                                None => {
                                    self.expr(e, Ctx::Arg)?;
                                }
                            }
                        }
                    }
                }
                _ => {
                    let outs = self.query(src)?;
                    for (i, o) in outs.iter().enumerate() {
                        match (encrypted_target(i, self), *o) {
                            (Some(t), Src::Col(c)) if self.same_ciphertext(c, t) => {
                                self.use_col(c, Usage::Projection)?;
                            }
                            (Some(t), _) => return Err(self.computed_refusal(t)),
                            (None, Src::Col(c)) if self.encrypted(c) => {
                                return Err(self.ciphertext_moved(c));
                            }
                            (None, Src::Col(c)) => self.use_col(c, Usage::FunctionArg)?,
                            (None, _) => {}
                        }
                    }
                    if outs.contains(&Src::Opaque)
                        && (0..targets.len()).any(|i| encrypted_target(i, self).is_some())
                    {
                        return Err(Refusal::unsupported(
                            "pgveil cannot line up the columns of this INSERT ... SELECT with the encrypted columns it writes".into(),
                            Some("list the columns explicitly instead of using *"),
                        ));
                    }
                }
            }
        } else if ins.columns.is_empty()
            && (0..targets.len()).any(|i| encrypted_target(i, self).is_some())
        {
            // DEFAULT VALUES: the server computes them; pgveil cannot see what.
        }
        self.push_level(vec![item.clone()]);
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                self.push_item(Item {
                    name: "excluded".into(),
                    cols: item.cols.clone(),
                });
                for a in &du.assignments {
                    self.assignment(a)?;
                }
                if let Some(w) = &du.selection {
                    self.expr(w, Ctx::Pred)?;
                }
            }
        }
        let out = self.returning(ins.returning.as_deref())?;
        self.pop_level();
        Ok(out)
    }

    /// `SET target = value` in UPDATE or ON CONFLICT DO UPDATE.
    pub(super) fn assignment(&mut self, a: &sqlparser::ast::Assignment) -> Result<(), Refusal> {
        let targets = self.assignment_targets(&a.target);
        let encrypted: Vec<ColumnId> = targets
            .iter()
            .copied()
            .flatten()
            .filter(|c| self.encrypted(*c))
            .collect();
        match (encrypted.as_slice(), targets.len()) {
            ([], _) => {
                self.expr(&a.value, Ctx::Arg)?;
            }
            ([c], 1) => self.store_value(&a.value, *c)?,
            ([c, ..], _) => {
                let col = self.env.policy.column(*c);
                return Err(Refusal::unsupported(
                    format!(
                        "pgveil cannot encrypt a multiple-column assignment to encrypted column {}",
                        col.qualified()
                    ),
                    Some("assign the encrypted column on its own: SET col = value"),
                ));
            }
        }
        Ok(())
    }

    /// The protected columns an assignment writes (`None` for unprotected ones).
    pub(super) fn assignment_targets(&self, t: &AssignmentTarget) -> Vec<Option<ColumnId>> {
        let names: Vec<&ObjectName> = match t {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        let target = self.levels.last().and_then(|l| l.first());
        names
            .into_iter()
            .map(|n| {
                let parts = name_parts(n);
                let col = parts.last()?;
                target
                    .and_then(|i| i.cols.as_ref())
                    .and_then(|cols| cols.iter().find(|c| &c.name == col))
                    .and_then(|c| src_col(c.src))
            })
            .collect()
    }

    pub(super) fn encrypted(&self, c: ColumnId) -> bool {
        self.env.policy.column(c).encrypt != EncryptMode::None
    }

    /// Whether the stored values of `from` may be copied as they are into `to`: the same key
    /// domain and the same mode, so the ciphertext means the same in both.
    pub(super) fn same_ciphertext(&self, from: ColumnId, to: ColumnId) -> bool {
        let (a, b) = (self.env.policy.column(from), self.env.policy.column(to));
        a.encrypt != EncryptMode::None && a.encrypt == b.encrypt && a.domain == b.domain
    }

    pub(super) fn computed_refusal(&self, target: ColumnId) -> Refusal {
        let c = self.env.policy.column(target);
        Refusal::computed_write(&c.qualified(), c.encrypt.name(), &c.domain, c.level)
    }

    pub(super) fn ciphertext_moved(&self, from: ColumnId) -> Refusal {
        let c = self.env.policy.column(from);
        Refusal::ciphertext_moved(&c.qualified(), c.encrypt.name(), &c.domain, c.level)
    }

    /// A value written into encrypted column `target`.
    pub(super) fn store_value(&mut self, e: &Expr, target: ColumnId) -> Result<(), Refusal> {
        if self.value_site(e, target, Purpose::Store)? {
            return Ok(());
        }
        if let Some(b) = bare(e) {
            if let Ref::Col(Src::Col(c)) = self.resolve(b) {
                if self.same_ciphertext(c, target) {
                    return self.use_col(c, Usage::Projection);
                }
                if self.encrypted(c) {
                    return Err(self.ciphertext_moved(c));
                }
            }
        }
        Err(self.computed_refusal(target))
    }

    /// Record a literal or parameter (possibly cast) as a site. `Ok(false)`: `e` is not one.
    pub(super) fn value_site(
        &mut self,
        e: &Expr,
        column: ColumnId,
        purpose: Purpose,
    ) -> Result<bool, Refusal> {
        let not_here = || {
            let c = self.env.policy.column(column);
            Refusal::unlocatable_value(
                format!(
                    "pgveil cannot locate a value for encrypted column {} in the SQL text",
                    c.qualified()
                ),
                Some("write the value as a plain literal or a parameter"),
            )
        };
        let (value, cast) = match e {
            Expr::Nested(inner) => return self.value_site(inner, column, purpose),
            Expr::Value(v) => (v, None),
            Expr::Cast {
                expr,
                kind,
                format: None,
                ..
            } => match expr.as_ref() {
                Expr::Value(v) => (v, Some(kind)),
                _ => return Ok(false),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } if matches!(inner.as_ref(), Expr::Value(v) if matches!(v.value, Value::Number(..))) =>
            {
                return self.negative_number(inner, column, purpose);
            }
            Expr::TypedString(_) | Expr::UnaryOp { .. } => {
                let c = self.env.policy.column(column);
                return Err(Refusal::unlocatable_value(
                    format!(
                        "pgveil cannot encrypt this form of value for encrypted column {}",
                        c.qualified()
                    ),
                    Some("write it as a quoted literal ('...') or a parameter"),
                ));
            }
            _ => return Ok(false),
        };
        let text = match &value.value {
            Value::Null => return Ok(true),
            Value::Placeholder(p) => {
                let n = p
                    .strip_prefix('$')
                    .and_then(|d| d.parse::<usize>().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        Refusal::unlocatable_value(
                            format!("pgveil does not understand the parameter {p}"),
                            Some("use $1, $2, ... parameters"),
                        )
                    })?;
                SiteValue::Param(n)
            }
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::NationalStringLiteral(s) => SiteValue::Literal(s.clone()),
            Value::DollarQuotedString(d) => SiteValue::Literal(d.value.clone()),
            Value::Number(n, _) => SiteValue::Literal(n.to_string()),
            Value::Boolean(b) => SiteValue::Literal(b.to_string()),
            _ => {
                let c = self.env.policy.column(column);
                return Err(Refusal::unlocatable_value(
                    format!(
                        "pgveil cannot encrypt this kind of literal for encrypted column {}",
                        c.qualified()
                    ),
                    Some("write it as a quoted literal ('...') or a parameter"),
                ));
            }
        };
        let sql = self.text.sql();
        let start = self.text.of(value.span.start).ok_or_else(not_here)?;
        let end = sites::token_end(sql, start).ok_or_else(not_here)?;
        let (start, end) = match cast {
            None => (start, end),
            Some(sqlparser::ast::CastKind::DoubleColon) => (
                start,
                sites::cast_suffix_end(sql, end).ok_or_else(not_here)?,
            ),
            Some(_) => sites::cast_call(sql, start, end).ok_or_else(not_here)?,
        };
        // A lookup can only be widened over key versions where it stands as `col = value`; a
        // cast around a literal stands in the way (around a parameter it is removed anyway).
        let purpose = match (purpose, cast, &text) {
            (
                Purpose::Lookup(LookupForm::Eq | LookupForm::NotEq),
                Some(_),
                SiteValue::Literal(_),
            ) => Purpose::Lookup(LookupForm::Single),
            (p, _, _) => p,
        };
        self.sites.push(Site {
            start,
            end,
            value: text,
            column,
            purpose,
        });
        Ok(true)
    }

    /// `-5` (a minus sign before a number): the site starts at the sign.
    pub(super) fn negative_number(
        &mut self,
        e: &Expr,
        column: ColumnId,
        purpose: Purpose,
    ) -> Result<bool, Refusal> {
        let Expr::Value(v) = e else { return Ok(false) };
        let Value::Number(n, _) = &v.value else {
            return Ok(false);
        };
        let sql = self.text.sql();
        let refuse = || {
            Refusal::unlocatable_value(
                "pgveil cannot locate a negative number in the SQL text".into(),
                Some("write the value as a quoted literal ('-5') or a parameter"),
            )
        };
        let start = self.text.of(v.span.start).ok_or_else(refuse)?;
        let end = sites::token_end(sql, start).ok_or_else(refuse)?;
        let b = sql.as_bytes();
        let mut sign = start;
        while sign > 0 && b[sign - 1].is_ascii_whitespace() {
            sign -= 1;
        }
        if sign == 0 || b[sign - 1] != b'-' {
            return Err(refuse());
        }
        let purpose = match purpose {
            Purpose::Lookup(LookupForm::Eq | LookupForm::NotEq) => {
                Purpose::Lookup(LookupForm::Single)
            }
            p => p,
        };
        self.sites.push(Site {
            start: sign - 1,
            end,
            value: SiteValue::Literal(format!("-{n}")),
            column,
            purpose,
        });
        Ok(true)
    }

    /// `col = value`, `col <> value` or an IN item, where `col` may be encrypted.
    pub(super) fn lookup(
        &mut self,
        col: &Expr,
        value: &Expr,
        ctx: Ctx,
        form: LookupForm,
    ) -> Result<(), Refusal> {
        if let Ref::Col(Src::Col(c)) = self.resolve(col) {
            if self.encrypted(c) {
                self.use_col(c, eq_usage(ctx))?;
                if !self.value_site(value, c, Purpose::Lookup(form))? {
                    return Err(self.computed_lookup(c));
                }
                return Ok(());
            }
        }
        self.reference(col, ctx, eq_usage(ctx))?;
        Ok(())
    }

    /// `col = ANY(...)` on an encrypted column: an array parameter (its elements encrypted at
    /// Bind) or an `ARRAY[...]` of values (each encrypted in place). `false`: the column is
    /// not encrypted, and the expression is read like any other.
    pub(super) fn any_lookup(
        &mut self,
        col: &Expr,
        array: &Expr,
        ctx: Ctx,
    ) -> Result<bool, Refusal> {
        let Ref::Col(Src::Col(c)) = self.resolve(col) else {
            return Ok(false);
        };
        if !self.encrypted(c) {
            return Ok(false);
        }
        self.use_col(c, eq_usage(ctx))?;
        match unnested(array) {
            Expr::Array(a) => {
                for e in &a.elem {
                    if !self.value_site(e, c, Purpose::Lookup(LookupForm::Item))? {
                        return Err(self.computed_lookup(c));
                    }
                }
            }
            e if is_parameter(e) => {
                self.value_site(e, c, Purpose::Lookup(LookupForm::Array))?;
            }
            _ => return Err(self.computed_lookup(c)),
        }
        Ok(true)
    }

    pub(super) fn computed_lookup(&self, c: ColumnId) -> Refusal {
        let col = self.env.policy.column(c);
        Refusal::computed_lookup(&col.qualified(), col.encrypt.name(), col.level)
    }

    /// `a = b` between two columns: encrypted columns only join columns of the same domain.
    pub(super) fn column_equality(&mut self, a: &Expr, b: &Expr) -> Result<(), Refusal> {
        let u = Usage::JoinKey { equality: true };
        let (ra, rb) = (self.resolve(a), self.resolve(b));
        let enc = |r: &Ref, s: &Self| match r {
            Ref::Col(Src::Col(c)) if s.encrypted(*c) => Some(*c),
            _ => None,
        };
        match (enc(&ra, self), enc(&rb, self)) {
            (None, None) => {}
            (Some(x), Some(y)) if self.same_ciphertext(x, y) => {}
            (Some(x), other) | (other, Some(x)) => {
                let cx = self.env.policy.column(x);
                let with = match other {
                    Some(y) => format!(
                        "column {}, which is encrypted differently",
                        self.env.policy.column(y).qualified()
                    ),
                    None => "a value the server holds in clear".into(),
                };
                return Err(Refusal::encryption_mismatch(
                    &cx.qualified(),
                    cx.encrypt.name(),
                    &cx.domain,
                    &with,
                    cx.level,
                ));
            }
        }
        self.reference(a, Ctx::Join, u)?;
        self.reference(b, Ctx::Join, u)?;
        Ok(())
    }
}

/// An expression without the parentheses around it.
fn unnested(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => unnested(inner),
        _ => e,
    }
}

/// A parameter `$n`, bare or cast (`$1::text[]`).
fn is_parameter(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_parameter(inner),
        Expr::Value(v) => matches!(v.value, Value::Placeholder(_)),
        Expr::Cast {
            expr, format: None, ..
        } => matches!(expr.as_ref(), Expr::Value(v) if matches!(v.value, Value::Placeholder(_))),
        _ => false,
    }
}
