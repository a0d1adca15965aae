//! The analysis of statements that name protected data: scope resolution, the usage of every
//! protected column reference, and the source of every output column.
//!
//! It is conservative by construction. Expressions it knows (column references, comparisons
//! with values, AND/OR/NOT, IN lists, subqueries) are read precisely; any other expression is
//! walked generically and every protected column inside it counts as a function argument, the
//! most restricted use. A name it cannot resolve, when it could be a protected column, refuses
//! the statement. So does any statement kind it does not know.
use std::collections::HashMap;
use std::ops::ControlFlow;

use pgveil_policy::compile::Usage;
use pgveil_policy::model::{Action, ColumnId, EncryptMode, LevelId};
use pgveil_policy::{CompiledPolicy, RoleSet};
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, CopyLegacyCsvOption, CopyLegacyOption, CopyOption,
    CopySource, CopyTarget, Distinct, Expr, FromTable, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, ObjectName, ObjectNamePart, OnConflictAction, OnInsert,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, Set, SetExpr,
    SetOperator, SetQuantifier, Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator,
    UpdateTableFromKind, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::sites::{self, LookupForm, Offsets, Purpose, Site, SiteValue};
use crate::catalog::Snapshot;
use crate::protocol::sqlstate;

/// Deepest nesting the parser accepts (sqlparser's default is 50).
const RECURSION_LIMIT: usize = 64;

/// Where an output column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// Nothing protected: forwarded untouched.
    Pass,
    /// Exactly the stored values of a protected column: the column's transform applies.
    Col(ColumnId),
    /// An unknown number of unprotected columns (a `*` over a relation of unknown shape).
    Opaque,
}

/// What kind of statement this is, for the enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Returns rows (SELECT, VALUES, or DML with RETURNING).
    Rows,
    /// Returns no rows.
    NoRows,
    /// Changes the catalog: the cache must be invalidated once it has run.
    Ddl,
}

/// The format of `COPY ... TO STDOUT` rows pgveil transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOut {
    Text,
    Csv { header: bool },
}

/// The plan of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPlan {
    pub kind: Kind,
    /// Set for `COPY ... TO STDOUT` over protected data: its rows come as CopyData.
    pub copy: Option<CopyOut>,
    /// The result columns in order (empty when none come back or none matter).
    pub outputs: Vec<Src>,
    /// The protected columns the statement touches, each with its most restricted use.
    pub touched: Vec<(ColumnId, Usage)>,
    /// The values pgveil must encrypt before the server sees them (byte ranges of the whole
    /// SQL text, in text order).
    pub sites: Vec<Site>,
    /// Set for `COPY ... FROM STDIN` into encrypted columns: the rows pgveil encrypts.
    pub copy_in: Option<CopyIn>,
}

/// The columns of a `COPY ... FROM STDIN` row, by position: `Some` for encrypted ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    pub columns: Vec<Option<ColumnId>>,
    pub format: CopyOut,
}

/// The analysis of one SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub statements: Vec<StatementPlan>,
}

/// Why a statement is refused. The message names columns and rules, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The level of the column that caused it, when one did.
    pub level: Option<LevelId>,
    /// The text could not be parsed or contains a construct pgveil cannot analyse.
    pub unanalysable: bool,
}

impl Refusal {
    fn denied(message: String, hint: Option<String>, level: Option<LevelId>) -> Refusal {
        Refusal {
            sqlstate: sqlstate::INSUFFICIENT_PRIVILEGE,
            message,
            hint,
            level,
            unanalysable: false,
        }
    }

    fn unsupported(message: String, hint: Option<&str>) -> Refusal {
        Refusal {
            sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
            message,
            hint: hint.map(str::to_string),
            level: None,
            unanalysable: true,
        }
    }
}

/// What the analysis reads: the policy, the catalog and who is asking.
pub struct Env<'a> {
    pub policy: &'a CompiledPolicy,
    pub snapshot: &'a Snapshot,
    pub roles: &'a RoleSet,
}

impl Env<'_> {
    /// Whether the login may read every protected column in clear.
    pub fn unrestricted(&self) -> bool {
        (0..self.policy.policy().columns.len())
            .all(|c| self.policy.decide(self.roles, c).action == Action::Allow)
    }
}

/// Parse and analyse `sql`; every statement in it must pass for the text to pass.
pub fn analyze(sql: &str, env: &Env<'_>) -> Result<Analysis, Refusal> {
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    let statements = match parsed {
        Ok(s) => s,
        Err(e) => {
            if crate::sql::first_word(sql).eq_ignore_ascii_case("do") && env.unrestricted() {
                // A login that may read everything in clear gains nothing from a DO block.
                return Ok(Analysis {
                    statements: vec![StatementPlan {
                        kind: Kind::NoRows,
                        copy: None,
                        outputs: Vec::new(),
                        touched: Vec::new(),
                        sites: Vec::new(),
                        copy_in: None,
                    }],
                });
            }
            return Err(unparsable(sql, &e.to_string()));
        }
    };
    let text = Offsets::new(sql);
    let mut out = Vec::with_capacity(statements.len());
    for s in &statements {
        let mut a = Analyzer::new(env, &text);
        let mut plan = a.statement(s)?;
        plan.sites.sort_by_key(|s| s.start);
        if plan.sites.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(Refusal::unsupported(
                "pgveil found overlapping values to encrypt in this statement".into(),
                Some("write each value once, as a plain literal or a parameter"),
            ));
        }
        out.push(plan);
    }
    Ok(Analysis { statements: out })
}

fn unparsable(sql: &str, error: &str) -> Refusal {
    if crate::sql::first_word(sql).eq_ignore_ascii_case("do") {
        return Refusal::denied(
            "pgveil refuses DO blocks for this login: their code runs inside the server, \
             where pgveil cannot see which protected columns it reads"
                .into(),
            Some("run the statements one by one, or ask for a role that may read the data".into()),
            None,
        );
    }
    Refusal::unsupported(
        format!("pgveil cannot analyse this statement, and it names protected data ({error})"),
        Some("rewrite the statement in plainer SQL; pgveil refuses what it cannot analyse"),
    )
}

/// A column of a FROM item.
#[derive(Debug, Clone)]
struct Col {
    name: String,
    src: Src,
}

/// A FROM item as the scope sees it.
#[derive(Debug, Clone)]
struct Item {
    /// Alias, or the relation's own name.
    name: String,
    /// `None`: columns unknown (table functions, relations the catalog does not know).
    cols: Option<Vec<Col>>,
}

impl Item {
    fn protected(&self) -> Vec<ColumnId> {
        self.cols
            .iter()
            .flatten()
            .filter_map(|c| match c.src {
                Src::Col(id) => Some(id),
                _ => None,
            })
            .collect()
    }
}

/// What a name in an expression turned out to be.
enum Ref {
    Col(Src),
    WholeRow(Vec<ColumnId>),
    Unresolved,
}

/// The context an expression appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Project,
    Pred,
    Join,
    Group,
    Arg,
}

impl Ctx {
    fn generic_usage(self) -> Usage {
        match self {
            Ctx::Project | Ctx::Arg => Usage::FunctionArg,
            Ctx::Pred => Usage::Predicate { equality: false },
            Ctx::Join => Usage::JoinKey { equality: false },
            Ctx::Group => Usage::GroupOrder,
        }
    }
}

struct Analyzer<'e, 'a> {
    env: &'e Env<'a>,
    text: &'e Offsets<'e>,
    /// Scope levels, innermost last.
    levels: Vec<Vec<Item>>,
    /// CTEs in scope, innermost last.
    ctes: Vec<HashMap<String, Vec<Col>>>,
    touched: Vec<(ColumnId, Usage)>,
    sites: Vec<Site>,
    copy_in: Option<CopyIn>,
    /// The reference being checked is an IS [NOT] NULL test.
    nullness: bool,
}

fn src_col(s: Src) -> Option<ColumnId> {
    match s {
        Src::Col(c) => Some(c),
        _ => None,
    }
}

fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn name_parts(n: &ObjectName) -> Vec<String> {
    n.0.iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
        })
        .collect()
}

/// Is this expression a value (literal, parameter, or a cast of one)?
fn valueish(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString(_) => true,
        Expr::Cast { expr, .. } | Expr::Nested(expr) => valueish(expr),
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => valueish(expr),
        _ => false,
    }
}

/// A bare column reference, through parentheses.
fn bare(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Some(e),
        Expr::Nested(inner) => bare(inner),
        _ => None,
    }
}

/// Functions that run SQL text given to them as a value.
fn runs_sql_text(name: &str) -> bool {
    crate::sql::scan::ALWAYS
        .iter()
        .skip_while(|w| **w != "query_to_xml")
        .any(|w| *w == name)
}

impl<'e, 'a> Analyzer<'e, 'a> {
    fn new(env: &'e Env<'a>, text: &'e Offsets<'e>) -> Self {
        Analyzer {
            env,
            text,
            levels: Vec::new(),
            ctes: Vec::new(),
            touched: Vec::new(),
            sites: Vec::new(),
            copy_in: None,
            nullness: false,
        }
    }

    // ---- statements ------------------------------------------------------

    fn statement(&mut self, s: &Statement) -> Result<StatementPlan, Refusal> {
        let mut copy = None;
        let (kind, outputs) = match s {
            Statement::Query(q) => (Kind::Rows, self.query(q)?),
            Statement::Insert(ins) => self.insert(ins)?,
            Statement::Update(u) => {
                self.levels.push(Vec::new());
                self.table_with_joins(&u.table)?;
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &u.from
                {
                    for t in f {
                        self.table_with_joins(t)?;
                    }
                }
                for a in &u.assignments {
                    self.assignment(a)?;
                }
                if let Some(w) = &u.selection {
                    self.expr(w, Ctx::Pred)?;
                }
                let out = self.returning(u.returning.as_deref())?;
                self.levels.pop();
                out
            }
            Statement::Delete(d) => {
                self.levels.push(Vec::new());
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                for t in f.iter().chain(d.using.iter().flatten()) {
                    self.table_with_joins(t)?;
                }
                if let Some(w) = &d.selection {
                    self.expr(w, Ctx::Pred)?;
                }
                let out = self.returning(d.returning.as_deref())?;
                self.levels.pop();
                out
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                let outs = self.copy_source(source, *to)?;
                let protected = outs.iter().any(|o| matches!(o, Src::Col(_)));
                let encrypted: Vec<Option<ColumnId>> = outs
                    .iter()
                    .map(|o| match o {
                        Src::Col(c) if self.encrypted(*c) => Some(*c),
                        _ => None,
                    })
                    .collect();
                if !protected && self.touched.is_empty() {
                    (Kind::NoRows, Vec::new())
                } else if *to {
                    if !matches!(target, CopyTarget::Stdout) {
                        return Err(Refusal::unsupported(
                            "pgveil refuses COPY of protected data to a server file or program: \
                             the server would write it where pgveil cannot transform it"
                                .into(),
                            Some("use COPY ... TO STDOUT through pgveil"),
                        ));
                    }
                    copy = Some(copy_format(options, legacy_options)?);
                    (Kind::Rows, outs)
                } else {
                    if !matches!(target, CopyTarget::Stdin) {
                        return Err(Refusal::unsupported(
                            "pgveil refuses COPY into a protected table from a server file or program"
                                .into(),
                            Some("use COPY ... FROM STDIN through pgveil"),
                        ));
                    }
                    if encrypted.iter().any(Option::is_some) {
                        let format = copy_format(options, legacy_options).map_err(|mut r| {
                            r.message = r.message.replace("TO STDOUT", "FROM STDIN");
                            r.hint = Some(
                                "pgveil encrypts COPY FROM STDIN in text or CSV format with the default delimiter, quote and NULL string; binary COPY cannot be encrypted on the way in, so send CSV (FORMAT csv)".into(),
                            );
                            r
                        })?;
                        self.copy_in = Some(CopyIn {
                            columns: encrypted,
                            format,
                        });
                    }
                    (Kind::NoRows, Vec::new())
                }
            }
            Statement::Explain { statement, .. } => {
                let inner = self.statement(statement)?;
                // EXPLAIN ANALYZE runs the statement: its values are encrypted as if it ran.
                self.sites.extend(inner.sites);
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
            Statement::CreateView(_) => {
                if !self.env.unrestricted() {
                    return Err(code_refused("views"));
                }
                (Kind::Ddl, Vec::new())
            }
            Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_) => {
                if !self.env.unrestricted() {
                    return Err(code_refused("functions, procedures and triggers"));
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
            | Statement::Discard { .. }
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
                return Err(Refusal::unsupported(
                    format!(
                        "pgveil cannot analyse {} statements that name protected data",
                        crate::sql::first_word(&other.to_string()).to_ascii_uppercase()
                    ),
                    Some("pgveil refuses what it cannot analyse"),
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
        })
    }

    /// A statement with no query structure of its own: every protected name in it counts.
    fn generic_statement(&mut self, s: &Statement) -> Result<(), Refusal> {
        let mut v = Collect::default();
        let _ = s.visit(&mut v);
        self.levels.push(Vec::new());
        let r = self.collected(v, Ctx::Arg);
        self.levels.pop();
        r
    }

    /// The columns a COPY reads (TO) or writes (FROM).
    fn copy_source(&mut self, source: &CopySource, to: bool) -> Result<Vec<Src>, Refusal> {
        match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let parts = name_parts(table_name);
                let Some(item) = self.relation_cols(&parts)? else {
                    return Ok(vec![Src::Opaque]);
                };
                let cols = item.cols.unwrap_or_default();
                let picked: Vec<Src> = if columns.is_empty() {
                    cols.iter().map(|c| c.src).collect()
                } else {
                    columns
                        .iter()
                        .map(|n| {
                            let n = ident(n);
                            cols.iter()
                                .find(|c| c.name == n)
                                .map_or(Src::Pass, |c| c.src)
                        })
                        .collect()
                };
                for s in &picked {
                    if let Src::Col(c) = s {
                        if to {
                            self.use_col(*c, Usage::Projection)?;
                        }
                    }
                }
                Ok(picked)
            }
            CopySource::Query(q) => self.query(q),
        }
    }

    fn set(&mut self, set: &Set) -> Result<(), Refusal> {
        let refuse = |what: &str| {
            Refusal::denied(
                format!("pgveil refuses {what}: the policy applies to the role that logged in"),
                Some("connect as the role whose access you need".into()),
                None,
            )
        };
        match set {
            Set::SetRole {
                role_name: None, ..
            } => Ok(()),
            Set::SetRole { .. } => Err(refuse("SET ROLE")),
            Set::SetSessionAuthorization(_) => Err(refuse("SET SESSION AUTHORIZATION")),
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let var = name_parts(variable).join(".");
                match var.as_str() {
                    "role" | "session_authorization" => Err(refuse(&format!("SET {var}"))),
                    "standard_conforming_strings" | "client_encoding" => Ok(()),
                    _ => {
                        for v in values {
                            self.expr(v, Ctx::Arg)?;
                        }
                        Ok(())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    fn insert(&mut self, ins: &sqlparser::ast::Insert) -> Result<(Kind, Vec<Src>), Refusal> {
        let TableObject::TableName(table) = &ins.table else {
            return Err(Refusal::unsupported(
                "pgveil cannot analyse INSERT INTO a table function".into(),
                None,
            ));
        };
        let parts = name_parts(table);
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
        self.levels.push(vec![item.clone()]);
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
        self.levels.pop();
        Ok(out)
    }

    /// `SET target = value` in UPDATE or ON CONFLICT DO UPDATE.
    fn assignment(&mut self, a: &sqlparser::ast::Assignment) -> Result<(), Refusal> {
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
    fn assignment_targets(&self, t: &AssignmentTarget) -> Vec<Option<ColumnId>> {
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

    fn encrypted(&self, c: ColumnId) -> bool {
        self.env.policy.column(c).encrypt != EncryptMode::None
    }

    /// Whether the stored values of `from` may be copied as they are into `to`: the same key
    /// domain and the same mode, so the ciphertext means the same in both.
    fn same_ciphertext(&self, from: ColumnId, to: ColumnId) -> bool {
        let (a, b) = (self.env.policy.column(from), self.env.policy.column(to));
        a.encrypt != EncryptMode::None && a.encrypt == b.encrypt && a.domain == b.domain
    }

    fn computed_refusal(&self, target: ColumnId) -> Refusal {
        let c = self.env.policy.column(target);
        Refusal {
            sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
            message: format!(
                "pgveil cannot encrypt a value computed inside the server for encrypted column {} ({})",
                c.qualified(),
                c.encrypt.name()
            ),
            hint: Some(format!(
                "send the value as a literal or a parameter, or copy it from another column encrypted in domain {} with the same mode",
                c.domain
            )),
            level: Some(c.level),
            unanalysable: false,
        }
    }

    fn ciphertext_moved(&self, from: ColumnId) -> Refusal {
        let c = self.env.policy.column(from);
        Refusal {
            sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
            message: format!(
                "pgveil refuses to copy the ciphertext of encrypted column {} into a column that is not encrypted in domain {} ({})",
                c.qualified(),
                c.domain,
                c.encrypt.name()
            ),
            hint: Some("read the values through pgveil and write them back as values".into()),
            level: Some(c.level),
            unanalysable: false,
        }
    }

    /// A value written into encrypted column `target`.
    fn store_value(&mut self, e: &Expr, target: ColumnId) -> Result<(), Refusal> {
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
    fn value_site(
        &mut self,
        e: &Expr,
        column: ColumnId,
        purpose: Purpose,
    ) -> Result<bool, Refusal> {
        let not_here = || {
            let c = self.env.policy.column(column);
            Refusal::unsupported(
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
                return Err(Refusal::unsupported(
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
                        Refusal::unsupported(
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
                return Err(Refusal::unsupported(
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
        // A lookup can only be widened over key versions where it stands as `col = value`.
        let purpose = match (purpose, cast) {
            (Purpose::Lookup(LookupForm::Eq | LookupForm::NotEq), Some(_)) => {
                Purpose::Lookup(LookupForm::Single)
            }
            (p, _) => p,
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
    fn negative_number(
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
            Refusal::unsupported(
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
    fn lookup(
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

    fn computed_lookup(&self, c: ColumnId) -> Refusal {
        let col = self.env.policy.column(c);
        Refusal {
            sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
            message: format!(
                "column {} is encrypted ({}): pgveil can only compare it with a literal, a parameter or a column of the same key domain",
                col.qualified(),
                col.encrypt.name()
            ),
            hint: Some("compare it with a plain value: col = 'value', col = $1, col IN ('a', 'b')".into()),
            level: Some(col.level),
            unanalysable: false,
        }
    }

    /// `a = b` between two columns: encrypted columns only join columns of the same domain.
    fn column_equality(&mut self, a: &Expr, b: &Expr) -> Result<(), Refusal> {
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
                return Err(Refusal {
                    sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                    message: format!(
                        "column {} is encrypted ({}, domain {}): the server cannot compare its ciphertext with {with}",
                        cx.qualified(),
                        cx.encrypt.name(),
                        cx.domain
                    ),
                    hint: Some("join encrypted columns only with columns of the same key domain and mode".into()),
                    level: Some(cx.level),
                    unanalysable: false,
                });
            }
        }
        self.reference(a, Ctx::Join, u)?;
        self.reference(b, Ctx::Join, u)?;
        Ok(())
    }

    fn returning(&mut self, items: Option<&[SelectItem]>) -> Result<(Kind, Vec<Src>), Refusal> {
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
    fn moved(&mut self, outs: &[Src]) -> Result<(), Refusal> {
        for s in outs {
            match s {
                Src::Col(c) => self.use_col(*c, Usage::FunctionArg)?,
                Src::Opaque | Src::Pass => {}
            }
        }
        Ok(())
    }

    /// Refuse unless every protected column touched so far may be read in clear.
    fn require_clear(&mut self, what: &str) -> Result<(), Refusal> {
        for &(c, _) in &self.touched {
            let d = self.env.policy.decide(self.env.roles, c);
            if d.action != Action::Allow {
                let col = self.env.policy.column(c);
                return Err(Refusal::denied(
                    format!(
                        "permission denied for column {}: {what} over it is not allowed (level {}, action {})",
                        col.qualified(),
                        self.level_name(col.level),
                        d.action
                    ),
                    None,
                    Some(col.level),
                ));
            }
        }
        Ok(())
    }

    fn level_name(&self, l: LevelId) -> &str {
        self.env
            .policy
            .policy()
            .levels
            .get(l)
            .map_or("?", |s| s.as_str())
    }

    // ---- queries ---------------------------------------------------------

    fn query(&mut self, q: &Query) -> Result<Vec<Src>, Refusal> {
        let mut pushed = false;
        if let Some(with) = &q.with {
            self.ctes.push(HashMap::new());
            pushed = true;
            for cte in &with.cte_tables {
                let name = ident(&cte.alias.name);
                let outs = if with.recursive {
                    self.recursive_cte(&name, &cte.alias, &cte.query)?
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

    fn query_body(&mut self, q: &Query) -> Result<Vec<Src>, Refusal> {
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

    fn recursive_cte(
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

    fn set_expr(&mut self, e: &SetExpr) -> Result<Vec<Src>, Refusal> {
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

    fn merge_set(
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
                        return Err(Refusal::unsupported(
                            format!(
                                "pgveil cannot combine encrypted columns {} and {} in one result column",
                                cx.qualified(),
                                cy.qualified()
                            ),
                            None,
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

    fn select(&mut self, s: &Select, query: Option<&Query>) -> Result<Vec<Src>, Refusal> {
        self.levels.push(Vec::new());
        let r = self.select_inner(s, query);
        self.levels.pop();
        r
    }

    fn select_inner(&mut self, s: &Select, query: Option<&Query>) -> Result<Vec<Src>, Refusal> {
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
                        self.use_col(*c, Usage::GroupOrder)?;
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
                    self.order_item(e, &outs, &names)?;
                }
            }
            GroupByExpr::All(_) => {
                for o in outs.clone() {
                    if let Src::Col(c) = o {
                        self.use_col(c, Usage::GroupOrder)?;
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

    /// GROUP BY / ORDER BY / DISTINCT ON item: an output position, an output name, or an
    /// expression over the FROM scope.
    fn order_item(
        &mut self,
        e: &Expr,
        outs: &[Src],
        names: &[Option<String>],
    ) -> Result<(), Refusal> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                if let Some(Src::Col(c)) = n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| outs.get(i.wrapping_sub(1)))
                {
                    self.use_col(*c, Usage::GroupOrder)?;
                }
                return Ok(());
            }
        }
        if let Expr::Identifier(i) = e {
            let n = ident(i);
            let in_scope = self.levels.last().is_some_and(|l| {
                l.iter()
                    .any(|it| it.cols.iter().flatten().any(|c| c.name == n))
            });
            if !in_scope {
                if let Some(pos) = names.iter().position(|x| x.as_deref() == Some(n.as_str())) {
                    if let Some(Src::Col(c)) = outs.get(pos) {
                        self.use_col(*c, Usage::GroupOrder)?;
                    }
                    return Ok(());
                }
            }
        }
        self.expr(e, Ctx::Group).map(|_| ())
    }

    fn select_item(
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

    fn expand(
        &mut self,
        item: &Item,
        outs: &mut Vec<Src>,
        names: &mut Vec<Option<String>>,
    ) -> Result<(), Refusal> {
        match &item.cols {
            Some(cols) => {
                for c in cols {
                    if let Src::Col(id) = c.src {
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

    // ---- FROM ------------------------------------------------------------

    fn table_with_joins(&mut self, t: &TableWithJoins) -> Result<(), Refusal> {
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
    fn join_column(&mut self, name: &str) -> Result<(), Refusal> {
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

    fn push_item(&mut self, item: Item) {
        if let Some(l) = self.levels.last_mut() {
            l.push(item);
        }
    }

    fn table_factor(&mut self, f: &TableFactor) -> Result<(), Refusal> {
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

    fn cte_cols(&self, parts: &[String]) -> Option<Vec<Col>> {
        if parts.len() != 1 {
            return None;
        }
        self.ctes
            .iter()
            .rev()
            .find_map(|m| m.get(&parts[0]).cloned())
    }

    /// The columns of a catalog relation; refuses views that expose columns the login may
    /// not read in clear.
    fn relation_cols(&mut self, parts: &[String]) -> Result<Option<Item>, Refusal> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [.., s, n] => (Some(s.as_str()), n.as_str()),
            [] => return Ok(None),
        };
        let found = self.env.snapshot.lookup(schema, name);
        let Some(rel) = found.first() else {
            return Ok(None);
        };
        if rel.kind.is_view() && !rel.exposes.is_empty() {
            for &c in &rel.exposes {
                let d = self.env.policy.decide(self.env.roles, c);
                if d.action != Action::Allow {
                    let col = self.env.policy.column(c);
                    return Err(Refusal::denied(
                        format!(
                            "permission denied for relation {}: it is a view over protected column {} \
                             (level {}, action {} for this login)",
                            rel.qualified(),
                            col.qualified(),
                            self.level_name(col.level),
                            d.action
                        ),
                        Some(format!(
                            "query {} directly; pgveil transforms its columns",
                            col.table
                        )),
                        Some(col.level),
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

    // ---- expressions -----------------------------------------------------

    fn use_col(&mut self, c: ColumnId, usage: Usage) -> Result<(), Refusal> {
        let policy = self.env.policy;
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
            return Err(Refusal::denied(reason.to_string(), hint, Some(col.level)));
        }
        let col = policy.column(c);
        let equality = matches!(
            usage,
            Usage::Predicate { equality: true } | Usage::JoinKey { equality: true }
        );
        if equality && !self.nullness && col.encrypt == EncryptMode::Randomized {
            return Err(Refusal {
                sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                message: format!(
                    "column {} is encrypted randomized: equal values have different ciphertexts, so the server cannot compare it",
                    col.qualified()
                ),
                hint: Some(
                    "declare the column encrypt: deterministic in the policy to look it up by equality (and run pgveil rekey), or filter in the application".into(),
                ),
                level: Some(col.level),
                unanalysable: false,
            });
        }
        let on_ciphertext = !matches!(usage, Usage::Projection) && !equality;
        if on_ciphertext && col.encrypt != EncryptMode::None {
            return Err(Refusal {
                sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                message: format!(
                    "column {} is encrypted ({}): the server holds only ciphertext, so {} cannot work",
                    col.qualified(),
                    col.encrypt.name(),
                    usage_words(usage)
                ),
                hint: Some(
                    "read the column and compute on it in the application; deterministic columns also allow = and IN lookups".into(),
                ),
                level: Some(col.level),
                unanalysable: false,
            });
        }
        match self.touched.iter_mut().find(|(id, _)| *id == c) {
            Some((_, u)) if *u == Usage::Projection => *u = usage,
            Some(_) => {}
            None => self.touched.push((c, usage)),
        }
        Ok(())
    }

    fn resolve(&self, e: &Expr) -> Ref {
        let parts: Vec<String> = match e {
            Expr::Identifier(i) => vec![ident(i)],
            Expr::CompoundIdentifier(is) => is.iter().map(ident).collect(),
            _ => return Ref::Unresolved,
        };
        match parts.as_slice() {
            [name] => {
                for level in self.levels.iter().rev() {
                    let mut found = None;
                    for item in level {
                        if let Some(c) = item.cols.iter().flatten().find(|c| &c.name == name) {
                            // Prefer a protected match when a name is ambiguous.
                            if found.is_none() || matches!(c.src, Src::Col(_)) {
                                found = Some(c.src);
                            }
                        }
                    }
                    if let Some(src) = found {
                        return Ref::Col(src);
                    }
                    if level.iter().any(|i| i.cols.is_none()) {
                        return Ref::Unresolved;
                    }
                    if let Some(item) = level.iter().find(|i| &i.name == name) {
                        return Ref::WholeRow(item.protected());
                    }
                }
                Ref::Unresolved
            }
            [.., table, col] => {
                for level in self.levels.iter().rev() {
                    if let Some(item) = level.iter().find(|i| &i.name == table) {
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
    fn unresolved(&self, e: &Expr) -> Result<(), Refusal> {
        let last = match e {
            Expr::Identifier(i) => ident(i),
            Expr::CompoundIdentifier(is) => is.last().map(ident).unwrap_or_default(),
            _ => return Ok(()),
        };
        let policy = self.env.policy.policy();
        if let Some(c) = policy.columns.iter().find(|c| c.column == last) {
            return Err(Refusal {
                sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                message: format!(
                    "pgveil cannot tell which table \"{last}\" belongs to here, and it may be the protected column {}",
                    c.qualified()
                ),
                hint: Some("qualify the column with its table, and give table functions a column list".into()),
                level: Some(c.level),
                unanalysable: true,
            });
        }
        Ok(())
    }

    fn reference(&mut self, e: &Expr, ctx: Ctx, usage: Usage) -> Result<Src, Refusal> {
        match self.resolve(e) {
            Ref::Col(Src::Col(c)) => {
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

    fn expr(&mut self, e: &Expr, ctx: Ctx) -> Result<Src, Refusal> {
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
                            return Err(Refusal {
                                sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                                message: format!(
                                    "column {} is encrypted ({}, domain {}): IN (SELECT ...) must compare it with a column of the same key domain and mode",
                                    col.qualified(),
                                    col.encrypt.name(),
                                    col.domain
                                ),
                                hint: Some("compare with literals or parameters, or select a column encrypted the same way".into()),
                                level: Some(col.level),
                                unanalysable: false,
                            });
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
                for o in self.query(q)? {
                    if let Src::Col(c) = o {
                        self.use_col(c, Usage::FunctionArg)?;
                    }
                }
                Ok(Src::Pass)
            }
            Expr::Value(_) => Ok(Src::Pass),
            _ => {
                self.generic(e, ctx)?;
                Ok(Src::Pass)
            }
        }
    }

    /// Any other expression: every protected name inside is used in the most restricted way
    /// the context allows; subqueries inside are analysed in this scope.
    fn generic(&mut self, e: &Expr, ctx: Ctx) -> Result<(), Refusal> {
        let mut v = Collect::default();
        let _ = e.visit(&mut v);
        self.collected(v, ctx)
    }

    fn collected(&mut self, v: Collect, ctx: Ctx) -> Result<(), Refusal> {
        let usage = ctx.generic_usage();
        for f in &v.functions {
            self.check_function(f)?;
        }
        if let Some(arg) = v.bad_set_config {
            return Err(Refusal::denied(
                format!("pgveil refuses set_config({arg}) here: it changes who is asking or how SQL is read"),
                None,
                None,
            ));
        }
        for q in &v.subqueries {
            for o in self.query(q)? {
                if let Src::Col(c) = o {
                    self.use_col(c, Usage::FunctionArg)?;
                }
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

    fn function_arg(&mut self, a: &FunctionArg) -> Result<(), Refusal> {
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

    fn check_function(&self, name: &str) -> Result<(), Refusal> {
        if runs_sql_text(name) {
            return Err(Refusal::denied(
                format!("pgveil refuses {name}(): it runs SQL text that pgveil cannot analyse"),
                Some("send the query itself through pgveil".into()),
                None,
            ));
        }
        if let Some(cols) = self.env.snapshot.function_exposes(name) {
            for &c in cols {
                let d = self.env.policy.decide(self.env.roles, c);
                if d.action != Action::Allow {
                    let col = self.env.policy.column(c);
                    return Err(Refusal::denied(
                        format!(
                            "permission denied for function {name}: its body reads protected column {} \
                             (level {}, action {} for this login), which pgveil cannot transform inside the server",
                            col.qualified(),
                            self.level_name(col.level),
                            d.action
                        ),
                        None,
                        Some(col.level),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The format of a COPY TO STDOUT that pgveil can transform, or why not.
fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyOut, Refusal> {
    let unsupported = |what: &str| {
        Refusal::unsupported(
            format!("pgveil cannot transform COPY ... TO STDOUT of protected data with {what}"),
            Some("use text or CSV format with the default delimiter, quote and NULL string"),
        )
    };
    let (mut csv, mut header) = (false, false);
    let mut delimiter = None;
    let mut null = None;
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                "binary" => return Err(unsupported("binary format")),
                other => return Err(unsupported(&format!("format {other}"))),
            },
            CopyOption::Header(h) => header = *h,
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Quote('"') | CopyOption::Escape('"') | CopyOption::Freeze(_) => {}
            CopyOption::ForceNotNull(_) | CopyOption::ForceNull(_) => {}
            _ => return Err(unsupported(&format!("the option {o}"))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => return Err(unsupported("binary format")),
            CopyLegacyOption::Csv(opts) => {
                csv = true;
                for c in opts {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote('"') | CopyLegacyCsvOption::Escape('"') => {}
                        other => return Err(unsupported(&format!("the option {other}"))),
                    }
                }
            }
            CopyLegacyOption::Header => header = true,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            other => return Err(unsupported(&format!("the option {other}"))),
        }
    }
    let default_delimiter = if csv { ',' } else { '\t' };
    if delimiter.is_some_and(|d| d != default_delimiter) {
        return Err(unsupported("a non-default delimiter"));
    }
    let default_null = if csv { "" } else { "\\N" };
    if null.as_deref().is_some_and(|n| n != default_null) {
        return Err(unsupported("a non-default NULL string"));
    }
    if header && !csv {
        return Err(unsupported("HEADER in text format"));
    }
    Ok(if csv {
        CopyOut::Csv { header }
    } else {
        CopyOut::Text
    })
}

fn eq_usage(ctx: Ctx) -> Usage {
    match ctx {
        Ctx::Join => Usage::JoinKey { equality: true },
        _ => Usage::Predicate { equality: true },
    }
}

fn usage_words(u: Usage) -> &'static str {
    match u {
        Usage::Projection => "reading it",
        Usage::Predicate { equality: true } | Usage::JoinKey { equality: true } => "comparing it",
        Usage::Predicate { equality: false } => "a range, pattern or function condition on it",
        Usage::JoinKey { equality: false } => "a non-equality join on it",
        Usage::GroupOrder => "grouping or sorting by it",
        Usage::FunctionArg => "computing on it",
    }
}

fn code_refused(what: &str) -> Refusal {
    Refusal::denied(
        format!(
            "pgveil refuses to create {what} for this login: their code would run inside the \
             server, where pgveil cannot see which protected columns it reads"
        ),
        Some("have a login that may read all protected data in clear create them".into()),
        None,
    )
}

/// The name PostgreSQL gives an unaliased output column, when it is a column reference.
fn expr_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(ident(i)),
        Expr::CompoundIdentifier(is) => is.last().map(ident),
        Expr::Nested(inner) => expr_name(inner),
        _ => None,
    }
}

fn set_output_names(e: &SetExpr) -> Vec<Option<String>> {
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

fn unnamed_outputs(outs: &[Src], q: &Query) -> Vec<Col> {
    let names = set_output_names(&q.body);
    outs.iter()
        .enumerate()
        .map(|(i, s)| Col {
            name: names.get(i).cloned().flatten().unwrap_or_default(),
            src: *s,
        })
        .collect()
}

fn name_outputs(alias: &sqlparser::ast::TableAlias, outs: &[Src], q: &Query) -> Vec<Col> {
    name_outputs_from(alias, outs, &set_output_names(&q.body))
}

fn name_outputs_from(
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

fn rename_columns(item: &mut Item, alias: &sqlparser::ast::TableAlias) {
    if let Some(cols) = &mut item.cols {
        for (c, a) in cols.iter_mut().zip(&alias.columns) {
            c.name = ident(&a.name);
        }
    }
}

/// What a generic walk found at its own level (not inside nested queries).
#[derive(Default)]
struct Collect {
    depth: usize,
    refs: Vec<Expr>,
    subqueries: Vec<Query>,
    functions: Vec<String>,
    whole_rows: Vec<String>,
    bad_set_config: Option<String>,
}

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
                match first.as_deref() {
                    Some(
                        "role"
                        | "session_authorization"
                        | "standard_conforming_strings"
                        | "client_encoding",
                    ) => self.bad_set_config = first.clone(),
                    Some(_) => {}
                    None => self.bad_set_config = Some("a computed name".into()),
                }
            }
        }
        self.functions.push(name);
    }
}

#[cfg(test)]
mod tests;
