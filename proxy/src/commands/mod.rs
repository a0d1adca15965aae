//! Subcommands that are not the proxy itself: the DBA's tools.
pub mod audit;
pub mod explain;
pub mod keys;
pub mod policy;
