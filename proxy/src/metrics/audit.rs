//! Metrics of the audit trail: `audit_records_total`, `audit_queue_depth`, and the syslog
//! forwarder's `audit_forwarded_total`, `audit_forward_dropped_total` and
//! `audit_forward_truncated_total`.
use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct AuditMetrics {
    /// `pgveil_audit_records_total`: records written to the audit log (every kind).
    pub records: IntCounter,
    /// `pgveil_audit_queue_depth`: records queued for the writer.
    pub queue_depth: IntGauge,
    /// `pgveil_audit_forwarded_total`: records sent to the syslog receiver (`audit.syslog`).
    pub forwarded: IntCounter,
    /// `pgveil_audit_forward_dropped_total`: records written to the file but not forwarded
    /// (the forwarder's queue full while the receiver was slow or down, or a UDP send that failed).
    pub forward_dropped: IntCounter,
    /// `pgveil_audit_forward_truncated_total`: records sent over UDP in a shortened form (their
    /// message was larger than `audit.syslog.max_datagram`; the file has them whole).
    pub forward_truncated: IntCounter,
}

impl AuditMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let records = IntCounter::new("audit_records_total", "Audit records written.")?;
        let queue_depth = IntGauge::new(
            "audit_queue_depth",
            "Audit records waiting for the writer (its queue is bounded; sessions wait when full).",
        )?;
        let forwarded = IntCounter::new(
            "audit_forwarded_total",
            "Audit records sent to the syslog receiver.",
        )?;
        let forward_dropped = IntCounter::new(
            "audit_forward_dropped_total",
            "Audit records written to the file but not forwarded to syslog (forwarder behind, or a send failed).",
        )?;
        let forward_truncated = IntCounter::new(
            "audit_forward_truncated_total",
            "Audit records sent to syslog over UDP shortened to the datagram limit, with a marker (the file has them whole).",
        )?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(forwarded.clone()))?;
        registry.register(Box::new(forward_dropped.clone()))?;
        registry.register(Box::new(forward_truncated.clone()))?;
        Ok(AuditMetrics {
            records,
            queue_depth,
            forwarded,
            forward_dropped,
            forward_truncated,
        })
    }
}
