//! `pgveil audit report`: the access review over audit files.
//!
//! Per login and policy role: which classified columns it used, with which action, in how many
//! statements and over how many rows; and per policy role, the grants (columns the policy lets
//! it read other than `deny`) that no statement used in the window: candidates for revocation.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pgveil_policy::compile::CompiledPolicy;
use pgveil_policy::Action;
use serde::Serialize;

use super::record::{parse_time, Kind, Outcome, Record};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: not an audit record: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Used {
    pub login: String,
    /// The policy role (`-` for a login without one).
    pub role: String,
    pub column: String,
    pub level: String,
    pub action: String,
    pub statements: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unused {
    pub role: String,
    pub column: String,
    pub level: String,
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Start of the window (RFC 3339), if limited.
    pub since: Option<String>,
    pub statements: u64,
    pub used: Vec<Used>,
    pub unused_grants: Vec<Unused>,
}

/// (login, role, column, level, action).
type UseKey = (String, String, String, String, String);

/// Builds the review from `files`, counting statement records with time ≥ `since` (Unix
/// seconds). Denied and failed statements do not count as use.
pub fn build<P: AsRef<Path>>(
    files: &[P],
    policy: &CompiledPolicy,
    since: Option<i64>,
) -> Result<Report, ReportError> {
    let mut used: BTreeMap<UseKey, (u64, u64)> = BTreeMap::new();
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    let mut statements = 0u64;
    for path in files {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let r: Record = serde_json::from_str(line).map_err(|source| ReportError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?;
            if r.kind != Kind::Statement || r.outcome != Some(Outcome::Ok) {
                continue;
            }
            if let Some(s) = since {
                if parse_time(&r.time).is_none_or(|t| t < s) {
                    continue;
                }
            }
            statements += 1;
            let login = r.login.clone().unwrap_or_default();
            let mut roles = r.roles.clone().unwrap_or_default();
            if roles.is_empty() {
                roles.push("-".into());
            }
            for role in &roles {
                for c in r.columns.iter().flatten() {
                    let e = used
                        .entry((
                            login.clone(),
                            role.clone(),
                            c.column.clone(),
                            c.level.clone(),
                            c.action.clone(),
                        ))
                        .or_default();
                    e.0 += 1;
                    e.1 += r.rows.unwrap_or(0);
                    touched.insert((role.clone(), c.column.clone()));
                }
            }
        }
    }
    let p = policy.policy();
    let mut unused_grants = Vec::new();
    for (ri, role) in p.roles.iter().enumerate() {
        for (ci, col) in p.columns.iter().enumerate() {
            let d = policy.decide_role(Some(ri), ci);
            if d.action == Action::Deny {
                continue;
            }
            let name = format!("{}.{}", col.table, col.column);
            if !touched.contains(&(role.name.clone(), name.clone())) {
                unused_grants.push(Unused {
                    role: role.name.clone(),
                    column: name,
                    level: p.levels.get(col.level).cloned().unwrap_or_default(),
                    action: d.action.to_string(),
                });
            }
        }
    }
    Ok(Report {
        since: since.map(|s| pgveil_policy::keyring::rfc3339(u64::try_from(s).unwrap_or(0))),
        statements,
        used: used
            .into_iter()
            .map(
                |((login, role, column, level, action), (statements, rows))| Used {
                    login,
                    role,
                    column,
                    level,
                    action,
                    statements,
                    rows,
                },
            )
            .collect(),
        unused_grants,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One table: `section,login,role,column,level,action,statements,rows`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("section,login,role,column,level,action,statements,rows\n");
        for u in &self.used {
            let f: Vec<String> = [&u.login, &u.role, &u.column, &u.level, &u.action]
                .iter()
                .map(|s| csv_field(s))
                .collect();
            out.push_str(&format!(
                "used,{},{},{}\n",
                f.join(","),
                u.statements,
                u.rows
            ));
        }
        for u in &self.unused_grants {
            let f: Vec<String> = [&u.role, &u.column, &u.level, &u.action]
                .iter()
                .map(|s| csv_field(s))
                .collect();
            out.push_str(&format!("unused,,{},0,0\n", f.join(",")));
        }
        out
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match &self.since {
            Some(s) => out.push_str(&format!(
                "Access review since {s}: {} statements\n\n",
                self.statements
            )),
            None => out.push_str(&format!(
                "Access review: {} statements\n\n",
                self.statements
            )),
        }
        let head = [
            "LOGIN",
            "ROLE",
            "COLUMN",
            "LEVEL",
            "ACTION",
            "STATEMENTS",
            "ROWS",
        ];
        let rows: Vec<[String; 7]> = self
            .used
            .iter()
            .map(|u| {
                [
                    u.login.clone(),
                    u.role.clone(),
                    u.column.clone(),
                    u.level.clone(),
                    u.action.clone(),
                    u.statements.to_string(),
                    u.rows.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&head, &rows));
        out.push_str("\nGrants never used in the window (candidates for revocation):\n");
        let head = ["ROLE", "COLUMN", "LEVEL", "ACTION"];
        let rows: Vec<[String; 4]> = self
            .unused_grants
            .iter()
            .map(|u| {
                [
                    u.role.clone(),
                    u.column.clone(),
                    u.level.clone(),
                    u.action.clone(),
                ]
            })
            .collect();
        if rows.is_empty() {
            out.push_str("  (none)\n");
        } else {
            out.push_str(&table(&head, &rows));
        }
        out
    }
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < N {
                s.push_str(&" ".repeat(w[i].saturating_sub(c.chars().count())));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
