//! The plan: which tables and columns, their primary keys and types, and what would block.
use anyhow::{bail, Context};
use pgveil_policy::crypto::{KeySet, Mode};
use pgveil_policy::model::EncryptMode;
use pgveil_policy::CompiledPolicy;
use tokio_postgres::Client;

use super::{quote_ident, Op, Options};
use crate::output::outln;

/// One protected column of a table.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    /// The column name as in the catalog.
    pub name: String,
    /// `"name"`, quoted for SQL.
    pub ident: String,
    pub attnum: i16,
    pub domain: String,
    pub mode: Mode,
    /// `format_type` of the column's current type, e.g. `bigint`, `text`.
    pub current_type: String,
    pub current_type_oid: u32,
    /// `atttypmod`: the length of a `varchar(20)`, the precision of a `numeric(10,2)`, or -1.
    pub current_typmod: i32,
    pub is_text: bool,
    /// The type recorded in `pgveil.original_types` (with its modifier when known).
    pub recorded_type: Option<String>,
    /// A DEFAULT expression would store plaintext when an insert leaves the column out.
    pub has_default: bool,
    /// Why this column cannot be migrated as it is (encrypt only).
    pub blockers: Vec<String>,
}

/// One table to migrate.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// `schema.table`, as the policy names it.
    pub name: String,
    /// `"schema"."table"`.
    pub ident: String,
    pub oid: u32,
    /// The single primary-key column, quoted, and its type.
    pub pk: String,
    pub pk_type: String,
    pub columns: Vec<ColumnPlan>,
    /// Estimated rows (`reltuples`, or `count(*)` for a table never analysed).
    pub est_rows: u64,
}

impl TablePlan {
    /// Columns whose type must change to `text` before encrypting.
    pub fn to_alter(&self) -> impl Iterator<Item = &ColumnPlan> {
        self.columns.iter().filter(|c| !c.is_text)
    }
}

#[derive(Debug)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
    /// Whether `pgveil.original_types` exists.
    pub has_original_types: bool,
}

const TABLE: &str = "\
SELECT c.oid, c.reltuples::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";

const PRIMARY_KEY: &str = "\
SELECT i.indnkeyatts::int4, a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = $1 AND i.indisprimary";

const COLUMN: &str = "\
SELECT a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypid = 'text'::regtype,
       a.atthasdef, a.atttypmod
FROM pg_attribute a
WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped";

const CONSTRAINTS: &str = "\
SELECT conname::text, contype::text, conrelid = $1::oid
FROM pg_constraint
WHERE (conrelid = $1::oid AND $2::int2 = ANY(conkey)) OR (confrelid = $1::oid AND $2::int2 = ANY(confkey))";

/// Views, rules and row-level security policies that depend on a column: PostgreSQL refuses to
/// change its type under them ("cannot alter type of a column used by a view or rule").
const DEPENDENTS: &str = "\
SELECT DISTINCT CASE d.classid
         WHEN 'pg_rewrite'::regclass THEN
           (SELECT CASE WHEN v.oid = $1::oid THEN 'rule ' || r.rulename::text
                        ELSE 'view ' || v.oid::regclass::text END
              FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = d.objid)
         ELSE (SELECT 'row security policy ' || p.polname::text FROM pg_policy p WHERE p.oid = d.objid)
       END
FROM pg_depend d
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::oid AND d.refobjsubid = $2::int2
  AND d.classid IN ('pg_rewrite'::regclass, 'pg_policy'::regclass)
ORDER BY 1";

const INDEXES: &str = "\
SELECT c.relname::text, am.amname::text, i.indisunique, i.indisprimary,
       i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = $1::oid
  AND ($2::int2 = ANY(i.indkey::int2[])
       OR EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::oid
                    AND d.refobjsubid = $2::int2))";

const RECORDED: &str = "\
SELECT o.original_type::text, to_jsonb(o) ->> 'original_type_full'
FROM pgveil.original_types o
WHERE o.table_name = $1::oid::regclass AND o.column_name = $2::text::name";

impl Plan {
    /// Read the catalog for every table of the policy with encrypted columns (or the
    /// `--table` ones) and work out what to do.
    pub async fn build(
        client: &Client,
        policy: &CompiledPolicy,
        _keys: &KeySet,
        op: Op,
        opts: &Options,
    ) -> anyhow::Result<Plan> {
        let encrypted: Vec<_> = policy
            .policy()
            .columns
            .iter()
            .filter(|c| c.encrypt != EncryptMode::None)
            .collect();
        let mut names: Vec<&str> = Vec::new();
        for c in &encrypted {
            if !names.contains(&c.table.as_str()) {
                names.push(&c.table);
            }
        }
        for t in &opts.tables {
            if !names.contains(&t.as_str()) {
                bail!("table {t} has no encrypted columns in the policy (names are schema.table)");
            }
        }
        if !opts.tables.is_empty() {
            names.retain(|n| opts.tables.iter().any(|t| t == n));
        }
        let has_original_types: bool = client
            .query_one(
                "SELECT to_regclass('pgveil.original_types') IS NOT NULL",
                &[],
            )
            .await
            .context("reading the catalog")?
            .get(0);
        let mut tables = Vec::new();
        for name in names {
            let (schema, table) = name
                .split_once('.')
                .with_context(|| format!("policy table {name} is not schema.table"))?;
            let row = client
                .query_opt(TABLE, &[&schema, &table])
                .await
                .with_context(|| format!("reading the catalog for {name}"))?
                .with_context(|| format!("table {name} not found in the database"))?;
            let oid: u32 = row.get(0);
            let reltuples: i64 = row.get(1);
            let ident = format!("{}.{}", quote_ident(schema), quote_ident(table));
            let pks = client
                .query(PRIMARY_KEY, &[&oid])
                .await
                .with_context(|| format!("reading the primary key of {name}"))?;
            let (pk, pk_type) = match pks.first() {
                Some(r) if r.get::<_, i32>(0) == 1 => {
                    (quote_ident(r.get::<_, &str>(1)), r.get::<_, String>(2))
                }
                Some(_) => bail!(
                    "table {name} has a multi-column primary key; pgveil needs a single-column primary key to migrate it in batches"
                ),
                None => bail!(
                    "table {name} has no primary key; pgveil needs a single-column primary key to migrate it in batches"
                ),
            };
            let est_rows = if reltuples > 0 {
                reltuples as u64
            } else {
                let n: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {ident}"), &[])
                    .await
                    .with_context(|| format!("counting rows of {name}"))?
                    .get(0);
                n.max(0) as u64
            };
            let mut columns = Vec::new();
            for c in encrypted.iter().filter(|c| c.table == name) {
                let row = client
                    .query_opt(COLUMN, &[&oid, &c.column])
                    .await
                    .with_context(|| format!("reading column {}", c.qualified()))?
                    .with_context(|| {
                        format!(
                            "column {} not found in the database (renamed or dropped? pgveil refuses statements on the table until the policy or the table is fixed)",
                            c.qualified()
                        )
                    })?;
                let attnum: i16 = row.get(0);
                let mode = match c.encrypt {
                    EncryptMode::Deterministic => Mode::Deterministic,
                    _ => Mode::Randomized,
                };
                let recorded_type = if has_original_types {
                    client
                        .query_opt(RECORDED, &[&oid, &c.column])
                        .await
                        .with_context(|| format!("reading pgveil.original_types for {name}"))?
                        .map(|r| {
                            r.get::<_, Option<String>>(1)
                                .unwrap_or_else(|| r.get::<_, String>(0))
                        })
                } else {
                    None
                };
                let mut col = ColumnPlan {
                    name: c.column.clone(),
                    ident: quote_ident(&c.column),
                    attnum,
                    domain: c.domain.clone(),
                    mode,
                    current_type: row.get(1),
                    current_type_oid: row.get(2),
                    current_typmod: row.get(5),
                    is_text: row.get(3),
                    recorded_type,
                    has_default: row.get(4),
                    blockers: Vec::new(),
                };
                if op == Op::Encrypt {
                    col.blockers = blockers(client, oid, &col).await.with_context(|| {
                        format!("reading constraints and indexes of {}", c.qualified())
                    })?;
                }
                columns.push(col);
            }
            tables.push(TablePlan {
                name: name.to_string(),
                ident,
                oid,
                pk,
                pk_type,
                columns,
                est_rows,
            });
        }
        Ok(Plan {
            tables,
            has_original_types,
        })
    }

    /// Refuse, with every reason at once, when a column cannot be encrypted as it is.
    pub fn refuse_blockers(&self, op: Op) -> anyhow::Result<()> {
        if op != Op::Encrypt {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| {
                t.columns.iter().flat_map(move |c| {
                    c.blockers
                        .iter()
                        .map(move |b| format!("{}.{}: {b}", t.name, c.name))
                })
            })
            .collect();
        if reasons.is_empty() {
            return Ok(());
        }
        bail!(
            "cannot encrypt in place (nothing was changed):\n  {}",
            reasons.join("\n  ")
        )
    }

    /// `--dry-run`: what would be done, table by table; `false` when something would be
    /// refused (every reason is printed).
    pub fn print_dry_run(&self, op: Op) -> bool {
        let mut fine = true;
        outln!("dry run: nothing will be changed");
        for t in &self.tables {
            outln!(
                "{} (primary key {} {}, about {} rows):",
                t.name,
                t.pk,
                t.pk_type,
                t.est_rows
            );
            for c in &t.columns {
                let mode = match c.mode {
                    Mode::Deterministic => "deterministic",
                    Mode::Randomized => "randomized",
                };
                let what = match op {
                    Op::Encrypt if !c.is_text => format!(
                        "ALTER TABLE {} ALTER COLUMN {} TYPE text USING {}::text (was {}; recorded in pgveil.original_types), then {op} ({mode}, domain {})",
                        t.ident, c.ident, c.ident, c.current_type, c.domain
                    ),
                    Op::Encrypt => format!("{op} ({mode}, domain {})", c.domain),
                    Op::Decrypt => match &c.recorded_type {
                        Some(orig) => format!(
                            "{op}, then ALTER TABLE {} ALTER COLUMN {} TYPE {orig} USING {}::{orig}",
                            t.ident, c.ident, c.ident
                        ),
                        None => format!("{op} (stays {})", c.current_type),
                    },
                    Op::Rekey => format!("{op} envelopes not under the active key ({mode})"),
                };
                outln!("  {}: {what}", c.name);
                if op == Op::Encrypt && c.has_default {
                    outln!(
                        "  {}: warning: has a DEFAULT; rows inserted without this column store the default in plaintext",
                        c.name
                    );
                }
                for b in &c.blockers {
                    outln!("  {}: REFUSED: {b}", c.name);
                    fine = false;
                }
            }
        }
        fine
    }
}

/// What stops a column from being encrypted in place.
async fn blockers(client: &Client, oid: u32, col: &ColumnPlan) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for r in client.query(CONSTRAINTS, &[&oid, &col.attnum]).await? {
        let name: String = r.get(0);
        let kind: String = r.get(1);
        let own: bool = r.get(2);
        match kind.as_str() {
            "f" if own => out.push(format!(
                "foreign key {name} references another table through this column; ciphertext cannot match it (drop the foreign key, or encrypt both columns in one domain and recreate it after)"
            )),
            "f" => out.push(format!(
                "foreign key {name} of another table references this column; drop it first (deterministic columns in one domain can get it back after encryption)"
            )),
            "c" => out.push(format!(
                "CHECK constraint {name} would see ciphertext, not the value; drop it first"
            )),
            "x" => out.push(format!(
                "exclusion constraint {name} cannot work on ciphertext; drop it first"
            )),
            // Primary keys and unique constraints are looked at through their index.
            _ => {}
        }
    }
    if !col.is_text {
        for r in client.query(DEPENDENTS, &[&oid, &col.attnum]).await? {
            let Some(what) = r.get::<_, Option<String>>(0) else {
                continue;
            };
            out.push(format!(
                "{what} uses this column, and PostgreSQL cannot change the column's type to text under it; drop it first and recreate it after (pgveil reads views over encrypted columns)"
            ));
        }
    }
    for r in client.query(INDEXES, &[&oid, &col.attnum]).await? {
        let name: String = r.get(0);
        let am: String = r.get(1);
        let unique: bool = r.get(2);
        let primary: bool = r.get(3);
        let expr: bool = r.get(4);
        if primary {
            out.push(format!(
                "is (part of) the primary key {name}; pgveil does not encrypt primary keys"
            ));
        } else if expr {
            out.push(format!(
                "index {name} uses an expression or a predicate on this column, which would compute on ciphertext; drop it first"
            ));
        } else if am != "btree" && am != "hash" {
            out.push(format!(
                "{am} index {name} cannot serve ciphertext; drop it first (btree and hash indexes keep working for equality)"
            ));
        } else if unique && col.mode == Mode::Randomized {
            out.push(format!(
                "unique index {name} on a randomized column would stop enforcing uniqueness; drop it or make the column deterministic"
            ));
        }
    }
    Ok(out)
}
