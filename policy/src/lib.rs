//! pgveil-policy: the pure core of pgveil.
//!
//! No sockets, no async: everything here is deterministic and testable in isolation.
//!
//! - [`load`]: reads a policy file (YAML) into a validated [`model::Policy`], reporting every
//!   problem as `file:line:col: message`.
//! - [`compile`]: turns it into an immutable [`compile::CompiledPolicy`] with the decision API.
//! - [`mask`]: the masking library; [`detect`]: checksum and shape detectors.
//! - [`crypto`]: AES-256-GCM envelopes; [`keyring`]: the keyring file.
//! - [`schema`]: the JSON Schema of the policy file.
pub mod compile;
pub mod crypto;
pub mod detect;
pub mod diag;
pub mod hours;
pub mod keyring;
pub mod kind;
pub mod load;
pub mod mask;
pub mod model;
pub mod schema;

pub use compile::{CompiledPolicy, Decision, DenyReason, RoleSet, Transform, Usage};
pub use diag::{Diagnostic, Diagnostics};
pub use model::{Action, EncryptMode, Kind, Policy};
