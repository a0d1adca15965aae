//! The HTTP endpoint: `/metrics`, `/healthz` (the process is up) and `/readyz`
//! (the upstream server accepts connections).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// How `/readyz` asks whether the upstream server accepts connections: `Err` says why not.
pub trait Readiness: Send + Sync + 'static {
    fn check(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// Serve HTTP on `listener` until `stop` is cancelled.
pub async fn serve<U: Readiness>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    upstream: Arc<U>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(route(req, &metrics, upstream.as_ref()).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn route<U: Readiness>(
    req: Request<Incoming>,
    metrics: &Metrics,
    upstream: &U,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            let check = tokio::time::timeout(Duration::from_secs(2), upstream.check()).await;
            match check {
                Ok(Ok(())) => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Ok(Err(e)) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("upstream unreachable: {e}\n").into_bytes(),
                ),
                Err(_) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"upstream unreachable: timed out\n".to_vec(),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
