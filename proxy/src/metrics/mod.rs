//! Prometheus metrics (prefix `pgveil_`) and the HTTP endpoint that serves them.
//!
//! No label ever carries a user name, an address or query text: the command
//! label is drawn from a fixed list of PostgreSQL command words.
pub mod audit;
pub mod command;
pub mod enforcement;
pub mod http;
pub mod values;

pub use command::{Command, COMMANDS};

pub use http::serve as serve_http;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All of pgveil's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
    pub connections_rejected: IntCounterVec,
    pub session_errors: IntCounterVec,
    pub client_received_bytes: IntCounter,
    pub client_sent_bytes: IntCounter,
    /// Indexed by [`Command::index`].
    queries_ok: Vec<IntCounter>,
    queries_error: Vec<IntCounter>,
    pub query_duration_end_to_end: Histogram,
    pub cancel_requests: IntCounterVec,
    pub enforcement: enforcement::EnforcementMetrics,
    pub audit: audit::AuditMetrics,
}

fn buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ]
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("pgveil".into()), None)?;
        let connections_active =
            IntGauge::new("connections_active", "Client connections currently open.")?;
        let connections_total =
            IntCounter::new("connections_total", "Client connections accepted.")?;
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "connections_rejected_total",
                "Client connections refused, by reason.",
            ),
            &["reason"],
        )?;
        let session_errors = IntCounterVec::new(
            Opts::new(
                "session_errors_total",
                "Sessions that ended with an error, by kind.",
            ),
            &["kind"],
        )?;
        let client_received_bytes = IntCounter::new(
            "client_received_bytes_total",
            "Bytes received from clients.",
        )?;
        let client_sent_bytes =
            IntCounter::new("client_sent_bytes_total", "Bytes sent to clients.")?;
        let queries = IntCounterVec::new(
            Opts::new(
                "queries_total",
                "Statements completed, by command word and outcome.",
            ),
            &["command", "outcome"],
        )?;
        let query_duration = HistogramVec::new(
            HistogramOpts::new(
                "query_duration_seconds",
                "Time from a client's Query or Sync to the server's ReadyForQuery.",
            )
            .buckets(buckets()),
            &["scope"],
        )?;
        let cancel_requests = IntCounterVec::new(
            Opts::new(
                "cancel_requests_total",
                "CancelRequests received, by result.",
            ),
            &["result"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Labelled counters start at 0 for every value they can take, so rate() and increase()
        // see their first event (a series born at 1 shows no rise).
        connections_rejected.with_label_values(&["too_many_clients"]);
        for kind in [
            "startup_timeout",
            "protocol_violation",
            "client_disconnect",
            "upstream_unavailable",
            "upstream_lost",
            "idle_timeout",
            "shutdown",
            "panic",
        ] {
            session_errors.with_label_values(&[kind]);
        }

        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(session_errors.clone()))?;
        registry.register(Box::new(client_received_bytes.clone()))?;
        registry.register(Box::new(client_sent_bytes.clone()))?;
        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(query_duration.clone()))?;
        registry.register(Box::new(cancel_requests.clone()))?;
        registry.register(Box::new(build_info))?;

        let enforcement = enforcement::EnforcementMetrics::new(&registry, &query_duration)?;
        let audit = audit::AuditMetrics::new(&registry)?;
        let per_command = |outcome: &str| -> Vec<IntCounter> {
            (0..Command::COUNT)
                .map(|i| queries.with_label_values(&[Command::label_at(i), outcome]))
                .collect()
        };
        let queries_ok = per_command("ok");
        let queries_error = per_command("error");
        Ok(Metrics {
            registry,
            connections_active,
            connections_total,
            connections_rejected,
            session_errors,
            client_received_bytes,
            client_sent_bytes,
            queries_ok,
            queries_error,
            query_duration_end_to_end: query_duration.with_label_values(&["end_to_end"]),
            cancel_requests,
            enforcement,
            audit,
        })
    }

    /// Count one completed statement from its CommandComplete command word.
    #[inline]
    pub fn query_completed(&self, word: &[u8]) {
        self.queries_ok[Command::from_word(word).index()].inc();
    }

    /// Count one failed statement under the command the client sent.
    #[inline]
    pub fn query_failed(&self, command: Command) {
        self.queries_error[command.index()].inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new().unwrap();
        m.query_completed(b"SELECT");
        m.query_completed(b"WEIRD");
        m.query_failed(Command::from_sql(b"insert into t values (1)"));
        m.connections_total.inc();
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "pgveil_connections_active",
            "pgveil_connections_total",
            "pgveil_client_received_bytes_total",
            "pgveil_client_sent_bytes_total",
            "pgveil_queries_total{command=\"SELECT\",outcome=\"ok\"} 1",
            "pgveil_queries_total{command=\"other\",outcome=\"ok\"} 1",
            "pgveil_queries_total{command=\"INSERT\",outcome=\"error\"} 1",
            "pgveil_query_duration_seconds_bucket",
            "pgveil_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
