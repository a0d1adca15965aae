//! The result the server direction is streaming: which rows it transforms, and whether the
//! rest of the cycle is dropped after a failed transform.
use std::sync::Arc;

use crate::enforce::delivery::Delivery;
use crate::enforce::rows::{CopyFormat, RowPlan};

#[derive(Default)]
pub struct Current {
    /// The transforms of the DataRows being streamed, and the result formats.
    pub rows: Option<(Arc<RowPlan>, Arc<[i16]>)>,
    /// The transforms of a COPY TO STDOUT being streamed, and whether its first row is next.
    pub copy: Option<(Arc<RowPlan>, CopyFormat, bool)>,
    /// A value could not be transformed: drop everything up to ReadyForQuery.
    pub discard: bool,
    /// The current Execute's portal has been looked up.
    pub resolved: bool,
    /// The rows of the current result counted as they leave (audited, or under a limit).
    pub delivery: Option<Delivery>,
    /// The current statement's record was written when pgveil stopped it.
    pub recorded: bool,
}

impl Current {
    /// Whether a frame with `tag` passes through untouched (or is dropped, when discarding)
    /// without being read whole.
    /// `scrub`: notices are read whole, to withhold what can quote values.
    pub fn streams(&self, tag: u8, scrub: bool) -> bool {
        match tag {
            b'd' => self.copy.is_none() || self.discard,
            b'V' | b'A' => true,
            b'N' => !scrub || self.discard,
            b'D' => self.rows.is_none() || self.discard,
            _ => false,
        }
    }

    /// A result ended (CommandComplete, EmptyQueryResponse, PortalSuspended).
    pub fn ended(&mut self) {
        self.rows = None;
        self.copy = None;
        self.resolved = false;
        self.delivery = None;
        self.recorded = false;
    }
}
