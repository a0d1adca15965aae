//! Metrics of the audit trail: `audit_records_total` and `audit_queue_depth`.
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct AuditMetrics {
    /// `pgveil_audit_records_total`: records written to the audit log (every kind).
    pub records: IntCounter,
    /// `pgveil_audit_queue_depth`: records queued for the writer.
    pub queue_depth: IntGauge,
}

impl AuditMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let records = IntCounter::new("audit_records_total", "Audit records written.")?;
        let queue_depth = IntGauge::new(
            "audit_queue_depth",
            "Audit records waiting for the writer (its queue is bounded; sessions wait when full).",
        )?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        Ok(AuditMetrics {
            records,
            queue_depth,
        })
    }
}
