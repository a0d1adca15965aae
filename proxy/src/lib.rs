//! pgveil: the wire-level proxy. See docs/architecture.md for the map and the layering
//! (`proxy/tests/structure.rs` checks that imports run down it).
//!
//! - [`cli`], [`config`], [`logging`], [`app`]: command line, settings, logs, the running proxy;
//! - [`server`], [`context`]: listener, TLS, limits, shutdown; what every session shares;
//! - [`session`]: one task per client (handshake, auth relay, the pass-through relay and the
//!   enforced relay);
//! - [`enforce`]: policy enforcement on the wire (judging statements, encrypting values,
//!   transforming results, anomaly limits);
//! - [`sql`]: the fast-path scan, the analysis of SQL text and every refusal rule;
//! - [`catalog`]: what pgveil reads of each database's catalog, cached;
//! - [`audit`]: the tamper-evident audit trail and its syslog copy;
//! - [`protocol`], [`stream`], [`tls`], [`upstream`], [`cancel`]: the wire, streams, TLS, the
//!   upstream server, cancel keys;
//! - [`metrics`]: Prometheus metrics and the HTTP endpoint;
//! - [`demo`], [`commands`], [`migrate`]: the demo and the DBA's tools; [`output`]: what they
//!   print on standard output (quietly dropped once the reader has gone).
pub mod app;
pub mod audit;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod demo;
pub mod enforce;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod output;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sql;
pub mod stream;
pub mod tls;
pub mod upstream;
