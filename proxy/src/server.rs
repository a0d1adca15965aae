//! The listener: accept, connection limits, per-session tasks with panic
//! containment, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::context::ServerContext;
use crate::metrics::Metrics;
use crate::session;

/// Accept clients on `listener` until `stop` is cancelled, then drain.
pub async fn run(listener: TcpListener, ctx: Arc<ServerContext>, stop: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => spawn_session(&tracker, ctx.clone(), stream, peer),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    drain(tracker, &ctx).await;
}

async fn drain(tracker: TaskTracker, ctx: &ServerContext) {
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        tracing::info!(
            sessions = open,
            timeout = ?ctx.config.shutdown_timeout,
            "stopped accepting; waiting for sessions to finish"
        );
    }
    if tokio::time::timeout(ctx.config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = tracker.len(),
            "shutdown timeout reached; closing remaining sessions"
        );
        ctx.force_close.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    tracing::info!("shutdown complete");
}

fn spawn_session(
    tracker: &TaskTracker,
    ctx: Arc<ServerContext>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    ctx.metrics.connections_total.inc();
    // Over the limit, the session still runs its startup so that the client
    // gets a proper "too many clients" ErrorResponse instead of a reset.
    let permit = ctx.slots.clone().try_acquire_owned().ok();
    tracker.spawn(async move {
        let metrics = ctx.metrics.clone();
        metrics.connections_active.inc();
        contained(session::run(ctx, stream, peer, permit), &metrics, peer).await;
        metrics.connections_active.dec();
    });
}

/// Run a session future; a panic inside it is caught, logged and counted, and
/// never reaches the listener or other sessions.
async fn contained<F: std::future::Future<Output = ()>>(
    fut: F,
    metrics: &Metrics,
    peer: SocketAddr,
) {
    if let Err(panic) = std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        metrics.session_errors.with_label_values(&["panic"]).inc();
        tracing::error!(%peer, panic = %what, "session panicked; it was closed, other sessions are unaffected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_session_is_contained_and_counted() {
        let metrics = Metrics::new().unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let bad = async { panic!("boom in one session") };
        contained(bad, &metrics, peer).await;
        contained(async {}, &metrics, peer).await;
        assert_eq!(
            metrics.session_errors.with_label_values(&["panic"]).get(),
            1
        );
    }
}
