//! Encrypt the demo's sample data in place, as `pgveil encrypt` will for real tables: every
//! column the policy marks `encrypt:` gets envelopes, written directly as the superuser.
//!
//! This is a demo shortcut (no batching by key ranges, no resumption); the write-side
//! enforcement brings the real migration command.
use anyhow::Context;
use pgveil_policy::crypto::{KeySet, Mode};
use pgveil_policy::model::EncryptMode;
use pgveil_policy::CompiledPolicy;

/// Encrypt every encrypted column of the policy, table by table. Returns the values sealed.
pub async fn seal_all(
    admin: &tokio_postgres::Client,
    policy: &CompiledPolicy,
    keys: &KeySet,
) -> anyhow::Result<usize> {
    let mut tables: Vec<&str> = policy
        .policy()
        .columns
        .iter()
        .filter(|c| c.encrypt != EncryptMode::None)
        .map(|c| c.table.as_str())
        .collect();
    tables.dedup();
    let mut sealed = 0;
    for table in tables {
        let columns: Vec<_> = policy
            .policy()
            .columns
            .iter()
            .filter(|c| c.table == table && c.encrypt != EncryptMode::None)
            .collect();
        let pk: String = admin
            .query_one(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
                &[&table],
            )
            .await
            .with_context(|| format!("primary key of {table}"))?
            .get(0);
        let ciphers: Vec<_> = columns.iter().map(|c| keys.domain(&c.domain)).collect();
        let list: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::text", c.column))
            .collect();
        let rows = admin
            .query(
                &format!("SELECT {pk}::text, {} FROM {table}", list.join(", ")),
                &[],
            )
            .await?;
        for chunk in rows.chunks(500) {
            let mut values = Vec::with_capacity(chunk.len());
            for row in chunk {
                let key: String = row.get(0);
                let mut cells = vec![quote(&key)];
                for (i, c) in columns.iter().enumerate() {
                    let v: Option<String> = row.get(i + 1);
                    let mode = match c.encrypt {
                        EncryptMode::Deterministic => Mode::Deterministic,
                        _ => Mode::Randomized,
                    };
                    cells.push(match v {
                        Some(v) => {
                            sealed += 1;
                            quote(&ciphers[i].encrypt(mode, v.as_bytes())?)
                        }
                        None => "NULL".into(),
                    });
                }
                values.push(format!("({})", cells.join(", ")));
            }
            let sets: Vec<String> = columns
                .iter()
                .map(|c| format!("{0} = v.{0}", c.column))
                .collect();
            let names: Vec<String> = columns.iter().map(|c| c.column.clone()).collect();
            admin
                .batch_execute(&format!(
                    "UPDATE {table} t SET {} FROM (VALUES {}) v(pk, {}) WHERE t.{pk}::text = v.pk",
                    sets.join(", "),
                    values.join(", "),
                    names.join(", ")
                ))
                .await
                .with_context(|| format!("encrypting {table}"))?;
        }
    }
    Ok(sealed)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
