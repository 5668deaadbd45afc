//! The connection loop. warp's own `serve` offers no hook around a whole request,
//! and the request id must exist before routing (the span, the handlers) and after
//! it (the response header); so the routes run as a `warp::service` behind
//! [`RequestLayer`], on connections served the way warp serves them (HTTP/1.1 and
//! h2 via hyper-util; graceful shutdown lets in-flight requests finish).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::Instrument;
use warp::http::header::CONNECTION;
use warp::http::{HeaderValue, Request, Response};

use super::tracked_body::TrackedBody;

use crate::app::AppContext;
use crate::telemetry::request_id::{self, RequestId};

/// The client's address, as a request extension (`warp::addr::remote` only works
/// under warp's own server).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and
/// returns once every connection has finished its in-flight requests.
pub async fn serve(
    ctx: Arc<AppContext>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let limits = ConnectionLimits {
        max_header_bytes: ctx.settings.server.max_header_bytes as usize,
        header_read_timeout: std::time::Duration::from_millis(
            ctx.settings.server.header_read_timeout_ms,
        ),
    };
    let body_limit = ctx.settings.server.body_limit_bytes;
    let service = warp::service(super::routes(ctx));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    backoff_on_accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let layered = RequestLayer {
            inner: service.clone(),
            peer,
            body_limit,
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = limits.builder();
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(layered),
            );
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What one connection may send: the size of a request head and the time to
/// send it (a client trickling headers is disconnected).
#[derive(Clone, Copy)]
struct ConnectionLimits {
    max_header_bytes: usize,
    header_read_timeout: std::time::Duration,
}

impl ConnectionLimits {
    fn builder(self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_header_bytes as u32);
        builder
    }
}

/// Connection-level accept errors are the client's business; anything else (out of
/// file descriptors) is logged and retried after a pause, as hyper used to.
async fn backoff_on_accept_error(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed; pausing 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Gives each request its [`RequestId`] and [`PeerAddr`] (request extensions),
/// runs it inside a `request` span carrying the id, and echoes the id in the
/// `X-Request-Id` response header.
#[derive(Clone)]
pub struct RequestLayer<S> {
    inner: S,
    peer: SocketAddr,
    /// `server.body_limit_bytes`: unread bodies up to this size are drained.
    body_limit: u64,
}

type BoxedResponse<B> = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

impl<S, B, RB> tower_service::Service<Request<B>> for RequestLayer<S>
where
    S: tower_service::Service<Request<TrackedBody<B>>, Response = Response<RB>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
{
    type Response = Response<RB>;
    type Error = Infallible;
    type Future = BoxedResponse<RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let id = RequestId::from_client_or_new(request.headers().get(request_id::HEADER));
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = request.uri().path(),
        );
        let header = id.header_value();
        let (mut parts, body) = request.into_parts();
        let (body, body_end) = TrackedBody::wrap(body, &parts.headers, self.body_limit);
        parts.extensions.insert(id);
        parts.extensions.insert(PeerAddr(self.peer));
        let request = Request::from_parts(parts, body);
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut response = response.await?;
                let headers = response.headers_mut();
                headers.insert(request_id::HEADER, header);
                if !body_end.connection_reusable() {
                    headers.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
