//! COPY: the columns a COPY reads or writes, and the formats pgveil can transform.
use super::*;

impl Analyzer<'_, '_> {
    /// A COPY statement: its kind, its result columns (COPY TO), and the format of the rows
    /// pgveil transforms.
    pub(super) fn copy_statement(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy_options: &[CopyLegacyOption],
    ) -> Result<(Kind, Vec<Src>, Option<CopyOut>), Refusal> {
        let outs = self.copy_source(source, to)?;
        let protected = outs.iter().any(|o| matches!(o, Src::Col(_)));
        let encrypted: Vec<Option<ColumnId>> = outs
            .iter()
            .map(|o| match o {
                Src::Col(c) if self.encrypted(*c) => Some(*c),
                _ => None,
            })
            .collect();
        if !protected && self.touched.is_empty() {
            Ok((Kind::NoRows, Vec::new(), None))
        } else if to {
            if !matches!(target, CopyTarget::Stdout) {
                return Err(Refusal::unsupported(
                    "pgveil refuses COPY of protected data to a server file or program: \
                     the server would write it where pgveil cannot transform it"
                        .into(),
                    Some("use COPY ... TO STDOUT through pgveil"),
                ));
            }
            let format = copy_format(options, legacy_options)?;
            Ok((Kind::Rows, outs, Some(format)))
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
            Ok((Kind::NoRows, Vec::new(), None))
        }
    }

    /// The columns a COPY reads (TO) or writes (FROM).
    pub(super) fn copy_source(
        &mut self,
        source: &CopySource,
        to: bool,
    ) -> Result<Vec<Src>, Refusal> {
        match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let parts = name_parts(table_name);
                if !to {
                    self.writes_unknown_policy_table(&parts)?;
                }
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
}

/// The format of a COPY TO STDOUT that pgveil can transform, or why not.
pub(super) fn copy_format(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopyOut, Refusal> {
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
