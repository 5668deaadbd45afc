//! The warp front door: routes, auth, problem+json errors, request metrics. It
//! knows no SQL: handlers call `db::*` functions and actors.

mod access;
mod administrators;
mod auth;
mod banks;
pub mod body;
mod campaigns;
pub mod cors;
mod interactions;
mod ops;
pub mod problem;
mod products;
mod server;
mod tracked_body;
mod wallets;
mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use warp::http::Method;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::AppContext;
use crate::telemetry;
use crate::telemetry::request_id::RequestId;
use problem::ApiError;
pub use server::{PeerAddr, serve};

/// Every route, as (method, template). Request metrics use the template as their
/// `route` label (bounded), and `/openapi.json` must describe exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/auth/nonce"),
    ("POST", "/v1/auth/wallet"),
    ("POST", "/v1/products"),
    ("GET", "/v1/products"),
    ("GET", "/v1/products/{id}"),
    ("PATCH", "/v1/products/{id}"),
    ("PUT", "/v1/products/{id}/webhook"),
    ("POST", "/v1/webhooks/{product_id}/{platform}"),
    ("GET", "/v1/products/{id}/administrators"),
    ("POST", "/v1/products/{id}/administrators"),
    ("DELETE", "/v1/products/{id}/administrators/{wallet}"),
    ("POST", "/v1/interactions"),
    ("GET", "/v1/products/{id}/banks"),
    ("POST", "/v1/products/{id}/banks"),
    ("POST", "/v1/products/{id}/campaigns"),
    ("GET", "/v1/products/{id}/campaigns"),
    ("GET", "/v1/products/{id}/estimate"),
    ("GET", "/v1/campaigns/{id}"),
    ("PATCH", "/v1/campaigns/{id}"),
    ("POST", "/v1/campaigns/{id}/activate"),
    ("POST", "/v1/campaigns/{id}/pause"),
    ("POST", "/v1/campaigns/{id}/deactivate"),
    ("GET", "/v1/campaigns/{id}/stats"),
    ("GET", "/v1/wallets/{address}/rewards"),
    ("GET", "/v1/wallets/{address}/history"),
];

/// The whole API, with rejections rendered as problem+json and every response
/// counted and timed.
pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let ctx_origins = ctx.origins.clone();
    let ops = ops::routes(ctx.clone());
    let api = interactions::routes(ctx.clone())
        .or(auth::routes(ctx.clone()))
        .unify()
        .or(products::routes(ctx.clone()))
        .unify()
        .or(administrators::routes(ctx.clone()))
        .unify()
        .or(banks::routes(ctx.clone()))
        .unify()
        .or(campaigns::routes(ctx.clone()))
        .unify()
        .or(wallets::routes(ctx.clone()))
        .unify()
        .or(webhooks::routes(ctx))
        .unify();
    let origins = ctx_origins.clone();
    let origin = warp::header::optional::<String>("origin")
        .or(warp::any().map(|| None))
        .unify();
    origin
        .and(
            cors::preflight(ctx_origins)
                .or(ops)
                .unify()
                .or(api)
                .unify()
                .recover(problem::handle_rejection)
                .unify(),
        )
        .map(move |origin: Option<String>, response: Response| {
            origins.decorate(origin.as_deref(), response)
        })
        .with(warp::log::custom(record_request))
}

/// The route template a request matched, or `unmatched` (keeps labels bounded).
pub fn route_label(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|(m, template)| {
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            *m == method.as_str()
                && parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .map(|(_, template)| *template)
        .unwrap_or("unmatched")
}

fn record_request(info: warp::log::Info<'_>) {
    let route = route_label(info.method(), info.path());
    let method = match *info.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    let status = info.status().as_u16().to_string();
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status),
    ];
    metrics::counter!(telemetry::HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(telemetry::HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(info.elapsed().as_secs_f64());
}

/// Passes the shared context to a handler.
fn with_ctx(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Arc<AppContext>,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The request's id (set by the server's request layer; a fresh one otherwise).
fn request_id() -> impl Filter<Extract = (RequestId,), Error = Infallible> + Clone {
    warp::ext::optional::<RequestId>()
        .map(|id: Option<RequestId>| id.unwrap_or_else(RequestId::generate))
}

/// The client's address (set by the server's request layer).
fn peer_addr() -> impl Filter<Extract = (Option<std::net::SocketAddr>,), Error = Infallible> + Clone
{
    warp::ext::optional::<PeerAddr>().map(|peer: Option<PeerAddr>| peer.map(|p| p.0))
}

/// The `Authorization` header, checked inside the handler (so a bad token is an
/// answer of the matched route, not a rejection that other routes could mask).
fn authorization() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

/// Runs a handler under the request time limit; its error becomes the response.
///
/// The handler is boxed here, once: warp nests every route's future in the
/// future of the whole route tree, which hyper and warp move several times per
/// request, so an unboxed handler state (tens of kilobytes across all routes) was
/// copied at each move.
fn respond<F>(
    timeout: Duration,
    handler: F,
) -> Pin<Box<dyn Future<Output = Result<Response, Rejection>> + Send>>
where
    F: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    Box::pin(async move {
        let outcome = match tokio::time::timeout(timeout, handler).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout(timeout.as_millis() as u64)),
        };
        Ok(outcome.unwrap_or_else(ApiError::into_response))
    })
}

/// JSON with a status.
fn json_reply<T: serde::Serialize>(value: &T, status: warp::http::StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_route_templates() {
        assert_eq!(
            route_label(&Method::GET, "/v1/products/0xabc"),
            "/v1/products/{id}"
        );
        assert_eq!(route_label(&Method::GET, "/v1/products"), "/v1/products");
        assert_eq!(route_label(&Method::POST, "/v1/products"), "/v1/products");
        assert_eq!(route_label(&Method::DELETE, "/v1/products"), "unmatched");
        assert_eq!(
            route_label(&Method::GET, "/wp-admin/../etc/passwd"),
            "unmatched"
        );
    }

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(ops::OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
