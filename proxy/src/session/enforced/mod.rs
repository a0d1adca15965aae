//! The relay of a session under a policy: the same two directions as the pass-through relay,
//! with enforcement in between.
//!
//! - [`client`]: the client direction reads whole messages and hands Query, Parse and Bind to
//!   the enforcement's [`Frontend`], which says what the server gets instead; for every message
//!   that gets an answer it queues what to expect ([`expect`]) before the message leaves, on a
//!   bounded queue ([`queue`]): a full queue stops the client direction, never drops.
//! - [`server`]: the server direction walks the answers against that queue. Frames that need no
//!   change stream through untouched; RowDescription, DataRow and CopyData of results with
//!   transforms are rewritten ([`results`] holds the result being streamed); a refused
//!   statement's error is replaced by pgveil's.
mod client;
mod expect;
mod probe;
mod queue;
mod records;
mod results;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;

use crate::audit::SessionAudit;
use crate::context::ServerContext;
use crate::enforce::enforcer::Enforcer;
use crate::enforce::frontend::Frontend;
use crate::enforce::statements::Outcomes;
use crate::enforce::Enforcement;
use crate::protocol::encoding::{self, ClientEncoding};
use crate::session::auth::Established;
use crate::session::closing::{finish, idle_watch, log_end, Activity, End};
use crate::session::halves::{with_halves, Flags, ReadHalf, WriteHalf};
use client::ClientToServer;
use expect::{Answers, MAX_PENDING};
use queue::Queue;
use server::ServerToClient;

/// [`Shared::encoding`] of a client encoding pgveil cannot read.
const UNREADABLE: u8 = u8::MAX;

/// What both directions of an enforced session share.
struct Shared {
    flags: Flags,
    /// `client_encoding` as the server last reported it: its index in
    /// [`encoding::SUPPORTED`], or [`UNREADABLE`] for one pgveil cannot read.
    encoding: AtomicU8,
    /// `standard_conforming_strings` is on, as the server last reported it.
    scs: AtomicBool,
    /// `server_encoding` is UTF8: the server converts a legacy client encoding to UTF-8
    /// before it lexes (with `SQL_ASCII` it converts nothing, and lexes the client's bytes).
    server_utf8: AtomicBool,
    /// Error and notice texts are scrubbed (the login may not read every protected column
    /// of this database in clear); set by the client direction as the enforcer learns it.
    scrub: AtomicBool,
    /// When each outstanding Query, Sync or FunctionCall was sent (end-to-end latency).
    sent: Mutex<VecDeque<Instant>>,
    /// Barriers (statements that may change how SQL is read) sent, and answered.
    barriers_sent: AtomicU64,
    barriers_done: AtomicU64,
    /// Signalled when a barrier is answered.
    settled: tokio::sync::Notify,
    /// A statement of the open transaction may have changed how SQL is read.
    changed_transaction: AtomicBool,
    /// A statement judged since the last DDL may have changed what pgveil protects.
    ddl_matters: AtomicBool,
    /// The answer to the last probe: the current role, or the SQLSTATE it failed with.
    probed: Mutex<Option<Result<String, String>>>,
    /// The server reported a change of session authorization (ParameterStatus).
    role_reported: AtomicBool,
}

impl Shared {
    /// A setting the server reported (ParameterStatus): those that decide whether pgveil can
    /// read SQL text are kept.
    fn apply(&self, name: &str, value: &str) {
        match name {
            "client_encoding" => {
                let at = ClientEncoding::from_name(value)
                    .and_then(|e| encoding::SUPPORTED.iter().position(|s| *s == e))
                    .map_or(UNREADABLE, |i| i as u8);
                self.encoding.store(at, Ordering::Relaxed)
            }
            "server_encoding" => self.server_utf8.store(
                ClientEncoding::from_name(value) == Some(ClientEncoding::Utf8),
                Ordering::Relaxed,
            ),
            "standard_conforming_strings" => self
                .scs
                .store(value.eq_ignore_ascii_case("on"), Ordering::Relaxed),
            // Reported when the session authorization changes, however it was changed (code
            // in a function included); it resets the current role too.
            "session_authorization" | "is_superuser" => {
                self.role_reported.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
    }

    /// Whether pgveil reads SQL text as the server does in this session.
    fn readable(&self) -> bool {
        self.encoding().is_some() && self.scs.load(Ordering::Relaxed)
    }

    /// The session's client encoding, when pgveil can read it (a legacy one only over a UTF8
    /// database).
    fn encoding(&self) -> Option<ClientEncoding> {
        encoding::SUPPORTED
            .get(usize::from(self.encoding.load(Ordering::Relaxed)))
            .copied()
            .filter(|e| e.is_utf8() || self.server_utf8.load(Ordering::Relaxed))
    }

    /// A barrier was sent; returns its number (barriers are answered in order).
    fn barrier_sent(&self) -> u64 {
        self.changed_transaction.store(true, Ordering::Relaxed);
        self.barriers_sent.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A probe of the current role was sent: answered in order with the barriers, but it
    /// changes nothing a rollback could undo.
    fn probe_sent(&self) -> u64 {
        self.barriers_sent.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The probe's answer arrived (before its ReadyForQuery settles it).
    fn probe_answered(&self, answer: Result<String, String>) {
        if let Ok(mut p) = self.probed.lock() {
            *p = Some(answer);
        }
    }

    /// Whether the server reported a change of session authorization since last asked.
    fn take_role_reported(&self) -> bool {
        self.role_reported.swap(false, Ordering::Relaxed)
    }

    /// The last probe's answer, taken.
    fn take_probed(&self) -> Option<Result<String, String>> {
        self.probed.lock().ok().and_then(|mut p| p.take())
    }

    /// The ReadyForQuery of a barrier's cycle arrived (its ParameterStatus came before it).
    fn barrier_done(&self) {
        self.barriers_done.fetch_add(1, Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    fn barriers_done(&self) -> u64 {
        self.barriers_done.load(Ordering::Acquire)
    }

    /// ReadyForQuery outside a transaction: no rollback can undo a setting any more, unless a
    /// barrier is still on its way.
    fn transaction_ended(&self) {
        if self.barriers_done() >= self.barriers_sent.load(Ordering::Acquire) {
            self.changed_transaction.store(false, Ordering::Relaxed);
        }
    }

    fn changed_transaction(&self) -> bool {
        self.changed_transaction.load(Ordering::Relaxed)
    }

    /// A statement was judged: after DDL, is the catalog to be read again?
    fn note_ddl_matters(&self, matters: bool) {
        if matters {
            self.ddl_matters.store(true, Ordering::Relaxed);
        }
    }

    /// Whether DDL since the last call may have changed what pgveil protects.
    fn take_ddl_matters(&self) -> bool {
        self.ddl_matters.swap(false, Ordering::Relaxed)
    }

    fn set_scrub(&self, scrub: bool) {
        self.scrub.store(scrub, Ordering::Relaxed);
    }

    fn scrubs(&self) -> bool {
        self.scrub.load(Ordering::Relaxed)
    }

    fn query_started(&self) {
        if let Ok(mut q) = self.sent.lock() {
            if q.len() < MAX_PENDING {
                q.push_back(Instant::now());
            }
        }
    }

    fn query_finished(&self, metrics: &crate::metrics::Metrics) {
        if let Some(t) = self.sent.lock().ok().and_then(|mut q| q.pop_front()) {
            metrics
                .query_duration_end_to_end
                .observe(t.elapsed().as_secs_f64());
        }
    }
}

pub async fn run(ctx: &ServerContext, est: Established, peer: SocketAddr, enf: Arc<Enforcement>) {
    let Established {
        client,
        server,
        client_buf,
        server_buf,
        user,
        database,
        server_params,
        application_name,
        ..
    } = est;
    let shared = Shared {
        flags: Flags::new(Activity::new(ctx.config.idle_timeout)),
        encoding: AtomicU8::new(UNREADABLE),
        scs: AtomicBool::new(false),
        server_utf8: AtomicBool::new(false),
        scrub: AtomicBool::new(true),
        sent: Mutex::new(VecDeque::new()),
        barriers_sent: AtomicU64::new(0),
        barriers_done: AtomicU64::new(0),
        settled: tokio::sync::Notify::new(),
        changed_transaction: AtomicBool::new(false),
        // Every Query and Parse is judged (and notes whether DDL in it matters) before it
        // leaves, so nothing has mattered yet.
        ddl_matters: AtomicBool::new(false),
        probed: Mutex::new(None),
        role_reported: AtomicBool::new(false),
    };
    for (n, v) in &server_params {
        shared.apply(n, v);
    }
    let mut enforcer = Enforcer::new(enf.clone(), user, database);
    enforcer.audit = ctx.audit.is_some();
    enforcer.warm_up().await;
    shared.scrub.store(enforcer.scrubs(), Ordering::Relaxed);
    let audit = ctx.audit.as_ref().map(|_| {
        Arc::new(SessionAudit::new(
            enforcer.login.clone(),
            peer.to_string(),
            application_name,
        ))
    });
    let end = with_halves!(client, server, |c, s| {
        serve(
            ctx,
            &enf,
            &shared,
            enforcer,
            (c, s),
            (client_buf, server_buf),
            audit,
        )
        .await
    });
    log_end(ctx, peer, &end, shared.flags.server_said_why());
}

/// Run both directions over split halves until the session ends; then tell the client why.
async fn serve<CR: ReadHalf, CW: WriteHalf, SR: ReadHalf, SW: WriteHalf>(
    ctx: &ServerContext,
    enf: &Arc<Enforcement>,
    shared: &Shared,
    enforcer: Enforcer,
    ((cr, mut cw), (sr, sw)): ((CR, CW), (SR, SW)),
    (client_buf, server_buf): (BytesMut, BytesMut),
    audit: Option<Arc<SessionAudit>>,
) -> End {
    let database = enforcer.database.clone();
    let login = enforcer.login.clone();
    let pending = Queue::new(MAX_PENDING);
    let outcomes = Arc::new(Outcomes::default());
    let frontend = Frontend::new(enforcer, outcomes.clone(), audit.clone());
    let mut upstream = ClientToServer::new(frontend, shared, &pending, sw, ctx.audit.clone());
    let sink = ctx.audit.clone().zip(audit);
    let answers = Answers::new(&pending, outcomes);
    let mut downstream = ServerToClient::new(enf, ctx, shared, answers, database, login, sink);
    let end = tokio::select! {
        e = upstream.run(cr, client_buf) => e,
        e = downstream.run(sr, &mut cw, server_buf) => e,
        e = idle_watch(&shared.flags.activity, ctx.config.idle_timeout) => e,
        _ = ctx.force_close.cancelled() => End::Shutdown,
    };
    let end = end.after_terminate(shared.flags.terminated());
    downstream.finish().await;
    downstream.flush_tally();
    finish(&mut cw, &end, shared.flags.client_at_boundary()).await;
    end
}
