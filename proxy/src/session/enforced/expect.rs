//! What the server's next answers belong to. The client direction queues an [`Expect`] for
//! every message that gets an answer, before the message leaves; the server direction walks
//! the answers against them ([`Answers`]), skipping to the next Sync after an error in an
//! extended-protocol message, as the server does.
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::queue::Queue;
use crate::enforce::plan::Prepared;
use crate::enforce::rows::RowPlan;
use crate::enforce::statements::{Outcomes, StatementParams};
use crate::metrics::Command;

/// Messages whose answers are still to come that the client direction may queue ahead of the
/// server direction (which holds at most as many again while it walks them).
pub const MAX_PENDING: usize = 1024;

pub enum Expect {
    Query {
        command: Command,
        plans: Vec<Arc<RowPlan>>,
        /// pgveil's ErrorResponse in place of the server's answer.
        replace: Option<BytesMut>,
        /// The SQL text, when it may DEALLOCATE or DISCARD.
        effects: Option<Bytes>,
        /// It may change how SQL is read: its ReadyForQuery settles that.
        barrier: bool,
    },
    FunctionCall {
        replace: Option<BytesMut>,
    },
    Parse {
        command: Command,
        name: Bytes,
        plan: Option<Arc<Prepared>>,
        replace: Option<BytesMut>,
        /// Reported back to the client direction's statement book when the Parse ends.
        seq: u64,
    },
    Bind {
        portal: Bytes,
        statement: Bytes,
        formats: Bytes,
        replace: Option<BytesMut>,
        /// The statement judged again at Bind (the current role changed): the portal's plan.
        plan: Option<Option<Arc<Prepared>>>,
    },
    DescribeStatement {
        name: Bytes,
        /// Encrypted parameters: the ParameterDescription names their plaintext types.
        params: Option<Arc<StatementParams>>,
    },
    DescribePortal {
        name: Bytes,
    },
    Execute {
        portal: Bytes,
    },
    Close {
        kind: u8,
        name: Bytes,
    },
    Sync {
        /// A statement of this batch may change how SQL is read: its ReadyForQuery settles
        /// that.
        barrier: bool,
    },
    /// pgveil's own query asking the server who the current role is ([`PROBE_SQL`]); its
    /// answers never reach the client.
    Probe {
        /// The answer's value so far.
        role: Option<String>,
        /// The SQLSTATE, when it failed.
        error: Option<String>,
    },
}

/// What pgveil asks the server after a statement that may have changed the current role.
pub const PROBE_SQL: &str = "SELECT current_user";

impl Expect {
    /// Whether ReadyForQuery follows this message's answers.
    pub fn ends_cycle(&self) -> bool {
        matches!(
            self,
            Expect::Sync { .. }
                | Expect::Query { .. }
                | Expect::FunctionCall { .. }
                | Expect::Probe { .. }
        )
    }

    /// Whether the ReadyForQuery that ends this cycle settles a barrier.
    pub fn settles_barrier(&self) -> bool {
        matches!(
            self,
            Expect::Sync { barrier: true }
                | Expect::Query { barrier: true, .. }
                | Expect::Probe { .. }
        )
    }
}

/// The server direction's view of the expectations.
pub struct Answers<'a> {
    pending: &'a Queue<Expect>,
    queue: VecDeque<Expect>,
    /// After an error in an extended-protocol message: answers skip to the next Sync.
    skipping: bool,
    /// How Parses ended, for the client direction's statement book.
    outcomes: Arc<Outcomes>,
}

impl<'a> Answers<'a> {
    pub fn new(pending: &'a Queue<Expect>, outcomes: Arc<Outcomes>) -> Self {
        Answers {
            pending,
            queue: VecDeque::new(),
            skipping: false,
            outcomes,
        }
    }

    /// The expectation the next answer belongs to.
    pub fn front(&mut self) -> Option<&mut Expect> {
        loop {
            if self.skipping {
                while self
                    .queue
                    .front()
                    .is_some_and(|e| !matches!(e, Expect::Sync { .. }))
                {
                    if let Some(Expect::Parse { seq, .. }) = self.queue.pop_front() {
                        // Skipped after an earlier error: the server never saw it.
                        self.outcomes.report(seq, false);
                    }
                }
                if !self.queue.is_empty() {
                    self.skipping = false;
                }
            }
            if !self.queue.is_empty() {
                return self.queue.front_mut();
            }
            if self.pending.take_all(&mut self.queue) == 0 {
                return None;
            }
        }
    }

    pub fn pop(&mut self) -> Option<Expect> {
        self.front()?;
        self.queue.pop_front()
    }

    /// An extended-protocol message failed: the server skips everything up to the next Sync.
    pub fn skip_to_sync(&mut self) {
        self.skipping = true;
    }

    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// ReadyForQuery: whatever was skipped is behind.
    pub fn cycle_ended(&mut self) {
        self.skipping = false;
    }

    /// A Parse ended (`ok`: the server created the statement).
    pub fn parse_ended(&self, seq: u64, ok: bool) {
        self.outcomes.report(seq, ok);
    }

    /// The queue both directions share.
    pub fn pending(&self) -> &'a Queue<Expect> {
        self.pending
    }
}
