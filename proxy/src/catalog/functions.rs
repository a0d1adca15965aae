//! Functions that reach data the analysis cannot see: they run SQL given as text, read a
//! relation named by an argument, or return stored values (logical decoding, extended
//! statistics, server files). Derived from classifying every `pg_catalog` and
//! `information_schema` function of PostgreSQL 15 that takes a text, name, regclass, oid,
//! refcursor, cstring or `any` argument (`proxy/tests/data/pg15_functions.tsv`; the test
//! `every_function_of_the_server_is_classified` in `proxy/tests/integration/adversarial.rs` fails
//! when a server adds one that is not classified), plus the extension functions known to do the same.
//!
//! A call of any of these, by any schema, is refused for a login that may not read every
//! protected column in clear, and their names are trigger words of the fast-path scan, so a
//! text that calls them is always analysed (a table name built by concatenation inside the SQL
//! text they run is invisible to the scan).

/// How a function reaches data outside the SQL pgveil analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Runs an argument as SQL.
    RunsSql,
    /// Reads the rows of a relation (or every relation of a schema or database, or an open
    /// cursor) named by an argument.
    ReadsRelation,
    /// Returns stored values of user tables: decoded WAL, extended statistics.
    StoredValues,
    /// Reads server files, the tables' own data files among them.
    ServerFiles,
}

impl Reach {
    pub fn describe(self) -> &'static str {
        match self {
            Reach::RunsSql => "it runs SQL text that pgveil cannot analyse",
            Reach::ReadsRelation => {
                "it reads a relation named by its argument, which pgveil cannot transform"
            }
            Reach::StoredValues => {
                "it returns stored values (decoded WAL or statistics) that pgveil cannot transform"
            }
            Reach::ServerFiles => "it reads server files, the tables' own data files among them",
        }
    }
}

/// Every function by unqualified, lower-case name.
pub const FUNCTIONS: &[(&str, Reach)] = &[
    // pg_catalog: SQL as text
    ("query_to_xml", Reach::RunsSql),
    ("query_to_xml_and_xmlschema", Reach::RunsSql),
    ("query_to_xmlschema", Reach::RunsSql),
    ("ts_rewrite", Reach::RunsSql),
    ("ts_stat", Reach::RunsSql),
    // pg_catalog: relations named by argument
    ("table_to_xml", Reach::ReadsRelation),
    ("table_to_xml_and_xmlschema", Reach::ReadsRelation),
    ("schema_to_xml", Reach::ReadsRelation),
    ("schema_to_xml_and_xmlschema", Reach::ReadsRelation),
    ("database_to_xml", Reach::ReadsRelation),
    ("database_to_xml_and_xmlschema", Reach::ReadsRelation),
    ("cursor_to_xml", Reach::ReadsRelation),
    // pg_catalog: stored values
    ("pg_logical_slot_get_changes", Reach::StoredValues),
    ("pg_logical_slot_peek_changes", Reach::StoredValues),
    ("pg_logical_slot_get_binary_changes", Reach::StoredValues),
    ("pg_logical_slot_peek_binary_changes", Reach::StoredValues),
    ("pg_mcv_list_items", Reach::StoredValues),
    ("pg_mcv_list_out", Reach::StoredValues),
    ("pg_mcv_list_send", Reach::StoredValues),
    // pg_catalog: server files
    ("pg_read_file", Reach::ServerFiles),
    ("pg_read_file_old", Reach::ServerFiles),
    ("pg_read_binary_file", Reach::ServerFiles),
    ("lo_import", Reach::ServerFiles),
    ("lo_export", Reach::ServerFiles),
    // extensions: dblink, tablefunc, xml2, pageinspect, pg_background
    ("dblink", Reach::RunsSql),
    ("dblink_exec", Reach::RunsSql),
    ("dblink_open", Reach::RunsSql),
    ("dblink_fetch", Reach::RunsSql),
    ("dblink_send_query", Reach::RunsSql),
    ("dblink_get_result", Reach::RunsSql),
    ("crosstab", Reach::RunsSql),
    ("crosstab2", Reach::RunsSql),
    ("crosstab3", Reach::RunsSql),
    ("crosstab4", Reach::RunsSql),
    ("xpath_table", Reach::RunsSql),
    ("pg_background_launch", Reach::RunsSql),
    ("connectby", Reach::ReadsRelation),
    ("get_raw_page", Reach::ReadsRelation),
    ("bt_page_items", Reach::ReadsRelation),
];

/// Statistics relations whose rows hold stored values of every analysed column.
pub const STATISTICS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
];

/// How function `name` (unqualified, lower case) reaches data outside the analysis, if it does.
pub fn reach(name: &str) -> Option<Reach> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Whether `name` (unqualified, lower case) is a statistics relation.
pub fn is_statistics(name: &str) -> bool {
    STATISTICS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_unique() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
        assert!(names.iter().all(|n| n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())));
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(reach("ts_rewrite"), Some(Reach::RunsSql));
        assert_eq!(reach("lower"), None);
        assert!(is_statistics("pg_stats") && !is_statistics("pg_class"));
    }
}
