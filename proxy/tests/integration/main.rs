//! Integration tests: real PostgreSQL (testkit), real clients (tokio-postgres,
//! psql, node-postgres, psycopg, asyncpg, raw sockets), pgveil in between.
mod support;

mod adversarial;
mod anomaly_evasion;
mod audit_crash;
mod audit_syslog;
mod auth;
mod bad_input;
mod copy_reading;
mod deploy;
mod disconnects;
mod encodings;
mod enforce_audit;
mod enforce_matrix;
mod enforce_read;
mod enforce_write;
mod extended;
mod lifecycle;
mod migrate;
mod node_clients;
mod prometheus_live;
mod python_clients;
mod roles;
mod sample_data;
mod simple;
mod tls;
mod transparency;
mod upstream_socket;
