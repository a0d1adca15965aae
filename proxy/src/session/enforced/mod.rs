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
mod queue;
mod results;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;

use crate::audit::SessionAudit;
use crate::context::ServerContext;
use crate::enforce::enforcer::Enforcer;
use crate::enforce::frontend::Frontend;
use crate::enforce::statements::Outcomes;
use crate::enforce::Enforcement;
use crate::session::auth::Established;
use crate::session::closing::{finish, idle_watch, log_end, Activity, End};
use crate::session::halves::{with_halves, Flags, ReadHalf, WriteHalf};
use client::ClientToServer;
use expect::{Answers, MAX_PENDING};
use queue::Queue;
use server::ServerToClient;

/// What both directions of an enforced session share.
struct Shared {
    flags: Flags,
    /// `client_encoding` is UTF8, as the server last reported it.
    utf8: AtomicBool,
    /// `standard_conforming_strings` is on, as the server last reported it.
    scs: AtomicBool,
    /// When each outstanding Query, Sync or FunctionCall was sent (end-to-end latency).
    sent: Mutex<VecDeque<Instant>>,
}

impl Shared {
    /// A setting the server reported (ParameterStatus): those that decide whether pgveil can
    /// read SQL text are kept.
    fn apply(&self, name: &str, value: &str) {
        match name {
            "client_encoding" => self.utf8.store(
                value.eq_ignore_ascii_case("utf8") || value.eq_ignore_ascii_case("utf-8"),
                Ordering::Relaxed,
            ),
            "standard_conforming_strings" => self
                .scs
                .store(value.eq_ignore_ascii_case("on"), Ordering::Relaxed),
            _ => {}
        }
    }

    /// Whether pgveil reads SQL text as the server does in this session.
    fn readable(&self) -> bool {
        self.utf8.load(Ordering::Relaxed) && self.scs.load(Ordering::Relaxed)
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
        utf8: AtomicBool::new(false),
        scs: AtomicBool::new(false),
        sent: Mutex::new(VecDeque::new()),
    };
    for (n, v) in &server_params {
        shared.apply(n, v);
    }
    let mut enforcer = Enforcer::new(enf.clone(), user, database);
    enforcer.audit = ctx.audit.is_some();
    enforcer.warm_up().await;
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
    downstream.flush_tally();
    finish(&mut cw, &end, shared.flags.client_at_boundary()).await;
    end
}
