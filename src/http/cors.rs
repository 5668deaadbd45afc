//! CORS (SPEC §4 rule 1, §10): browsers on a product's own origins — and on the
//! operator's `server.cors_origins` — may call the API; no other origin gets CORS
//! headers, and its preflight is refused. Which product an SDK call is for is in
//! its body, so the per-product `Origin` check stays in the interaction handler;
//! here an origin is allowed when any active product (or the operator) allows it.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::problem::ApiError;
use crate::db::{self, DbError};
use crate::domain::product::normalize_origin;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id";
const EXPOSE_HEADERS: &str = "x-request-id, retry-after, location";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_SECS: u32 = 600;

/// The origins allowed to call the API from a browser; refreshed when products
/// are created or changed.
pub struct AllowedOrigins {
    configured: Vec<String>,
    origins: RwLock<Arc<HashSet<String>>>,
}

impl AllowedOrigins {
    /// `configured`: `server.cors_origins` (validated with the configuration).
    pub fn new(configured: &[String]) -> Self {
        let configured: Vec<String> = configured
            .iter()
            .filter_map(|o| normalize_origin(o).ok())
            .collect();
        Self {
            origins: RwLock::new(Arc::new(configured.iter().cloned().collect())),
            configured,
        }
    }

    /// Reloads the active products' origins.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), DbError> {
        let mut origins: HashSet<String> = db::products::active_origins(pool)
            .await?
            .into_iter()
            .collect();
        origins.extend(self.configured.iter().cloned());
        *self.origins.write().expect("not poisoned") = Arc::new(origins);
        Ok(())
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.origins.read().expect("not poisoned").contains(&origin)
    }

    /// Adds the CORS headers to a response to an allowed origin.
    pub fn decorate(&self, origin: Option<&str>, mut response: Response) -> Response {
        if let Some(origin) = origin
            && self.allows(origin)
            && let Ok(value) = HeaderValue::from_str(origin)
        {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        response
    }
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: 204 with the
/// allowed methods and headers for an allowed origin, 403 otherwise.
pub fn preflight(
    origins: Arc<AllowedOrigins>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Anything else is not_found (the weakest rejection), so that this filter
    // never turns another route's 404 into a 405 or a missing-header error.
    warp::method()
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>(
            "access-control-request-method",
        ))
        .and_then(
            |method: Method, origin: Option<String>, requested: Option<String>| async move {
                match (method, origin, requested) {
                    (Method::OPTIONS, Some(origin), Some(_)) => Ok(origin),
                    _ => Err(warp::reject::not_found()),
                }
            },
        )
        .map(move |origin: String| {
            if !origins.allows(&origin) {
                return ApiError::Forbidden(format!(
                    "origin {origin:?} may not call this API from a browser"
                ))
                .into_response();
            }
            let mut response =
                warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(MAX_AGE_SECS),
            );
            response
        })
}
