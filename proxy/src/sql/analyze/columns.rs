//! Column uses: resolving a name to a column of the scope, and checking its use against the
//! policy.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn use_col(&mut self, c: ColumnId, usage: Usage) -> Result<(), Refusal> {
        let policy = self.env.policy;
        self.role_consulted.set(true);
        if let Err(reason) = policy.check_usage(self.env.roles, c, usage) {
            let col = policy.column(c);
            let hint = match reason.action {
                Action::Deny => None,
                _ => Some(format!(
                    "this login may only read {} as a whole value ({}); filtering, sorting, \
                     grouping or computing on it would reveal what the {} hides",
                    col.qualified(),
                    reason.action,
                    reason.action
                )),
            };
            let (column, reason) = (col.qualified(), reason.to_string());
            return Err(Refusal::column_use(&column, reason, hint, col.level));
        }
        let col = policy.column(c);
        let equality = matches!(
            usage,
            Usage::Predicate { equality: true } | Usage::JoinKey { equality: true }
        );
        if equality && !self.nullness && col.encrypt == EncryptMode::Randomized {
            return Err(Refusal::randomized_equality(&col.qualified(), col.level));
        }
        // Grouping by a whole deterministic value groups equal plaintexts together.
        let groups = matches!(usage, Usage::GroupOrder)
            && self.grouping
            && col.encrypt == EncryptMode::Deterministic;
        let on_ciphertext = !matches!(usage, Usage::Projection) && !equality && !groups;
        if on_ciphertext && col.encrypt != EncryptMode::None {
            return Err(Refusal::on_ciphertext(
                &col.qualified(),
                col.encrypt.name(),
                usage_words(usage),
                col.level,
            ));
        }
        if matches!(usage, Usage::Projection | Usage::FunctionArg) {
            self.reveal_events += 1;
            if !self.revealed.contains(&c) {
                self.revealed.push(c);
            }
        }
        match self.touched.iter_mut().find(|(id, _)| *id == c) {
            Some((_, u)) if *u == Usage::Projection => *u = usage,
            Some(_) => {}
            None => self.touched.push((c, usage)),
        }
        Ok(())
    }

    pub(super) fn resolve(&self, e: &Expr) -> Ref {
        let parts: Vec<String> = match e {
            Expr::Identifier(i) => vec![ident(i)],
            Expr::CompoundIdentifier(is) => is.iter().map(ident).collect(),
            _ => return Ref::Unresolved,
        };
        match parts.as_slice() {
            [name] => {
                for (li, level) in self.levels.iter().enumerate().rev() {
                    let mut found = None;
                    for item in level {
                        if let Some(c) = item.cols.iter().flatten().find(|c| &c.name == name) {
                            // Prefer a protected match when a name is ambiguous.
                            if found.is_none() || matches!(c.src, Src::Col(_)) {
                                found = Some((c.src, &item.name));
                            }
                        }
                    }
                    if let Some((src, item)) = found {
                        self.resolved_in(li, item);
                        return Ref::Col(src);
                    }
                    if level.iter().any(|i| i.cols.is_none()) {
                        return Ref::Unresolved;
                    }
                    if let Some(item) = level.iter().find(|i| &i.name == name) {
                        self.resolved_in(li, &item.name);
                        return Ref::WholeRow(item.protected());
                    }
                }
                Ref::Unresolved
            }
            [.., table, col] => {
                for (li, level) in self.levels.iter().enumerate().rev() {
                    if let Some(item) = level.iter().find(|i| &i.name == table) {
                        self.resolved_in(li, &item.name);
                        return match &item.cols {
                            Some(cols) => match cols.iter().find(|c| &c.name == col) {
                                Some(c) => Ref::Col(c.src),
                                None => Ref::Unresolved,
                            },
                            None => Ref::Unresolved,
                        };
                    }
                }
                // `(row).field` or a name pgveil does not know.
                Ref::Unresolved
            }
            [] => Ref::Unresolved,
        }
    }

    /// A name that resolved to nothing: harmless unless it could be a protected column.
    pub(super) fn unresolved(&self, e: &Expr) -> Result<(), Refusal> {
        let last = match e {
            Expr::Identifier(i) => ident(i),
            Expr::CompoundIdentifier(is) => is.last().map(ident).unwrap_or_default(),
            _ => return Ok(()),
        };
        let policy = self.env.policy.policy();
        if let Some(c) = policy.columns.iter().find(|c| c.column == last) {
            return Err(Refusal::ambiguous_name(&last, &c.qualified(), c.level));
        }
        Ok(())
    }

    /// The FROM item a name was found in: its level's serial and its name (unique in a
    /// level, as PostgreSQL requires of FROM items).
    fn resolved_in(&self, level: usize, item: &str) {
        let serial = self.serials.get(level).copied().unwrap_or_default();
        self.resolved.replace(Some((serial, item.to_string())));
    }

    /// A protected value read from FROM item `at` reaches the result: note it, so a row
    /// joining several rows of one table counts as that many (see [`StatementPlan::spread`]).
    pub(super) fn exposed(&mut self, at: Option<(usize, String)>, c: ColumnId, usage: Usage) {
        if !matches!(usage, Usage::Projection | Usage::FunctionArg) {
            return;
        }
        if let Some((serial, item)) = at {
            let e = (serial, item, c);
            if !self.exposures.contains(&e) {
                self.exposures.push(e);
            }
        }
    }

    pub(super) fn reference(&mut self, e: &Expr, ctx: Ctx, usage: Usage) -> Result<Src, Refusal> {
        self.resolved.replace(None);
        let found = self.resolve(e);
        let at = self.resolved.take();
        match found {
            Ref::Col(Src::Col(c)) => {
                self.exposed(at, c, usage);
                self.use_col(c, usage)?;
                Ok(if ctx == Ctx::Project {
                    Src::Col(c)
                } else {
                    Src::Pass
                })
            }
            Ref::Col(_) => Ok(Src::Pass),
            Ref::WholeRow(cols) => {
                for c in cols {
                    self.exposed(at.clone(), c, Usage::FunctionArg);
                    self.use_col(c, Usage::FunctionArg)?;
                }
                Ok(Src::Pass)
            }
            Ref::Unresolved => {
                self.unresolved(e)?;
                Ok(Src::Pass)
            }
        }
    }
}

pub(super) fn eq_usage(ctx: Ctx) -> Usage {
    match ctx {
        Ctx::Join => Usage::JoinKey { equality: true },
        _ => Usage::Predicate { equality: true },
    }
}

pub(super) fn usage_words(u: Usage) -> &'static str {
    match u {
        Usage::Projection => "reading it",
        Usage::Predicate { equality: true } | Usage::JoinKey { equality: true } => "comparing it",
        Usage::Predicate { equality: false } => "a range, pattern or function condition on it",
        Usage::JoinKey { equality: false } => "a non-equality join on it",
        Usage::GroupOrder => "grouping or sorting by it",
        Usage::FunctionArg => "computing on it",
    }
}
