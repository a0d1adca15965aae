//! pgveil: the wire-level proxy.
