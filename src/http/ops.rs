//! Operations routes: liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{json_reply, with_ctx};
use crate::actors::supervisor::SupervisorMsg;
use crate::app::AppContext;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Arc<AppContext>| {
            let report = ctx.readiness.report();
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_reply(&report, status)
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx(ctx))
        .map(|ctx: Arc<AppContext>| {
            let mut response = ctx.metrics.render().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        });
    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        let mut response = OPENAPI.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
}

/// Alive when the root supervisor answers: the actor system is running.
async fn healthz(ctx: Arc<AppContext>) -> Response {
    let answer = ractor::call_t!(ctx.root, SupervisorMsg::Status, 1_000);
    match answer {
        Ok(status) => {
            let children: Vec<_> = status
                .children
                .iter()
                .map(|(kind, running, restarts)| {
                    serde_json::json!({"actor": kind, "running": running, "restarts": restarts})
                })
                .collect();
            json_reply(
                &serde_json::json!({"status": "ok", "actors": children}),
                StatusCode::OK,
            )
        }
        Err(_) => json_reply(
            &serde_json::json!({"status": "actor system not responding"}),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}
