//! Metrics of policy enforcement. Labels are drawn from fixed lists (actions) and from the
//! policy's own level names, never from users, addresses or SQL.
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct EnforcementMetrics {
    /// `policy_decisions_total{action,level}`: output columns decided, per statement.
    pub decisions: IntCounterVec,
    /// `sensitive_values_total{level,action}`: values transformed on the way out.
    pub sensitive_values: IntCounterVec,
    /// `denied_queries_total{level}` (`level="none"` when no column caused it).
    pub denied: IntCounterVec,
    pub parse_failures: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// `crypto_operations_total{op}`: decrypt, decrypt_failed.
    pub crypto: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub policy_reloads: IntCounterVec,
    /// `query_duration_seconds{scope="added"}`: analysis and transforms per message.
    pub added: Histogram,
    /// `anomaly_alerts_total{rule}`: anomaly limits crossed, by the policy's rule name.
    pub anomaly_alerts: IntCounterVec,
    /// `sensitive_values_by_role_total{role,action}`: values sent, by the login's policy roles
    /// (names from the policy file, never a login name; `none` for a login without one).
    pub sensitive_by_role: IntCounterVec,
    /// `policy_columns_missing{database}`: policy columns whose table no longer has them
    /// (statements on those tables are refused).
    pub columns_missing: IntGaugeVec,
    /// `catalog_reads_total{database}`: catalog reads (start-up, DDL, unknown roles, refresh).
    pub catalog_reads: IntCounterVec,
    /// `catalog_connections_total{database}`: connections opened to read a catalog (one per
    /// database, kept; again only after a failure).
    pub catalog_connections: IntCounterVec,
}

impl EnforcementMetrics {
    pub fn new(registry: &Registry, durations: &HistogramVec) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "policy_decisions_total",
                "Protected output columns decided, by action and level.",
            ),
            &["action", "level"],
        )?;
        let sensitive_values = IntCounterVec::new(
            Opts::new(
                "sensitive_values_total",
                "Protected values sent to clients, by level and action.",
            ),
            &["level", "action"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new(
                "denied_queries_total",
                "Statements refused by the policy or because pgveil could not analyse them, by level.",
            ),
            &["level"],
        )?;
        let parse_failures = IntCounter::new(
            "parse_failures_total",
            "Statements naming protected data that pgveil could not analyse (refused).",
        )?;
        let cache_hits = IntCounter::new("parse_cache_hits_total", "Parse cache hits.")?;
        let cache_misses = IntCounter::new("parse_cache_misses_total", "Parse cache misses.")?;
        let crypto = IntCounterVec::new(
            Opts::new(
                "crypto_operations_total",
                "Envelope operations, by operation.",
            ),
            &["op"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new("policy_info", "The policy in force; always 1."),
            &["version"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "policy_reloads_total",
                "Policy and keyring reloads, by result.",
            ),
            &["result"],
        )?;
        let added = durations.with_label_values(&["added"]);
        let anomaly_alerts = IntCounterVec::new(
            Opts::new(
                "anomaly_alerts_total",
                "Anomaly limits crossed, by the policy's anomaly rule name.",
            ),
            &["rule"],
        )?;
        // Series that alert rules take increase() of start at 0, not at their first event.
        for op in ["encrypt", "decrypt", "decrypt_failed"] {
            crypto.with_label_values(&[op]);
        }
        for r in ["ok", "error"] {
            policy_reloads.with_label_values(&[r]);
        }
        let sensitive_by_role = IntCounterVec::new(
            Opts::new(
                "sensitive_values_by_role_total",
                "Protected values sent to clients, by policy role and action (a login with several policy roles counts under each).",
            ),
            &["role", "action"],
        )?;
        for c in [
            &sensitive_by_role,
            &anomaly_alerts,
            &decisions,
            &sensitive_values,
            &denied,
            &crypto,
            &policy_reloads,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(parse_failures.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(policy_info.clone()))?;
        let columns_missing = IntGaugeVec::new(
            Opts::new(
                "policy_columns_missing",
                "Policy columns the database's tables no longer have (renamed or dropped); statements on those tables are refused.",
            ),
            &["database"],
        )?;
        registry.register(Box::new(columns_missing.clone()))?;
        let catalog_reads = IntCounterVec::new(
            Opts::new(
                "catalog_reads_total",
                "Catalog reads (one round trip each), by database.",
            ),
            &["database"],
        )?;
        let catalog_connections = IntCounterVec::new(
            Opts::new(
                "catalog_connections_total",
                "Connections opened to read a database's catalog (kept between reads), by database.",
            ),
            &["database"],
        )?;
        registry.register(Box::new(catalog_reads.clone()))?;
        registry.register(Box::new(catalog_connections.clone()))?;
        Ok(EnforcementMetrics {
            decisions,
            sensitive_values,
            denied,
            parse_failures,
            cache_hits,
            cache_misses,
            crypto,
            policy_info,
            policy_reloads,
            added,
            anomaly_alerts,
            sensitive_by_role,
            columns_missing,
            catalog_reads,
            catalog_connections,
        })
    }
}
