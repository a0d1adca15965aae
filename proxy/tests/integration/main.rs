//! Integration tests: real PostgreSQL (testkit), real clients (tokio-postgres,
//! psql, raw sockets), pgveil in between.
mod support;

mod auth;
mod bad_input;
mod extended;
mod lifecycle;
mod sample_data;
mod simple;
mod tls;
mod upstream_socket;
