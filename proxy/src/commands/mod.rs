//! Subcommands that are not the proxy itself: the DBA's tools.
pub mod keys;
pub mod policy;
