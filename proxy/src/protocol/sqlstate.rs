//! The SQLSTATE codes pgveil itself reports.

/// Protocol violation: garbage, bad lengths, unknown message types.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// The upstream server cannot be reached.
pub const CONNECTION_FAILURE: &str = "08006";
/// Could not establish the upstream connection.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH: &str = "08001";
/// Too many client connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// Unsupported protocol version or feature.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// Session closed because it was idle too long.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// Session terminated by the administrator (shutdown).
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// Internal error inside pgveil.
pub const INTERNAL_ERROR: &str = "XX000";
/// The policy refuses the statement (the column or rule is named in the message).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// pgveil cannot enforce the policy on this session's settings or this construct.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// A value does not parse as its type.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// A statement too complex to analyse (PostgreSQL's `statement_too_complex`).
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
/// A statement sent in a transaction that has already failed.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
