//! One task per client: handshake, authentication relay, then the message relay.
//!
//! ```text
//!   handshake   SSLRequest/GSSENCRequest/CancelRequest/StartupMessage (client side)
//!   auth        StartupMessage relayed upstream, Authentication* relayed both ways
//!   relay       frames flow both ways until either side closes
//! ```
pub mod auth;
pub mod closing;
pub mod commands;
pub mod enforced;
pub mod halves;
pub mod handshake;
pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::context::ServerContext;
use crate::protocol::sqlstate;
use crate::stream::ClientStream;
use closing::send_fatal;
use handshake::Handshake;

/// Run one client session to completion. Errors are logged and counted here;
/// nothing escapes to the listener.
pub async fn run(
    ctx: Arc<ServerContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let startup_timeout = ctx.config.startup_timeout;
    let established = tokio::time::timeout(
        startup_timeout,
        establish(&ctx, tcp, peer, permit.is_some()),
    )
    .await;
    let established = match established {
        Err(_) => {
            ctx.metrics
                .session_errors
                .with_label_values(&["startup_timeout"])
                .inc();
            tracing::info!(%peer, timeout = ?startup_timeout, "client did not finish startup in time; dropped");
            return;
        }
        Ok(None) => return,
        Ok(Some(e)) => e,
    };
    let key = established.cancel_key.clone();
    if let Some(k) = &key {
        ctx.cancels.register(k.clone());
    }
    tracing::debug!(%peer, user = %established.user, database = %established.database, "session established");
    match &ctx.enforcement {
        Some(enf) => enforced::run(&ctx, established, peer, enf.clone()).await,
        None => relay::run(&ctx, established, peer).await,
    }
    if let Some(k) = &key {
        ctx.cancels.unregister(k);
    }
    drop(permit);
}

/// Handshake and authentication; `None` when the session ends before the relay.
async fn establish(
    ctx: &ServerContext,
    tcp: TcpStream,
    peer: SocketAddr,
    has_slot: bool,
) -> Option<auth::Established> {
    let (mut client, startup) = match handshake::run(ctx, tcp).await {
        Ok(Handshake::Startup { client, startup }) => (client, startup),
        Ok(Handshake::Cancelled) | Ok(Handshake::Closed) => return None,
        Ok(Handshake::Terminated { client }) => {
            tracing::debug!(%peer, "client sent Terminate before its startup packet");
            close_quietly(client).await;
            return None;
        }
        Err(e) => {
            handshake_failed(ctx, peer, e).await;
            return None;
        }
    };
    if !has_slot {
        ctx.metrics
            .connections_rejected
            .with_label_values(&["too_many_clients"])
            .inc();
        tracing::warn!(%peer, limit = ctx.config.max_client_connections, "connection limit reached; client refused");
        let msg = "sorry, too many clients already (pgveil max_client_connections reached)";
        send_fatal(&mut client, sqlstate::TOO_MANY_CONNECTIONS, msg).await;
        return None;
    }
    match auth::run(ctx, client, startup).await {
        Ok(established) => Some(established),
        Err(e) => {
            tracing::info!(%peer, error = %e, "session ended during authentication");
            None
        }
    }
}

async fn handshake_failed(ctx: &ServerContext, peer: SocketAddr, e: handshake::HandshakeError) {
    let kind = e.metric_kind();
    ctx.metrics.session_errors.with_label_values(&[kind]).inc();
    if e.is_disconnect() {
        tracing::debug!(%peer, error = %e.error, "client went away during startup");
    } else {
        tracing::info!(%peer, error = %e.error, "bad startup from client");
    }
    let code = e.sqlstate();
    if let Some(mut client) = e.client {
        send_fatal(&mut client, code, &e.error.to_string()).await;
    }
}

/// Close a connection without a word, as PostgreSQL does after Terminate:
/// send our FIN, then read what the client still sends until it closes too,
/// so unread bytes never turn the close into a reset.
async fn close_quietly(mut client: ClientStream) {
    let _ = client.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut left = QUIET_CLOSE_MAX_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(QUIET_CLOSE_WAIT, drain).await;
}

/// How long, and how many bytes, a quiet close waits for the client's own close.
const QUIET_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const QUIET_CLOSE_MAX_BYTES: usize = 64 * 1024;
