//! Holder crate for pgveil criterion benches; see benches/*.rs and pgbench.sh.
