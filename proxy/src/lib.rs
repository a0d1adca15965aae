//! pgveil: the wire-level proxy.
//!
//! Layout (see docs/architecture.md):
//! - [`cli`], [`config`]: command line and settings;
//! - [`server`]: listener, TLS, limits, shutdown;
//! - [`session`]: one task per client (handshake, auth relay, frame relay);
//! - [`protocol`]: framing and the few messages pgveil builds or reads;
//! - [`upstream`]: connections to PostgreSQL;
//! - [`metrics`]: Prometheus metrics and the HTTP endpoint;
//! - [`demo`], [`commands`], [`migrate`]: the demo and the DBA's tools.
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
pub mod protocol;
pub mod server;
pub mod session;
pub mod sql;
pub mod stream;
pub mod tls;
pub mod upstream;
