//! The server direction: answers walked against what the client direction queued, one short
//! step per message type. Frames that need no change stream through untouched, in pieces when
//! they are long; the prepared statements and portals that need transforms are booked when the
//! server confirms them.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::expect::{Answers, Expect};
use super::results::Current;
use super::Shared;
use crate::audit::{AuditSink, Entry, SessionAudit};
use crate::context::ServerContext;
use crate::enforce::book::Book;
use crate::enforce::delivery::Delivery;
use crate::enforce::describe::Describer;
use crate::enforce::results::Transformer;
use crate::enforce::rows::{CopyFormat, RowPlan};
use crate::enforce::{notices, write, Enforcement};
use crate::metrics::Command;
use crate::protocol::backend::{command_word, parameter_status};
use crate::protocol::frame::Header;
use crate::protocol::ProtocolError;
use crate::session::closing::End;
use crate::session::halves::{fill as read_more, INITIAL_BUF};

pub struct ServerToClient<'a> {
    pub(super) enf: &'a Enforcement,
    pub(super) ctx: &'a ServerContext,
    pub(super) shared: &'a Shared,
    pub(super) answers: Answers<'a>,
    pub(super) book: Book,
    /// Which statement of a simple Query the answers are at.
    query_index: usize,
    pub(super) result: Current,
    /// The counts of portals an Execute row limit suspended, by portal name.
    pub(super) suspended: HashMap<Bytes, Delivery>,
    describer: Describer,
    pub(super) transformer: Transformer,
    /// A row was transformed while processing the current read.
    transformed: bool,
    /// DDL ran inside the transaction: the catalog is read again when it ends.
    ddl_pending: bool,
    /// The command of the batch's last Parse, for errors in its Bind or Execute.
    batch_command: Command,
    pub(super) database: String,
    pub(super) login: String,
    pub(super) audit: Option<(AuditSink, Arc<SessionAudit>)>,
    /// Records of statements that ended in this read, written before the answers go out.
    pub(super) entries: Vec<Entry>,
}

impl<'a> ServerToClient<'a> {
    pub fn new(
        enf: &'a Enforcement,
        ctx: &'a ServerContext,
        shared: &'a Shared,
        answers: Answers<'a>,
        database: String,
        login: String,
        audit: Option<(AuditSink, Arc<SessionAudit>)>,
    ) -> Self {
        ServerToClient {
            enf,
            ctx,
            shared,
            answers,
            book: Book::default(),
            query_index: 0,
            result: Current::default(),
            suspended: HashMap::new(),
            describer: Describer::default(),
            transformer: Transformer::new(shared.encoding().unwrap_or_default()),
            transformed: false,
            ddl_pending: false,
            batch_command: Command::UNKNOWN,
            database,
            login,
            audit,
            entries: Vec::new(),
        }
    }

    pub async fn run<R, W>(&mut self, mut sr: R, cw: &mut W, mut buf: BytesMut) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut out = BytesMut::with_capacity(INITIAL_BUF);
        // Bytes of a frame passing through untouched that are still to come.
        let mut remaining = 0usize;
        let mut dropping = false;
        loop {
            // Transform time is measured per read, not per row.
            let started = Instant::now();
            loop {
                if remaining > 0 {
                    let n = remaining.min(buf.len());
                    if n == 0 {
                        break;
                    }
                    if !dropping {
                        out.extend_from_slice(&buf[..n]);
                    }
                    buf.advance(n);
                    remaining -= n;
                    continue;
                }
                let header = match Header::parse(&buf, i32::MAX as usize) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return End::ServerError(e),
                };
                self.shared.flags.set_server_said_why(header.tag == b'E');
                // The answers to pgveil's own probe are read here, never streamed, and are
                // no statement's result.
                let probing = self.probing();
                if header.tag == b'D'
                    && !probing
                    && self.result.rows.is_none()
                    && !self.result.resolved
                {
                    self.resolve_portal();
                }
                if !probing && self.result.streams(header.tag, self.shared.scrubs()) {
                    // A row passing untouched is still counted, and may be withheld.
                    if matches!(header.tag, b'D' | b'd')
                        && self.result.delivery.is_some()
                        && !self.result.discard
                    {
                        self.deliver(&mut out);
                    }
                    remaining = header.frame_len;
                    dropping = self.result.discard;
                    continue;
                }
                if buf.len() < header.frame_len {
                    buf.reserve(header.frame_len - buf.len());
                    break;
                }
                // Read in place: splitting the frame off would make the buffer shared and
                // cost a reference count per frame.
                if let Err(e) = self.on_frame(header.tag, &buf[..header.frame_len], &mut out) {
                    return End::ServerError(e);
                }
                buf.advance(header.frame_len);
                if out.len() >= 64 * 1024 {
                    if let Err(e) = self.write(cw, &mut out, remaining == 0).await {
                        return End::ClientError(ProtocolError::Io(e));
                    }
                }
            }
            if self.transformed {
                self.transformed = false;
                self.transformer.spent(started);
            }
            if !self.entries.is_empty() {
                match &self.audit {
                    Some((sink, _)) => sink.write_entries(&mut self.entries).await,
                    None => self.entries.clear(),
                }
            }
            if let Err(e) = self.write(cw, &mut out, remaining == 0).await {
                return End::ClientError(ProtocolError::Io(e));
            }
            // After an error the server skips everything up to Sync and answers none of it, so
            // a client direction waiting for room is given it here: what it queued is dropped
            // as skipped, up to the next Sync.
            let pending = self.answers.pending();
            let read = tokio::select! {
                biased;
                r = read_more(&mut sr, &mut buf) => r,
                _ = pending.blocked(), if self.answers.skipping() => {
                    self.answers.front();
                    continue;
                }
            };
            match read {
                Ok(0) if buf.is_empty() && remaining == 0 => return End::ServerClosed,
                Ok(0) => return End::ServerError(ProtocolError::Truncated),
                Ok(_) => self.shared.flags.activity.touch(),
                Err(e) => return End::ServerError(ProtocolError::Io(e)),
            }
        }
    }

    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cw: &mut W,
        out: &mut BytesMut,
        at_boundary: bool,
    ) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if self.shared.flags.terminated() {
            out.clear();
            return Ok(());
        }
        self.shared.flags.set_client_at_boundary(false);
        cw.write_all(out).await?;
        cw.flush().await?;
        self.ctx.metrics.client_sent_bytes.inc_by(out.len() as u64);
        out.clear();
        self.shared.flags.set_client_at_boundary(at_boundary);
        Ok(())
    }

    /// Add the values transformed so far to the metrics (at the end of the session).
    pub fn flush_tally(&mut self) {
        self.transformer.flush(self.enf);
    }

    fn on_frame(&mut self, tag: u8, frame: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        let body = &frame[5..];
        if matches!(self.answers.front(), Some(Expect::Probe { .. })) {
            if self.probe_answer(tag, body) {
                out.extend_from_slice(frame);
            }
            return Ok(());
        }
        let forward = match tag {
            b'S' => self.parameter_status(body),
            b'T' => self.row_description(body, out),
            b'D' => self.data_row(body, out),
            b'H' => self.copy_out_response(),
            b'd' => self.copy_data(body, out),
            b'c' => {
                self.result.copy = None;
                !self.result.discard
            }
            b'C' => self.command_complete(body),
            b'I' => {
                self.result_done();
                !self.result.discard
            }
            b's' => self.portal_suspended(),
            b'1' => self.parse_complete(),
            b't' => self.parameter_description(body, out),
            b'2' => self.bind_complete(),
            b'3' => self.close_complete(),
            b'n' => self.no_data(),
            b'E' => self.error_response(body, out),
            b'N' => self.notice(body, out),
            b'Z' => self.ready_for_query(body),
            _ => !self.result.discard,
        };
        if forward {
            out.extend_from_slice(frame);
        }
        Ok(())
    }

    /// Each step below returns whether the server's frame goes to the client as it is.
    fn parameter_status(&mut self, body: &[u8]) -> bool {
        if let Some((n, v)) = parameter_status(body) {
            self.shared.apply(&n, &v);
            let enc = self.shared.encoding().unwrap_or_default();
            self.transformer.set_encoding(enc);
        }
        true
    }

    fn row_description(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        let plan = self.result_plan();
        let mut forward = !self.result.discard;
        if forward {
            let state = self.transformer.state(self.enf).clone();
            match self
                .describer
                .answer(self.enf, &self.database, &state, body, plan.clone())
            {
                Ok(Some(rewritten)) => {
                    out.extend_from_slice(&rewritten);
                    forward = false;
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(e, out);
                    forward = false;
                }
            }
        }
        if let Some(p) = plan.as_ref().filter(|p| !p.is_empty()) {
            self.transformer.result_of(p);
        }
        if matches!(self.answers.front(), Some(Expect::Query { .. })) && !self.result.discard {
            if let Some(p) = &plan {
                self.start_delivery(p, false);
            }
            self.result.rows = plan
                .filter(|p| !p.is_empty())
                .map(|p| (p, Arc::<[i16]>::from(Vec::new())));
        }
        forward
    }

    fn data_row(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        if self.result.discard {
            return false;
        }
        let Some((plan, formats)) = self.result.rows.clone() else {
            return true;
        };
        if !self.deliver(out) {
            return false;
        }
        self.transformed = true;
        if let Err(e) = self
            .transformer
            .data_row(self.enf, body, &plan, &formats, out)
        {
            self.fail(e, out);
        }
        false
    }

    fn copy_out_response(&mut self) -> bool {
        let plan = self.result_plan();
        if let Some(p) = plan.as_ref().filter(|_| !self.result.discard) {
            let header = p.copy == Some(CopyFormat::Csv { header: true });
            self.start_delivery(p, header);
        }
        self.result.copy = plan
            .filter(|p| !p.is_empty())
            .and_then(|p| p.copy.map(|f| (p, f, true)));
        if let Some((p, _, _)) = &self.result.copy {
            self.transformer.result_of(p);
        }
        !self.result.discard
    }

    fn copy_data(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        if self.result.discard {
            return false;
        }
        if self.result.copy.is_none() {
            return true;
        }
        if !self.deliver(out) {
            return false;
        }
        let Some((plan, format, first)) = self.result.copy.as_mut() else {
            return true;
        };
        let is_first = std::mem::replace(first, false);
        let (plan, format) = (plan.clone(), *format);
        if let Err(e) = self
            .transformer
            .copy_row(self.enf, body, &plan, format, is_first, out)
        {
            self.fail(e, out);
        }
        false
    }

    fn command_complete(&mut self, body: &[u8]) -> bool {
        let word = command_word(body);
        self.ctx.metrics.query_completed(word);
        self.record_completion(body);
        // After DDL the catalog is read again (at once, and when its transaction ends), unless
        // the database protects nothing and the statements since the last DDL named no table
        // of the policy: then it still protects nothing.
        if crate::sql::is_ddl_word(&String::from_utf8_lossy(word)) && self.shared.take_ddl_matters()
        {
            self.enf.catalog.invalidate_database(&self.database);
            self.ddl_pending = true;
        }
        self.result_done();
        !self.result.discard
    }

    fn portal_suspended(&mut self) -> bool {
        self.suspend_delivery();
        // The Execute ended: a stop's "already recorded" belongs to it, not to the next one.
        self.result.recorded = false;
        self.result.rows = None;
        self.result.resolved = false;
        if matches!(self.answers.front(), Some(Expect::Execute { .. })) {
            self.answers.pop();
        }
        !self.result.discard
    }

    fn parse_complete(&mut self) -> bool {
        if let Some(Expect::Parse {
            name,
            plan,
            command,
            seq,
            ..
        }) = self.answers.pop()
        {
            self.answers.parse_ended(seq, true);
            self.batch_command = command;
            self.book.parsed(&name, plan);
        }
        !self.result.discard
    }

    fn parameter_description(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        let forward = !self.result.discard;
        if let Some(Expect::DescribeStatement {
            params: Some(p), ..
        }) = self.answers.front()
        {
            let p = p.clone();
            if let Some(f) = write::parameter_description(body, &p.plan, &p.declared) {
                if forward {
                    out.extend_from_slice(&f);
                }
                return false;
            }
        }
        forward
    }

    fn bind_complete(&mut self) -> bool {
        if let Some(Expect::Bind {
            portal,
            statement,
            formats,
            plan,
            ..
        }) = self.answers.pop()
        {
            // Binding a portal's name again ends the portal that had it.
            self.portal_ended(&portal, "bound again");
            self.book.bound(&portal, &statement, &formats, plan);
        }
        !self.result.discard
    }

    fn close_complete(&mut self) -> bool {
        if let Some(Expect::Close { kind, name }) = self.answers.pop() {
            if kind == b'P' {
                self.portal_ended(&name, "closed");
            }
            self.book.closed(kind, &name);
        }
        !self.result.discard
    }

    fn no_data(&mut self) -> bool {
        if matches!(
            self.answers.front(),
            Some(Expect::DescribeStatement { .. } | Expect::DescribePortal { .. })
        ) {
            self.answers.pop();
        }
        !self.result.discard
    }

    fn error_response(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        let command = match self.answers.front() {
            Some(Expect::Query { command, .. } | Expect::Parse { command, .. }) => *command,
            _ => self.batch_command,
        };
        self.ctx.metrics.query_failed(command);
        self.result.rows = None;
        let failing = self.failing();
        let mut replacement = None;
        match self.answers.front() {
            Some(Expect::Query { replace, .. } | Expect::FunctionCall { replace }) => {
                replacement = replace.take();
            }
            Some(Expect::Sync { .. }) | None => {}
            Some(_) => {
                if let Some(Expect::Parse { replace, .. } | Expect::Bind { replace, .. }) =
                    self.answers.front()
                {
                    replacement = replace.take();
                }
                if let Some(Expect::Parse { seq, .. }) = self.answers.pop() {
                    self.answers.parse_ended(seq, false);
                }
                self.answers.skip_to_sync();
            }
        }
        if replacement.is_none() {
            self.record_error(failing, body);
        }
        if self.result.discard {
            return false;
        }
        match replacement {
            Some(r) => {
                out.extend_from_slice(&r);
                false
            }
            None => self.scrubbed(b'E', body, out),
        }
    }

    fn notice(&mut self, body: &[u8], out: &mut BytesMut) -> bool {
        !self.result.discard && self.scrubbed(b'N', body, out)
    }

    /// An error or notice from the server, its value-bearing texts withheld when this session
    /// scrubs them; `true`: the frame goes as it is.
    fn scrubbed(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
        if !self.shared.scrubs() {
            return true;
        }
        match notices::scrub(tag, body) {
            Some(f) => {
                out.extend_from_slice(&f);
                false
            }
            None => true,
        }
    }

    fn ready_for_query(&mut self, body: &[u8]) -> bool {
        let status = body.first().copied().unwrap_or(b'I');
        self.shared.query_finished(&self.ctx.metrics);
        while let Some(e) = self.answers.pop() {
            let done = e.ends_cycle();
            if e.settles_barrier() {
                self.shared.barrier_done();
            }
            match e {
                Expect::Parse { seq, .. } => self.answers.parse_ended(seq, false),
                Expect::Query { effects, .. } => {
                    self.book.simple_query();
                    if let Some(sql) = effects {
                        self.book.sql_ran(&sql);
                    }
                }
                _ => {}
            }
            if done {
                break;
            }
        }
        if status == b'I' {
            self.portals_ended("its transaction ended");
            self.shared.transaction_ended();
            self.book.transaction_ended();
            if self.ddl_pending {
                self.enf.catalog.invalidate_database(&self.database);
                self.ddl_pending = false;
            }
        }
        self.answers.cycle_ended();
        self.query_index = 0;
        self.result = Current::default();
        self.transformer.cycle_ended(self.enf);
        true
    }

    /// The row plan the current answer belongs to: the current statement of a simple Query,
    /// the portal being executed, or the statement or portal being described (which the
    /// RowDescription or NoData answering it completes).
    fn result_plan(&mut self) -> Option<Arc<RowPlan>> {
        match self.answers.front()? {
            Expect::DescribeStatement { name, .. } => {
                let name = name.clone();
                self.answers.pop();
                self.book.statement_row(&name)
            }
            Expect::DescribePortal { name } => {
                let name = name.clone();
                self.answers.pop();
                self.book.portal(&name).map(|p| p.row)
            }
            _ => self.current_row_plan(),
        }
    }

    /// The plan of the statement whose answer this is.
    pub(super) fn current_row_plan(&mut self) -> Option<Arc<RowPlan>> {
        let index = self.query_index;
        match self.answers.front()? {
            Expect::Query { plans, .. } => plans.get(index).cloned(),
            Expect::Execute { portal } => {
                let portal = portal.clone();
                self.book.portal(&portal).map(|p| p.row)
            }
            _ => None,
        }
    }

    /// CommandComplete or EmptyQueryResponse: a result ended.
    fn result_done(&mut self) {
        self.result.ended();
        match self.answers.front() {
            Some(Expect::Query { .. }) => self.query_index += 1,
            Some(Expect::Execute { .. }) => {
                self.answers.pop();
            }
            _ => {}
        }
    }
}
