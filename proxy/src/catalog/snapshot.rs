//! One consistent picture of a database's relations, as pgveil needs it: the columns of every
//! user relation (so `SELECT *` expands to known positions), which of them the policy protects,
//! which views and functions expose protected columns, and the role memberships of logins.
//!
//! A snapshot is plain data, built from rows the loader read (or, in tests and `policy
//! explain`, from a description), then bound to one compiled policy.
use std::collections::HashMap;

use pgveil_policy::model::ColumnId;
use pgveil_policy::CompiledPolicy;

/// What kind of relation `pg_class.relkind` says this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Table,
    View,
    MaterializedView,
    Foreign,
    Partitioned,
}

impl RelKind {
    pub fn from_relkind(k: &str) -> Option<RelKind> {
        Some(match k {
            "r" => RelKind::Table,
            "v" => RelKind::View,
            "m" => RelKind::MaterializedView,
            "f" => RelKind::Foreign,
            "p" => RelKind::Partitioned,
            _ => return None,
        })
    }

    pub fn is_view(self) -> bool {
        matches!(self, RelKind::View | RelKind::MaterializedView)
    }
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub attnum: i16,
    pub type_oid: u32,
    /// The policy column this is, if the policy classifies it.
    pub protected: Option<ColumnId>,
}

/// One user relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
    pub columns: Vec<Attribute>,
    /// For views and functions: the protected columns whose values they can expose.
    pub exposes: Vec<ColumnId>,
}

impl Relation {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn has_protected(&self) -> bool {
        self.columns.iter().any(|c| c.protected.is_some())
    }
}

/// A dependency read from `pg_depend`: relation or function `from` uses column `attnum` of
/// relation `on` (0: the whole row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    pub from: u32,
    pub on: u32,
    pub attnum: i16,
}

/// A user function as the loader read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSource {
    pub oid: u32,
    pub name: String,
    pub language: String,
    pub body: String,
}

/// What the loader read, before it is bound to a policy.
#[derive(Debug, Clone, Default)]
pub struct RawCatalog {
    pub relations: Vec<Relation>,
    pub dependencies: Vec<Dependency>,
    pub functions: Vec<FunctionSource>,
    /// (member, role it is a member of), already closed transitively.
    pub memberships: Vec<(String, String)>,
    /// Encrypted columns' original types, from `pgveil.original_types`: (relation oid,
    /// column, type oid, type modifier).
    pub original_types: Vec<(u32, String, u32, i32)>,
    /// Every role of the cluster (`pg_roles`); empty when not read (a catalog from a schema
    /// file).
    pub roles: Vec<String>,
    /// (child, parent) from `pg_inherits`: inheritance children and partitions.
    pub inherits: Vec<(u32, u32)>,
    /// The definitions of views and materialized views (`pg_get_viewdef`).
    pub view_definitions: Vec<(u32, String)>,
    /// Relations whose writes go elsewhere: INSTEAD OF triggers, or rules other than a view's
    /// own SELECT rule.
    pub write_redirected: Vec<u32>,
}

impl RawCatalog {
    /// A catalog of plain tables, each given as (schema, name, columns in order), with no
    /// views, functions or roles: for `policy explain --schema` and the benchmarks.
    pub fn from_tables(tables: impl IntoIterator<Item = (String, String, Vec<String>)>) -> Self {
        RawCatalog {
            relations: tables
                .into_iter()
                .enumerate()
                .map(|(i, (schema, name, cols))| Relation {
                    oid: 16_384 + i as u32,
                    schema,
                    name,
                    kind: RelKind::Table,
                    columns: cols
                        .into_iter()
                        .enumerate()
                        .map(|(j, c)| Attribute {
                            name: c,
                            attnum: j as i16 + 1,
                            type_oid: 25,
                            protected: None,
                        })
                        .collect(),
                    exposes: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// A catalog bound to a policy: the analysis reads this.
#[derive(Debug, Default)]
pub struct Snapshot {
    relations: Vec<Relation>,
    by_name: HashMap<String, Vec<usize>>,
    by_oid: HashMap<u32, usize>,
    /// Function name (lower case) → protected columns its body can expose.
    functions: HashMap<String, Vec<ColumnId>>,
    /// Functions (lower case) whose body may change how the session's SQL is read: see
    /// [`reading_changers`].
    reading_changers: Vec<String>,
    member_of: HashMap<String, Vec<String>>,
    original_types: HashMap<(u32, String), (u32, i32)>,
    known_roles: std::collections::HashSet<String>,
    /// Policy columns that no longer exist in a relation that does, by relation oid.
    missing: HashMap<u32, Vec<String>>,
    view_definitions: HashMap<u32, String>,
    write_redirected: std::collections::HashSet<u32>,
}

/// Functions (lower case) whose body may change how the session's SQL is read, without pgveil
/// seeing it in the statement that calls them: a body that names `client_encoding`,
/// `standard_conforming_strings`, `names` (`SET NAMES`) or `set_config` (its setting may be a
/// parameter), PL/pgSQL that runs SQL from text (`EXECUTE`), code in another trusted language
/// (PL/Perl, PL/Tcl, ... can run any SQL), and, to a fixed point, functions whose body names
/// one of those. (C functions are a superuser's to install.)
fn reading_changers(functions: &[FunctionSource]) -> Vec<String> {
    let words: Vec<Vec<Vec<u8>>> = functions
        .iter()
        .map(|f| super::words::words(f.body.as_bytes()).collect())
        .collect();
    let mut flagged: Vec<bool> = functions
        .iter()
        .zip(&words)
        .map(|(f, w)| {
            let lang = f.language.to_ascii_lowercase();
            let named = w.iter().any(|w| {
                matches!(
                    w.as_slice(),
                    b"client_encoding" | b"standard_conforming_strings" | b"names" | b"set_config"
                )
            });
            let dynamic = lang == "plpgsql" && w.iter().any(|w| w == b"execute");
            let opaque = !matches!(lang.as_str(), "sql" | "plpgsql" | "c" | "internal");
            named || dynamic || opaque
        })
        .collect();
    loop {
        let names: std::collections::HashSet<Vec<u8>> = functions
            .iter()
            .zip(&flagged)
            .filter(|(_, f)| **f)
            .map(|(f, _)| f.name.to_ascii_lowercase().into_bytes())
            .collect();
        let mut changed = false;
        for (i, w) in words.iter().enumerate() {
            if !flagged[i] && w.iter().any(|w| names.contains(w)) {
                flagged[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    functions
        .iter()
        .zip(flagged)
        .filter(|(_, f)| *f)
        .map(|(f, _)| f.name.to_ascii_lowercase())
        .collect()
}

impl Snapshot {
    /// Bind what was read to a policy: mark protected columns, and work out which views and
    /// functions expose them (through other views too).
    pub fn build(raw: RawCatalog, policy: &CompiledPolicy) -> Snapshot {
        let mut relations = raw.relations.clone();
        for r in &mut relations {
            let table = r.qualified();
            for c in &mut r.columns {
                c.protected = policy.column_id(&table, &c.name);
            }
        }
        inherit_protection(&mut relations, &raw.inherits);
        let missing = missing_columns(&relations, policy);
        let by_oid: HashMap<u32, usize> = relations
            .iter()
            .enumerate()
            .map(|(i, r)| (r.oid, i))
            .collect();
        let protected_of = |rels: &[Relation], oid: u32, attnum: i16| -> Vec<ColumnId> {
            let Some(&i) = by_oid.get(&oid) else {
                return Vec::new();
            };
            let r = &rels[i];
            let mut out: Vec<ColumnId> = r
                .columns
                .iter()
                .filter(|c| attnum == 0 || c.attnum == attnum)
                .filter_map(|c| c.protected)
                .collect();
            if r.kind.is_view() && attnum == 0 {
                out.extend(r.exposes.iter().copied());
            }
            out
        };
        // Views over views: iterate to a fixed point (bounded by the number of views).
        let views = relations.iter().filter(|r| r.kind.is_view()).count();
        for _ in 0..=views {
            let mut changed = false;
            for d in &raw.dependencies {
                let Some(&vi) = by_oid.get(&d.from) else {
                    continue;
                };
                if !relations[vi].kind.is_view() {
                    continue;
                }
                let mut found = protected_of(&relations, d.on, d.attnum);
                if let Some(&oi) = by_oid.get(&d.on) {
                    if relations[oi].kind.is_view() {
                        found.extend(relations[oi].exposes.iter().copied());
                    }
                }
                for c in found {
                    if !relations[vi].exposes.contains(&c) {
                        relations[vi].exposes.push(c);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in relations.iter().enumerate() {
            by_name.entry(r.name.clone()).or_default().push(i);
        }
        let functions = bind_functions(&raw, &relations, &by_oid, policy);
        let reading_changers = reading_changers(&raw.functions);
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for (m, g) in raw.memberships {
            member_of.entry(m).or_default().push(g);
        }
        let original_types = raw
            .original_types
            .iter()
            .map(|(rel, col, ty, modifier)| ((*rel, col.clone()), (*ty, *modifier)))
            .collect();
        Snapshot {
            relations,
            by_name,
            by_oid,
            functions,
            reading_changers,
            member_of,
            original_types,
            missing,
            known_roles: raw.roles.into_iter().collect(),
            view_definitions: raw.view_definitions.into_iter().collect(),
            write_redirected: raw.write_redirected.into_iter().collect(),
        }
    }

    /// The policy's columns of relation `oid` that the relation no longer has (renamed or
    /// dropped since the policy was written).
    pub fn missing_columns(&self, oid: u32) -> &[String] {
        self.missing.get(&oid).map_or(&[], |v| v.as_slice())
    }

    /// Every relation with policy columns it no longer has: (relation, columns).
    pub fn policy_mismatches(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .missing
            .iter()
            .filter_map(|(oid, cols)| self.by_oid(*oid).map(|r| (r.qualified(), cols.clone())))
            .collect();
        out.sort();
        out
    }

    /// The definition of view or materialized view `oid`.
    pub fn view_definition(&self, oid: u32) -> Option<&str> {
        self.view_definitions.get(&oid).map(|s| s.as_str())
    }

    /// Whether writes to relation `oid` go elsewhere (INSTEAD OF triggers, rules).
    pub fn write_redirected(&self, oid: u32) -> bool {
        self.write_redirected.contains(&oid)
    }

    /// Whether the database holds anything protected: a relation with protected columns, a
    /// view or function over one. A database that does not is served as pass-through.
    pub fn protects_anything(&self) -> bool {
        !self.functions.is_empty()
            || self
                .relations
                .iter()
                .any(|r| r.has_protected() || !r.exposes.is_empty())
    }

    /// Whether `word` (lower case) names a path to protected data: a relation with protected
    /// columns, a view or function over one, a function that changes how SQL is read, a
    /// function that reaches data outside the analysis, a statistics relation.
    pub fn is_path_word(&self, word: &str) -> bool {
        self.by_name.get(word).is_some_and(|v| {
            v.iter().any(|&i| {
                let r = &self.relations[i];
                r.has_protected() || !r.exposes.is_empty()
            })
        }) || self.functions.contains_key(word)
            || self.changes_reading(word)
            || super::functions::reach(word).is_some()
            || super::functions::is_statistics(word)
    }

    /// Relation names that are paths to protected data.
    pub fn protected_relation_names(&self) -> impl Iterator<Item = &str> {
        self.relations
            .iter()
            .filter(|r| r.has_protected() || !r.exposes.is_empty())
            .map(|r| r.name.as_str())
    }

    /// Whether a function (by unqualified name) may change how the session's SQL is read.
    pub fn changes_reading(&self, name: &str) -> bool {
        self.reading_changers.iter().any(|f| f == name)
    }

    /// Functions that may change how the session's SQL is read.
    pub fn reading_changers(&self) -> impl Iterator<Item = &str> {
        self.reading_changers.iter().map(|s| s.as_str())
    }

    /// Relations a name can mean. A qualified name means exactly one (or none); an
    /// unqualified one means every relation of that name in any schema, protected ones
    /// first, so that callers that take the first resolve conservatively.
    pub fn lookup(&self, schema: Option<&str>, name: &str) -> Vec<&Relation> {
        let mut found: Vec<&Relation> = self
            .by_name
            .get(name)
            .map(|v| v.iter().map(|&i| &self.relations[i]).collect())
            .unwrap_or_default();
        if let Some(s) = schema {
            found.retain(|r| r.schema == s);
        }
        found.sort_by_key(|r| !r.has_protected() && r.exposes.is_empty());
        found
    }

    pub fn by_oid(&self, oid: u32) -> Option<&Relation> {
        self.by_oid.get(&oid).map(|&i| &self.relations[i])
    }

    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    /// Protected columns a function (by unqualified name) can expose, if any.
    pub fn function_exposes(&self, name: &str) -> Option<&[ColumnId]> {
        self.functions.get(name).map(|v| v.as_slice())
    }

    /// Function names that expose protected columns.
    pub fn exposing_functions(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(|s| s.as_str())
    }

    /// The type an encrypted column had before it was encrypted (`pgveil.original_types`),
    /// and its modifier (`atttypmod`, -1 when none or not recorded).
    pub fn original_type(&self, rel: &Relation, column: &str) -> Option<(u32, i32)> {
        self.original_types
            .get(&(rel.oid, column.to_string()))
            .copied()
    }

    /// Whether the catalog read knew role `name` (true when roles were not read at all).
    pub fn knows_role(&self, name: &str) -> bool {
        self.known_roles.is_empty() || self.known_roles.contains(name)
    }

    /// Every Postgres role `login` is a member of, directly or not.
    pub fn member_of(&self, login: &str) -> &[String] {
        self.member_of.get(login).map_or(&[], |v| v.as_slice())
    }
}

/// Children and partitions of a protected table are protected tables: a column of a child
/// (by name, as inheritance keeps names) gets the protection of its ancestor's column.
fn inherit_protection(relations: &mut [Relation], inherits: &[(u32, u32)]) {
    let index: HashMap<u32, usize> = relations
        .iter()
        .enumerate()
        .map(|(i, r)| (r.oid, i))
        .collect();
    // Each pass moves protection one generation down; the depth is bounded by the relations.
    for _ in 0..relations.len() {
        let mut changed = false;
        for &(child, parent) in inherits {
            let (Some(&ci), Some(&pi)) = (index.get(&child), index.get(&parent)) else {
                continue;
            };
            let from: Vec<(String, ColumnId)> = relations[pi]
                .columns
                .iter()
                .filter_map(|c| c.protected.map(|p| (c.name.clone(), p)))
                .collect();
            for (name, id) in from {
                if let Some(c) = relations[ci]
                    .columns
                    .iter_mut()
                    .find(|c| c.name == name && c.protected.is_none())
                {
                    c.protected = Some(id);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// Policy columns whose table exists but which it no longer has, by relation oid.
fn missing_columns(relations: &[Relation], policy: &CompiledPolicy) -> HashMap<u32, Vec<String>> {
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for c in &policy.policy().columns {
        let (schema, table) = c.table.split_once('.').unwrap_or(("public", &c.table));
        for r in relations
            .iter()
            .filter(|r| r.schema == schema && r.name == table)
        {
            if !r.columns.iter().any(|a| a.name == c.column) {
                out.entry(r.oid).or_default().push(c.column.clone());
            }
        }
    }
    out
}

/// A function exposes the protected columns its body names (by table), those `pg_depend`
/// records for it (SQL-standard bodies), and, when its body runs dynamic SQL or it is written
/// in a language pgveil cannot read, every protected column.
fn bind_functions(
    raw: &RawCatalog,
    relations: &[Relation],
    by_oid: &HashMap<u32, usize>,
    policy: &CompiledPolicy,
) -> HashMap<String, Vec<ColumnId>> {
    let all: Vec<ColumnId> = (0..policy.policy().columns.len()).collect();
    let mut table_words: HashMap<String, Vec<ColumnId>> = HashMap::new();
    for r in relations {
        let cols: Vec<ColumnId> = r
            .columns
            .iter()
            .filter_map(|c| c.protected)
            .chain(r.exposes.iter().copied())
            .collect();
        if !cols.is_empty() {
            table_words
                .entry(r.name.to_ascii_lowercase())
                .or_default()
                .extend(cols);
        }
    }
    let mut out: HashMap<String, Vec<ColumnId>> = HashMap::new();
    for f in &raw.functions {
        let mut cols: Vec<ColumnId> = Vec::new();
        // C and internal functions need a superuser to create: the DBA's own code. Other
        // languages (plperl, plpython, ...) can run any query pgveil cannot read.
        let mut dynamic = !matches!(f.language.as_str(), "sql" | "plpgsql" | "c" | "internal");
        for w in super::words::words(f.body.as_bytes()) {
            let w = String::from_utf8_lossy(&w).into_owned();
            if w == "execute" && f.language == "plpgsql" {
                dynamic = true;
            }
            // A body that calls a function running SQL text (or reading relations by name)
            // can reach any protected column.
            if super::functions::reach(&w).is_some() {
                dynamic = true;
            }
            if let Some(c) = table_words.get(&w) {
                cols.extend(c.iter().copied());
            }
        }
        for d in raw.dependencies.iter().filter(|d| d.from == f.oid) {
            if let Some(&i) = by_oid.get(&d.on) {
                let r = &relations[i];
                cols.extend(
                    r.columns
                        .iter()
                        .filter(|c| d.attnum == 0 || c.attnum == d.attnum)
                        .filter_map(|c| c.protected),
                );
                cols.extend(r.exposes.iter().copied());
            }
        }
        if dynamic && !all.is_empty() {
            cols = all.clone();
        }
        if !cols.is_empty() {
            cols.sort_unstable();
            cols.dedup();
            out.entry(f.name.to_ascii_lowercase())
                .or_default()
                .extend(cols);
        }
    }
    out
}
