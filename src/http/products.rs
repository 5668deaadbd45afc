//! Products: create (the caller becomes owner), read, list mine.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::authenticate;
use super::body::parse_json;
use super::problem::{ApiError, FieldError};
use super::{authorization, json_reply, respond, with_ctx};
use crate::app::AppContext;
use crate::db::products::{NewProduct, ProductRow};
use crate::db::{self, DbError};
use crate::domain::ids::{product_id_for_domain, to_hex};
use crate::domain::product::{self, roles};

/// Largest accepted `metadata` object, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let timeout = ctx.request_timeout();
    let create = warp::path!("v1" / "products")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |ctx, auth, body| respond(timeout, create(ctx, auth, body)));
    let list = warp::path!("v1" / "products")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and_then(move |ctx, auth| respond(timeout, list(ctx, auth)));
    let get = warp::path!("v1" / "products" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and_then(move |id, ctx, auth| respond(timeout, get(ctx, auth, id)));
    let patch = warp::path!("v1" / "products" / String)
        .and(warp::patch())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |id, ctx, auth, body| respond(timeout, patch(ctx, auth, id, body)));
    create.or(list).unify().or(get).unify().or(patch).unify()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    domain: String,
    name: String,
    #[serde(default)]
    product_types: i64,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Serialize)]
struct ProductView {
    id: String,
    domain: String,
    name: String,
    owner: String,
    product_types: i64,
    metadata: serde_json::Value,
    /// The origins the SDK may call from; empty in storage means `https://<domain>`.
    allowed_origins: Vec<String>,
    is_active: bool,
    webhook_platform: Option<String>,
    /// The caller's roles on the product.
    roles: Vec<&'static str>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<ProductRow> for ProductView {
    fn from(row: ProductRow) -> Self {
        let allowed_origins = if row.allowed_origins.is_empty() {
            vec![format!("https://{}", row.domain)]
        } else {
            row.allowed_origins
        };
        ProductView {
            id: to_hex(&row.id),
            domain: row.domain,
            name: row.name,
            owner: to_hex(&row.owner_wallet),
            product_types: row.product_types,
            metadata: row.metadata,
            allowed_origins,
            is_active: row.is_active,
            webhook_platform: row.webhook_platform,
            roles: roles::names(row.caller_roles),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

async fn create(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let request: CreateProduct = parse_json(&body)?;
    let mut errors = Vec::new();
    let domain = product::normalize_domain(&request.domain)
        .map_err(|e| errors.push(FieldError::new("domain", e)))
        .ok();
    let name = product::validate_name(&request.name)
        .map_err(|e| errors.push(FieldError::new("name", e)))
        .ok();
    let origins = product::normalize_origins(&request.allowed_origins)
        .map_err(|e| errors.push(FieldError::new("allowed_origins", e)))
        .ok();
    if request.product_types < 0 {
        errors.push(FieldError::new(
            "product_types",
            "must be a non-negative bitmask",
        ));
    }
    let metadata = serde_json::Value::Object(request.metadata.unwrap_or_default());
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        errors.push(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let (Some(domain), Some(name), Some(allowed_origins), true) =
        (domain, name, origins, errors.is_empty())
    else {
        return Err(ApiError::Invalid(errors));
    };
    let new = NewProduct {
        id: product_id_for_domain(&domain),
        domain,
        name,
        owner: session.wallet,
        product_types: request.product_types,
        metadata,
        allowed_origins,
    };
    let row = db::products::insert(&ctx.pool, &new)
        .await
        .map_err(|err| match err {
            DbError::Conflict { .. } => ApiError::Conflict(format!(
                "a product for the domain {} already exists",
                new.domain
            )),
            other => other.into(),
        })?;
    ctx.origins.refresh(&ctx.pool).await?;
    let view = ProductView::from(row);
    let mut response = json_reply(&view, StatusCode::CREATED);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/products/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn get(ctx: Arc<AppContext>, auth: Option<String>, id: String) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let id = super::access::product_id(&id)?;
    let row = db::products::get_for(&ctx.pool, id, session.wallet)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such product".into()))?;
    if row.caller_roles == 0 {
        return Err(ApiError::Forbidden(
            "only the product's owner and administrators can read it".into(),
        ));
    }
    Ok(json_reply(&ProductView::from(row), StatusCode::OK))
}

async fn list(ctx: Arc<AppContext>, auth: Option<String>) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let rows = db::products::list_for(&ctx.pool, session.wallet).await?;
    let products: Vec<ProductView> = rows.into_iter().map(ProductView::from).collect();
    Ok(json_reply(
        &serde_json::json!({ "products": products }),
        StatusCode::OK,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchProduct {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    is_active: Option<bool>,
}

/// Owner or admin: name, metadata, allowed origins, active flag. The front door
/// sees the change with the next request.
async fn patch(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = super::access::authorize(&ctx, auth.as_deref(), &id, roles::ADMIN).await?;
    let (id, wallet) = (access.product, access.wallet);
    let request: PatchProduct = parse_json(&body)?;
    let mut errors = Vec::new();
    let mut changes = db::products::ProductChanges {
        is_active: request.is_active,
        ..Default::default()
    };
    if let Some(name) = &request.name {
        changes.name = product::validate_name(name)
            .map_err(|e| errors.push(FieldError::new("name", e)))
            .ok();
    }
    if let Some(origins) = &request.allowed_origins {
        changes.allowed_origins = product::normalize_origins(origins)
            .map_err(|e| errors.push(FieldError::new("allowed_origins", e)))
            .ok();
    }
    if let Some(metadata) = request.metadata {
        let metadata = serde_json::Value::Object(metadata);
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            errors.push(FieldError::new(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
        changes.metadata = Some(metadata);
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    db::products::update(&ctx.pool, id, &changes).await?;
    if let Some(config) = db::products::load_config(&ctx.pool, id).await? {
        ctx.ingest.products.update_config(config);
    }
    ctx.origins.refresh(&ctx.pool).await?;
    let row = db::products::get_for(&ctx.pool, id, wallet)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such product".into()))?;
    Ok(json_reply(&ProductView::from(row), StatusCode::OK))
}
