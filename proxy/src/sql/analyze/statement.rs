//! Statement dispatch: what each kind of statement reads, writes and returns.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn statement(&mut self, s: &Statement) -> Result<StatementPlan, Refusal> {
        let mut copy = None;
        // A prepared statement's text was judged at PREPARE; what it changes (a role switch
        // through set_config) happens when it runs.
        if matches!(s, Statement::Execute { .. }) {
            self.changes(super::SessionChange::Role);
        }
        let (kind, outputs) = match s {
            Statement::Query(q) => (Kind::Rows, self.query(q)?),
            Statement::Insert(ins) => self.insert(ins)?,
            Statement::Update(u) => self.update(u)?,
            Statement::Delete(d) => self.delete(d)?,
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                let (kind, outs, format) =
                    self.copy_statement(source, *to, target, options, legacy_options)?;
                copy = format;
                (kind, outs)
            }
            Statement::Explain { statement, .. } => {
                let inner = self.statement(statement)?;
                // EXPLAIN ANALYZE runs the statement: its values are encrypted as if it ran,
                // and the columns it touches are the EXPLAIN's.
                self.sites.extend(inner.sites);
                self.touched.extend(inner.touched);
                self.revealed.extend(inner.revealed);
                self.packs |= inner.packs;
                self.spread_in.extend(inner.spread);
                if inner.copy_in.is_some() {
                    return Err(Refusal::unsupported(
                        "pgveil cannot explain COPY into encrypted columns".into(),
                        None,
                    ));
                }
                self.require_clear("EXPLAIN")?;
                (Kind::Rows, Vec::new())
            }
            Statement::CreateTable(ct) => {
                if let Some(q) = &ct.query {
                    let outs = self.query(q)?;
                    self.moved(&outs)?;
                }
                (Kind::Ddl, Vec::new())
            }
            Statement::CreateView(cv) => {
                // A view over protected data is read through its lineage once the catalog
                // knows it, but not before (in the transaction that creates it): only a login
                // that may read everything in clear may create one.
                let outs = self.query(&cv.query)?;
                let over_protected =
                    !self.touched.is_empty() || outs.iter().any(|s| matches!(s, Src::Col(_)));
                if over_protected && !self.unrestricted() {
                    return Err(Refusal::creates_code("views over protected data"));
                }
                self.touched.clear();
                (Kind::Ddl, Vec::new())
            }
            Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_) => {
                // Code that names protected data, or builds its SQL at run time, reaches it
                // where pgveil cannot see (and, in the transaction that creates it, before the
                // catalog knows it): only a login that may read everything in clear may create
                // it. Other code reaches nothing protected.
                let text = self.text.sql();
                if (self.env.names_protected(text) || dynamic_code(text)) && !self.unrestricted() {
                    return Err(Refusal::creates_code(
                        "functions, procedures and triggers that name protected data or build SQL at run time",
                    ));
                }
                (Kind::Ddl, Vec::new())
            }
            Statement::Declare { stmts } => {
                for d in stmts {
                    if let Some(q) = &d.for_query {
                        let outs = self.query(q)?;
                        if !self.touched.is_empty() || outs.iter().any(|s| *s != Src::Pass) {
                            return Err(Refusal::unsupported(
                                "pgveil does not yet transform cursors over protected data"
                                    .into(),
                                Some("run the query itself; use LIMIT/OFFSET or the extended protocol's row limit to page"),
                            ));
                        }
                    }
                }
                (Kind::NoRows, Vec::new())
            }
            Statement::Prepare { statement, .. } => {
                let inner = self.statement(statement)?;
                if !inner.touched.is_empty()
                    || !inner.sites.is_empty()
                    || inner.copy_in.is_some()
                    || inner.outputs.iter().any(|s| *s != Src::Pass)
                {
                    return Err(Refusal::unsupported(
                        "pgveil does not support SQL-level PREPARE over protected data".into(),
                        Some("use the extended protocol (your driver's prepared statements), which pgveil analyses"),
                    ));
                }
                (Kind::NoRows, Vec::new())
            }
            Statement::Set(set) => {
                self.set(set)?;
                (Kind::NoRows, Vec::new())
            }
            // They may reset the role and the settings that decide how SQL is read.
            Statement::Discard { .. } | Statement::Reset(_) => {
                self.changes(SessionChange::Reading);
                (Kind::NoRows, Vec::new())
            }
            Statement::AlterTable(_)
            | Statement::CreateIndex(_)
            | Statement::Drop { .. }
            | Statement::Truncate(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Comment { .. }
            | Statement::AlterRole { .. }
            | Statement::CreateRole(_)
            | Statement::CreateSchema { .. } => (Kind::Ddl, Vec::new()),
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::ShowVariable { .. }
            | Statement::Deallocate { .. }
            | Statement::Execute { .. }
            | Statement::Close { .. }
            | Statement::Fetch { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. } => {
                self.generic_statement(s)?;
                (Kind::NoRows, Vec::new())
            }
            other => {
                return Err(Refusal::unknown_statement(
                    &crate::sql::first_word(&other.to_string()).to_ascii_uppercase(),
                ))
            }
        };
        Ok(StatementPlan {
            kind,
            copy,
            outputs,
            touched: std::mem::take(&mut self.touched),
            sites: std::mem::take(&mut self.sites),
            copy_in: self.copy_in.take(),
            revealed: std::mem::take(&mut self.revealed),
            packs: std::mem::take(&mut self.packs),
            spread: spread(
                &std::mem::take(&mut self.exposures),
                std::mem::take(&mut self.spread_in),
            ),
            subquery_reveals: std::mem::take(&mut self.subquery_reveals),
        })
    }

    /// A statement with no query structure of its own: every protected name in it counts.
    pub(super) fn generic_statement(&mut self, s: &Statement) -> Result<(), Refusal> {
        let mut v = Collect::default();
        let _ = s.visit(&mut v);
        self.push_level(Vec::new());
        let r = self.collected(v, Ctx::Arg);
        self.pop_level();
        r
    }

    /// `SET`: role and session authorization switches are followed (the relay asks the server
    /// who the current role is afterwards); the values of other settings are expressions.
    pub(super) fn set(&mut self, set: &Set) -> Result<(), Refusal> {
        match set {
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
                self.changes(SessionChange::Role);
                Ok(())
            }
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let var = name_parts(variable).join(".");
                match var.as_str() {
                    "role" | "session_authorization" => {
                        self.changes(SessionChange::Role);
                        Ok(())
                    }
                    "standard_conforming_strings" | "client_encoding" => {
                        self.changes(SessionChange::Reading);
                        Ok(())
                    }
                    _ => {
                        for v in values {
                            self.expr(v, Ctx::Arg)?;
                        }
                        Ok(())
                    }
                }
            }
            Set::SetTimeZone { value, .. } => self.expr(value, Ctx::Arg).map(|_| ()),
            Set::SetTransaction { .. } => Ok(()),
            // SET NAMES is client_encoding; anything else is taken to change how SQL is read.
            _ => {
                self.changes(SessionChange::Reading);
                Ok(())
            }
        }
    }

    pub(super) fn returning(
        &mut self,
        items: Option<&[SelectItem]>,
    ) -> Result<(Kind, Vec<Src>), Refusal> {
        match items {
            None => Ok((Kind::NoRows, Vec::new())),
            Some(items) => {
                let mut outs = Vec::new();
                for it in items {
                    self.select_item(it, &mut outs, &mut Vec::new())?;
                }
                Ok((Kind::Rows, outs))
            }
        }
    }

    /// Protected values copied into a new table or another table: only clear readers may.
    pub(super) fn moved(&mut self, outs: &[Src]) -> Result<(), Refusal> {
        for s in outs {
            match s {
                Src::Col(c) => self.use_col(*c, Usage::FunctionArg)?,
                Src::Opaque | Src::Pass => {}
            }
        }
        Ok(())
    }

    /// Refuse unless every protected column touched so far may be read in clear.
    pub(super) fn require_clear(&mut self, what: &str) -> Result<(), Refusal> {
        for &(c, _) in &self.touched {
            let d = self.decide(c);
            if d.action != Action::Allow {
                let col = self.env.policy.column(c);
                return Err(Refusal::needs_clear(
                    &col.qualified(),
                    what,
                    self.level_name(col.level),
                    d.action.name(),
                    col.level,
                ));
            }
        }
        Ok(())
    }

    /// Protected column `c`, exposed by a view or function, with the login's `action` on it.
    pub(super) fn exposure(&self, c: ColumnId, action: Action) -> Exposure {
        let col = self.env.policy.column(c);
        Exposure {
            column: col.qualified(),
            level_name: self.level_name(col.level).to_string(),
            action: action.name(),
            level: col.level,
        }
    }

    pub(super) fn level_name(&self, l: LevelId) -> &str {
        self.env
            .policy
            .policy()
            .levels
            .get(l)
            .map_or("?", |s| s.as_str())
    }
}

/// [`StatementPlan::spread`] from the exposures (per column, the most FROM items of one
/// level), merged with what nested statements found (`nested`).
fn spread(
    exposures: &[(usize, String, ColumnId)],
    nested: Vec<(ColumnId, usize)>,
) -> Vec<(ColumnId, usize)> {
    let mut out: Vec<(ColumnId, usize)> = Vec::new();
    for (c, n) in nested {
        match out.iter_mut().find(|(d, _)| *d == c) {
            Some((_, m)) => *m = (*m).max(n),
            None => out.push((c, n)),
        }
    }
    for (serial, _, c) in exposures {
        let n = exposures
            .iter()
            .filter(|(s, _, d)| s == serial && d == c)
            .count();
        match out.iter_mut().find(|(d, _)| d == c) {
            Some((_, m)) => *m = (*m).max(n),
            None => out.push((*c, n)),
        }
    }
    out
}
