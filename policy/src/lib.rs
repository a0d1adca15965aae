//! pgveil-policy: the pure core of pgveil.
//!
//! No sockets, no async: everything here is deterministic and testable in isolation.
