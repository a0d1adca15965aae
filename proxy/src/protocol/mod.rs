//! The PostgreSQL wire protocol, as far as pgveil needs it.
//!
//! pgveil frames messages itself (a 1-byte tag and a 4-byte length) and forwards
//! frames it does not need to change byte-for-byte. The few messages it must build
//! or read (ErrorResponse, Authentication, BackendKeyData) go through pgwire's
//! message codec. See docs/adr/0001-own-framing.md.

pub mod backend;
pub mod encoding;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;

pub use frame::{Frame, ProtocolError};
