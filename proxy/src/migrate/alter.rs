//! Column types: to `text` before encrypting (recorded in `pgveil.original_types`), and back
//! after decrypting. Each table's change and its records are one transaction.
use anyhow::Context;
use tokio_postgres::Client;

use super::plan::TablePlan;
use crate::output::outln;

/// How long an `ALTER TABLE` waits for its lock before giving up, so that a long transaction
/// elsewhere does not queue every other session behind the migration.
const LOCK_TIMEOUT: &str = "10s";

const SETUP: &str = "\
CREATE SCHEMA IF NOT EXISTS pgveil;
CREATE TABLE IF NOT EXISTS pgveil.original_types(
    table_name regclass, column_name name, original_type regtype,
    PRIMARY KEY (table_name, column_name));
ALTER TABLE pgveil.original_types ADD COLUMN IF NOT EXISTS original_type_full text;
ALTER TABLE pgveil.original_types ADD COLUMN IF NOT EXISTS original_typmod int4;
GRANT USAGE ON SCHEMA pgveil TO PUBLIC;
GRANT SELECT ON pgveil.original_types TO PUBLIC;";

const RECORD: &str = "\
INSERT INTO pgveil.original_types
    (table_name, column_name, original_type, original_type_full, original_typmod)
SELECT $1::oid::regclass, $2::text::name, $3::oid::regtype, $4::text, $5::int4
WHERE NOT EXISTS (SELECT 1 FROM pgveil.original_types
                  WHERE table_name = $1::oid::regclass AND column_name = $2::text::name)";

const FORGET: &str = "\
DELETE FROM pgveil.original_types WHERE table_name = $1::oid::regclass AND column_name = $2::text::name";

/// A transaction for a column type change, waiting at most [`LOCK_TIMEOUT`] for a lock.
async fn begin_type_change(client: &mut Client) -> anyhow::Result<tokio_postgres::Transaction<'_>> {
    let tx = client
        .transaction()
        .await
        .context("starting the type change")?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await
        .context("setting the lock timeout")?;
    Ok(tx)
}

/// Change every protected non-text column of `table` to `text`, recording the original types.
/// One transaction: after a crash, either all are changed and recorded or none.
pub async fn to_text(client: &mut Client, table: &TablePlan) -> anyhow::Result<()> {
    let cols: Vec<_> = table.to_alter().collect();
    if cols.is_empty() {
        return Ok(());
    }
    let tx = begin_type_change(client).await?;
    tx.batch_execute(SETUP)
        .await
        .context("creating pgveil.original_types")?;
    for c in &cols {
        tx.execute(
            RECORD,
            &[
                &table.oid,
                &c.name,
                &c.current_type_oid,
                &c.current_type,
                &c.current_typmod,
            ],
        )
        .await
        .with_context(|| format!("recording the type of {}.{}", table.name, c.name))?;
    }
    let changes: Vec<String> = cols
        .iter()
        .map(|c| format!("ALTER COLUMN {0} TYPE text USING {0}::text", c.ident))
        .collect();
    tx.batch_execute(&format!("ALTER TABLE {} {}", table.ident, changes.join(", ")))
        .await
        .with_context(|| {
            format!(
                "changing {} of {} to text (a view or rule using the column, or a lock held longer than {LOCK_TIMEOUT}, stops it)",
                cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                table.name
            )
        })?;
    tx.commit().await.context("committing the type change")?;
    Ok(())
}

/// After decrypting: change columns back to their recorded types and forget the records.
pub async fn restore_types(
    client: &mut Client,
    table: &TablePlan,
    report: bool,
) -> anyhow::Result<()> {
    let cols: Vec<_> = table
        .columns
        .iter()
        .filter_map(|c| c.recorded_type.as_ref().map(|t| (c, t)))
        .collect();
    if cols.is_empty() {
        return Ok(());
    }
    let tx = begin_type_change(client).await?;
    for (c, _) in &cols {
        tx.execute(FORGET, &[&table.oid, &c.name])
            .await
            .with_context(|| format!("forgetting the type of {}.{}", table.name, c.name))?;
    }
    // The recorded type comes from format_type() or regtype output: valid SQL type syntax.
    let changes: Vec<String> = cols
        .iter()
        .map(|(c, t)| format!("ALTER COLUMN {0} TYPE {t} USING {0}::{t}", c.ident))
        .collect();
    tx.batch_execute(&format!(
        "ALTER TABLE {} {}",
        table.ident,
        changes.join(", ")
    ))
    .await
    .with_context(|| format!("restoring the original column types of {}", table.name))?;
    tx.commit().await.context("committing the type change")?;
    if report {
        for (c, t) in &cols {
            outln!("{}.{}: type restored to {t}", table.name, c.name);
        }
    }
    Ok(())
}
