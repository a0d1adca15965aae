//! FROM items: tables, views, CTEs, subqueries, functions and joins, as scope items.
use super::*;

impl Analyzer<'_, '_> {
    pub(super) fn table_with_joins(&mut self, t: &TableWithJoins) -> Result<(), Refusal> {
        self.table_factor(&t.relation)?;
        for j in &t.joins {
            let left_names: Vec<String> = self
                .levels
                .last()
                .map(|l| {
                    l.iter()
                        .flat_map(|i| i.cols.iter().flatten().map(|c| c.name.clone()))
                        .collect()
                })
                .unwrap_or_default();
            self.table_factor(&j.relation)?;
            use sqlparser::ast::JoinConstraint as C;
            use sqlparser::ast::JoinOperator as J;
            let constraint = match &j.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c)
                | J::Semi(c)
                | J::LeftSemi(c)
                | J::RightSemi(c)
                | J::Anti(c)
                | J::LeftAnti(c)
                | J::RightAnti(c)
                | J::StraightJoin(c) => Some(c),
                J::CrossApply | J::OuterApply => None,
                _ => {
                    return Err(Refusal::unsupported(
                        "pgveil cannot analyse this join form over protected data".into(),
                        None,
                    ))
                }
            };
            match constraint {
                Some(C::On(e)) => {
                    self.expr(e, Ctx::Join)?;
                }
                Some(C::Using(cols)) => {
                    for c in cols {
                        if let Some(n) = name_parts(c).last() {
                            self.join_column(n)?;
                        }
                    }
                }
                Some(C::Natural) => {
                    let right: Vec<String> = self
                        .levels
                        .last()
                        .and_then(|l| l.last())
                        .map(|i| i.cols.iter().flatten().map(|c| c.name.clone()).collect())
                        .unwrap_or_default();
                    for n in right.iter().filter(|n| left_names.contains(n)) {
                        self.join_column(n)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A USING / NATURAL join column: an equi-join on each side's column of that name.
    pub(super) fn join_column(&mut self, name: &str) -> Result<(), Refusal> {
        let ids: Vec<ColumnId> = self
            .levels
            .last()
            .map(|l| {
                l.iter()
                    .flat_map(|i| i.cols.iter().flatten())
                    .filter(|c| c.name == name)
                    .filter_map(|c| match c.src {
                        Src::Col(id) => Some(id),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.use_col(id, Usage::JoinKey { equality: true })?;
        }
        Ok(())
    }

    /// A new scope level (a SELECT's FROM, a write's target), with its own serial.
    pub(super) fn push_level(&mut self, items: Vec<Item>) {
        self.next_serial += 1;
        self.serials.push(self.next_serial);
        self.levels.push(items);
    }

    pub(super) fn pop_level(&mut self) {
        self.serials.pop();
        self.levels.pop();
    }

    pub(super) fn push_item(&mut self, item: Item) {
        if let Some(l) = self.levels.last_mut() {
            l.push(item);
        }
    }

    pub(super) fn table_factor(&mut self, f: &TableFactor) -> Result<(), Refusal> {
        match f {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let parts = name_parts(name);
                if let Some(args) = args {
                    let fname = parts.last().cloned().unwrap_or_default();
                    self.check_function(&fname)?;
                    for a in &args.args {
                        self.function_arg(a)?;
                    }
                    self.push_item(Item {
                        name: alias.as_ref().map(|a| ident(&a.name)).unwrap_or(fname),
                        cols: None,
                    });
                    return Ok(());
                }
                let mut item = match self.cte_cols(&parts) {
                    Some(cols) => Item {
                        name: parts.last().cloned().unwrap_or_default(),
                        cols: Some(cols),
                    },
                    None => self.relation_cols(&parts)?.unwrap_or(Item {
                        name: parts.last().cloned().unwrap_or_default(),
                        cols: None,
                    }),
                };
                if let Some(a) = alias {
                    item.name = ident(&a.name);
                    rename_columns(&mut item, a);
                }
                self.push_item(item);
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let outs = self.query(subquery)?;
                let cols = match alias {
                    Some(a) => name_outputs(a, &outs, subquery),
                    None => unnamed_outputs(&outs, subquery),
                };
                self.push_item(Item {
                    name: alias.as_ref().map(|a| ident(&a.name)).unwrap_or_default(),
                    cols: Some(cols),
                });
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let parts = name_parts(name);
                let fname = parts.last().cloned().unwrap_or_default();
                self.check_function(&fname)?;
                for a in args {
                    self.function_arg(a)?;
                }
                self.push_item(Item {
                    name: alias.as_ref().map(|a| ident(&a.name)).unwrap_or(fname),
                    cols: None,
                });
            }
            TableFactor::TableFunction { expr, alias } => {
                self.expr(expr, Ctx::Arg)?;
                self.push_item(Item {
                    name: alias.as_ref().map(|a| ident(&a.name)).unwrap_or_default(),
                    cols: None,
                });
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                for e in array_exprs {
                    self.expr(e, Ctx::Arg)?;
                }
                self.push_item(Item {
                    name: alias.as_ref().map(|a| ident(&a.name)).unwrap_or_default(),
                    cols: None,
                });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(Refusal::unsupported(
                        "pgveil cannot analyse an aliased join over protected data".into(),
                        None,
                    ));
                }
                self.table_with_joins(table_with_joins)?;
            }
            _ => {
                return Err(Refusal::unsupported(
                    "pgveil cannot analyse this FROM item over protected data".into(),
                    None,
                ))
            }
        }
        Ok(())
    }

    pub(super) fn cte_cols(&self, parts: &[String]) -> Option<Vec<Col>> {
        if parts.len() != 1 {
            return None;
        }
        self.ctes
            .iter()
            .rev()
            .find_map(|m| m.get(&parts[0]).cloned())
    }

    /// The columns of a view over protected data, each with the source its definition gives
    /// it (views carry lineage): the definition is analysed as a subquery of its own, with no
    /// outer scope, so that every use of a protected column inside it counts as it would in the
    /// statement. `None` when the definition is missing or cannot be lined up with the view's
    /// columns (the view is then judged whole).
    fn view_lineage(
        &mut self,
        rel: &crate::catalog::Relation,
    ) -> Result<Option<Vec<Col>>, Refusal> {
        let Some(query) = self
            .env
            .snapshot
            .view_definition(rel.oid)
            .and_then(parse_query)
        else {
            return Ok(None);
        };
        if self.view_depth >= MAX_VIEW_DEPTH {
            return Err(Refusal::unanalysable_form(
                format!("pgveil cannot follow views nested deeper than {MAX_VIEW_DEPTH}"),
                None,
            ));
        }
        let levels = std::mem::take(&mut self.levels);
        let ctes = std::mem::take(&mut self.ctes);
        let sites = self.sites.len();
        self.view_depth += 1;
        let outs = self.query(&query);
        self.view_depth -= 1;
        // Values in a view's own text are not the statement's: nothing there is rewritten.
        self.sites.truncate(sites);
        self.levels = levels;
        self.ctes = ctes;
        let outs = outs?;
        if outs.len() != rel.columns.len() || outs.contains(&Src::Opaque) {
            return Ok(None);
        }
        Ok(Some(
            rel.columns
                .iter()
                .zip(outs)
                .map(|(a, src)| Col {
                    name: a.name.clone(),
                    src,
                })
                .collect(),
        ))
    }

    /// A write into `parts`, a table the policy protects that the catalog does not know yet
    /// (created in the transaction the write is part of): refused, since pgveil cannot tell
    /// which of its columns to encrypt.
    pub(super) fn writes_unknown_policy_table(&self, parts: &[String]) -> Result<(), Refusal> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [.., s, n] => (Some(s.as_str()), n.as_str()),
            [] => return Ok(()),
        };
        let named = self.env.policy.policy().columns.iter().any(|c| {
            let (s, t) = c.table.split_once('.').unwrap_or(("public", &c.table));
            t == name && schema.is_none_or(|x| x == s)
        });
        if named && self.env.snapshot.lookup(schema, name).is_empty() {
            return Err(Refusal::unknown_protected_table(name));
        }
        Ok(())
    }

    /// A write into `parts`: refused when the relation's writes go elsewhere (an INSTEAD OF
    /// trigger, a rule) and it has protected columns, whose values pgveil could not follow.
    pub(super) fn writable(&self, parts: &[String], item: &Item) -> Result<(), Refusal> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [.., s, n] => (Some(s.as_str()), n.as_str()),
            [] => return Ok(()),
        };
        let protected = !item.protected().is_empty();
        for rel in self.env.snapshot.lookup(schema, name) {
            if protected && self.env.snapshot.write_redirected(rel.oid) {
                return Err(Refusal::redirected_write(&rel.qualified()));
            }
        }
        Ok(())
    }

    /// The columns of a catalog relation (of a view over protected data, through its
    /// definition); refuses relations whose policy columns no longer exist.
    pub(super) fn relation_cols(&mut self, parts: &[String]) -> Result<Option<Item>, Refusal> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [.., s, n] => (Some(s.as_str()), n.as_str()),
            [] => return Ok(None),
        };
        if crate::catalog::functions::is_statistics(name)
            && schema.is_none_or(|s| s == "pg_catalog")
            && !self.unrestricted()
        {
            return Err(Refusal::statistics(name));
        }
        let found = self.env.snapshot.lookup(schema, name);
        let Some(rel) = found.first() else {
            return Ok(None);
        };
        let missing = self.env.snapshot.missing_columns(rel.oid);
        if !missing.is_empty() {
            return Err(Refusal::policy_mismatch(&rel.qualified(), missing));
        }
        if rel.kind.is_view() && !rel.exposes.is_empty() {
            if let Some(cols) = self.view_lineage(rel)? {
                return Ok(Some(Item {
                    name: rel.name.clone(),
                    cols: Some(cols),
                }));
            }
            for &c in &rel.exposes {
                let d = self.decide(c);
                if d.action != Action::Allow {
                    let col = self.env.policy.column(c);
                    return Err(Refusal::view_over_protected(
                        &rel.qualified(),
                        &col.table,
                        self.exposure(c, d.action),
                    ));
                }
                self.touched.push((c, Usage::Projection));
            }
        }
        Ok(Some(Item {
            name: rel.name.clone(),
            cols: Some(
                rel.columns
                    .iter()
                    .map(|a| Col {
                        name: a.name.clone(),
                        src: a.protected.map_or(Src::Pass, Src::Col),
                    })
                    .collect(),
            ),
        }))
    }
}
