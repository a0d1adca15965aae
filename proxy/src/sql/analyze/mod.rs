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

pub use super::refusal::{Exposure, Refusal};
use super::sites::{self, LookupForm, Offsets, Purpose, Site, SiteValue};
use crate::catalog::Snapshot;

/// Deepest nesting the parser accepts (sqlparser's default is 50).
const RECURSION_LIMIT: usize = 64;

/// Below this much stack left, the analysis's recursion continues on a new segment.
const RED_ZONE: usize = 256 * 1024;
/// The size of such a segment.
const STACK_SEGMENT: usize = 8 * 1024 * 1024;

/// Deepest nesting of views followed through their definitions.
const MAX_VIEW_DEPTH: usize = 16;

/// A view's definition (`pg_get_viewdef`) as a query.
fn parse_query(sql: &str) -> Option<Query> {
    // Nested inside an analysis that was not given a larger stack: a deep definition is not
    // followed (the view is then judged by the columns it exposes).
    if super::depth::nesting_tokens(sql) > super::depth::GROW_ABOVE {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .ok()?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::Query(q)), true) => Some(*q),
        _ => None,
    }
}

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
    /// The protected columns whose values can reach the result: read as they are, or
    /// computed on (a concatenation, a cast, a function, an aggregate), at any depth.
    pub revealed: Vec<ColumnId>,
    /// An aggregate or constructor that gathers many rows' values into one (`string_agg`,
    /// `array_agg`, `json_agg`, `ARRAY(subquery)`, ...) takes a protected column, or a
    /// recursive query computes on one: a result row may carry any number of stored values.
    pub packs: bool,
    /// For each revealed column, the most FROM items of one query level its values reach the
    /// result from (`a.name, b.name` over a self-join: 2): how many stored rows' values of it
    /// one result row can carry, at least as far as one level combines them.
    pub spread: Vec<(ColumnId, usize)>,
    /// For each scalar subquery in a result position (`SELECT (SELECT name ... WHERE id = 1),
    /// (SELECT name ... WHERE id = 2)`), the columns it reveals, once per subquery: each adds
    /// a stored row's values to every result row.
    pub subquery_reveals: Vec<ColumnId>,
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
    /// The outcome depends on who is asking: the text touches protected columns, or a rule
    /// that holds only for some logins was consulted. A text that is not judged the same for
    /// every role (after `SET ROLE`, it is judged again).
    pub role_dependent: bool,
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

    /// Whether `text` names a path to protected data (a word of it is a protected relation, a
    /// view or function over one, a function reaching data outside the analysis, or a table
    /// of the policy), or may spell one through `U&` escapes. A column name alone is not one.
    pub fn names_protected(&self, text: &str) -> bool {
        if self.snapshot.protects_anything()
            && crate::sql::scan::has_unicode_escape(text.as_bytes())
        {
            return true;
        }
        crate::catalog::words::words(text.as_bytes()).any(|w| {
            let w = String::from_utf8_lossy(&w);
            self.snapshot.is_path_word(&w) || self.is_policy_table(&w)
        })
    }

    /// Whether `name` (unqualified, lower case) is a table of the policy.
    fn is_policy_table(&self, name: &str) -> bool {
        self.policy
            .policy()
            .columns
            .iter()
            .any(|c| c.table.rsplit('.').next() == Some(name))
    }
}

/// A plan for a statement with nothing to do (no rows transformed, nothing encrypted).
fn inert() -> Analysis {
    Analysis {
        statements: vec![StatementPlan {
            kind: Kind::NoRows,
            copy: None,
            outputs: Vec::new(),
            touched: Vec::new(),
            sites: Vec::new(),
            copy_in: None,
            revealed: Vec::new(),
            packs: false,
            spread: Vec::new(),
            subquery_reveals: Vec::new(),
        }],
        role_dependent: false,
    }
}

/// Whether text creates code with dynamic SQL (`EXECUTE` in PL/pgSQL, or a language pgveil
/// does not read), which can reach any relation whatever names it holds.
fn dynamic_code(text: &str) -> bool {
    let mut after_language = false;
    for w in crate::catalog::words::words(text.as_bytes()) {
        if w == b"execute" {
            return true;
        }
        if after_language && !matches!(w.as_slice(), b"sql" | b"plpgsql" | b"internal" | b"c") {
            return true;
        }
        after_language = w == b"language";
    }
    false
}

/// Parse and analyse `sql`; every statement in it must pass for the text to pass.
pub fn analyze(sql: &str, env: &Env<'_>) -> Result<Analysis, Refusal> {
    // An expression as deep as a long operator chain would exhaust the stack of whatever walks
    // it (the analysis, a clone, a drop): bounded, and given a stack that fits.
    let nesting = super::depth::nesting_tokens(sql);
    if nesting > super::depth::MAX_NESTING {
        return Err(Refusal::too_complex(nesting, super::depth::MAX_NESTING));
    }
    super::depth::with_stack_for(nesting, || analyze_text(sql, env))
}

fn analyze_text(sql: &str, env: &Env<'_>) -> Result<Analysis, Refusal> {
    // sqlparser reads `U&"..."` as `U & "..."`: the identifier it spells (a function such as
    // set_config or query_to_xml, a column) would go unseen.
    if crate::sql::scan::has_unicode_identifier(sql.as_bytes()) {
        return Err(Refusal::unanalysable_form(
            "pgveil cannot read U&\"...\" identifiers in statements it must analyse".into(),
            Some("write the identifier plainly, or in ordinary double quotes"),
        ));
    }
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    let statements = match parsed {
        Ok(s) => s,
        Err(e) => {
            let is_do = crate::sql::first_word(sql).eq_ignore_ascii_case("do");
            // A login that may read everything in clear gains nothing from a DO block; text
            // that names no path to protected data reaches nothing protected (a DO block with
            // dynamic SQL could build any name).
            if (is_do && env.unrestricted())
                || !(env.names_protected(sql) || (is_do && dynamic_code(sql)))
            {
                let mut a = inert();
                a.role_dependent = is_do;
                return Ok(a);
            }
            return Err(unparsable(sql, &e.to_string()));
        }
    };
    let text = Offsets::new(sql);
    let mut out = Vec::with_capacity(statements.len());
    let mut changed = SessionChange::Nothing;
    let mut role_dependent = false;
    for s in &statements {
        let mut a = Analyzer::new(env, &text);
        let mut plan = a.statement(s)?;
        role_dependent |= a.role_consulted.get() || !plan.touched.is_empty();
        // The whole text is judged before the server runs any of it: nothing after a change of
        // who is asking may reach protected data, and nothing at all may follow a change of
        // how SQL is read (pgveil's reading of it may differ from the server's).
        let reaches = !(plan.touched.is_empty() && plan.sites.is_empty());
        if changed == SessionChange::Reading || (changed == SessionChange::Role && reaches) {
            return Err(Refusal::after_session_change());
        }
        changed = changed.max(a.session_change.get());
        plan.sites.sort_by_key(|s| s.start);
        if plan.sites.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(Refusal::unsupported(
                "pgveil found overlapping values to encrypt in this statement".into(),
                Some("write each value once, as a plain literal or a parameter"),
            ));
        }
        out.push(plan);
    }
    Ok(Analysis {
        statements: out,
        role_dependent,
    })
}

fn unparsable(sql: &str, error: &str) -> Refusal {
    if crate::sql::first_word(sql).eq_ignore_ascii_case("do") {
        return Refusal::do_block();
    }
    Refusal::unparsable(error)
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
    /// See [`StatementPlan::revealed`] and [`StatementPlan::packs`].
    revealed: Vec<ColumnId>,
    packs: bool,
    /// Revealing uses so far, every one counted (`revealed` keeps each column once).
    reveal_events: usize,
    /// Per scalar subquery in a result position, the columns it reveals (see
    /// [`StatementPlan::subquery_reveals`]).
    subquery_reveals: Vec<ColumnId>,
    /// A serial per scope level (each SELECT, write or join scope gets a new one).
    serials: Vec<usize>,
    next_serial: usize,
    /// Where the last name resolved: (level serial, FROM item name).
    resolved: std::cell::RefCell<Option<(usize, String)>>,
    /// Protected values reaching the result, by (level serial, FROM item, column).
    exposures: Vec<(usize, String, ColumnId)>,
    /// The spread nested statements found (a data-modifying CTE, EXPLAIN's statement).
    spread_in: Vec<(ColumnId, usize)>,
    /// The reference being checked is an IS [NOT] NULL test.
    nullness: bool,
    /// How many view definitions are being followed.
    view_depth: usize,
    /// What the statement may change for the statements after it.
    session_change: std::cell::Cell<SessionChange>,
    /// A decision consulted who is asking: the outcome may differ for another role.
    role_consulted: std::cell::Cell<bool>,
    /// The column being used is grouped by as a whole value (a bare GROUP BY item, a DISTINCT
    /// output, `count(DISTINCT col)`): equal values form one group, which deterministic
    /// ciphertext keeps.
    grouping: bool,
}

/// What a statement may change for the statements after it in the same text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum SessionChange {
    #[default]
    Nothing,
    /// Who is asking (SET ROLE, SET SESSION AUTHORIZATION, set_config): what follows must not
    /// reach protected data.
    Role,
    /// How SQL is read (client_encoding, standard_conforming_strings, RESET, DISCARD): pgveil
    /// cannot read what follows as the server will.
    Reading,
}

fn src_col(s: Src) -> Option<ColumnId> {
    match s {
        Src::Col(c) => Some(c),
        _ => None,
    }
}

/// An identifier as PostgreSQL folds it: unquoted ones lower-cased (ASCII only, as the server
/// does), and every one cut to 63 bytes (NAMEDATALEN - 1) at a character boundary.
fn ident(i: &Ident) -> String {
    let mut s = if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    };
    if s.len() > crate::catalog::words::MAX_IDENT {
        let mut end = crate::catalog::words::MAX_IDENT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
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
            revealed: Vec::new(),
            packs: false,
            reveal_events: 0,
            subquery_reveals: Vec::new(),
            serials: Vec::new(),
            next_serial: 0,
            resolved: std::cell::RefCell::new(None),
            exposures: Vec::new(),
            spread_in: Vec::new(),
            nullness: false,
            view_depth: 0,
            session_change: std::cell::Cell::new(SessionChange::Nothing),
            role_consulted: std::cell::Cell::new(false),
            grouping: false,
        }
    }

    /// Run `f` with the columns it uses grouped by as whole values (see `grouping`).
    fn grouped<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let was = std::mem::replace(&mut self.grouping, true);
        let r = f(self);
        self.grouping = was;
        r
    }

    /// Whether the login may read every protected column in clear (and the outcome depends
    /// on who is asking).
    fn unrestricted(&self) -> bool {
        self.role_consulted.set(true);
        self.env.unrestricted()
    }

    /// The policy's decision on column `c` for who is asking.
    fn decide(&self, c: ColumnId) -> pgveil_policy::Decision<'e> {
        self.role_consulted.set(true);
        self.env.policy.decide(self.env.roles, c)
    }

    /// The statement may change `what` for the statements after it.
    fn changes(&self, what: SessionChange) {
        self.session_change.set(self.session_change.get().max(what));
    }
}

mod columns;
mod copy;
mod expr;
mod from;
mod names;
mod query;
mod statement;
mod write;

use columns::eq_usage;
use expr::Collect;
use names::*;

#[cfg(test)]
mod resolution_table;
#[cfg(test)]
mod rule_table;
#[cfg(test)]
mod tests;
