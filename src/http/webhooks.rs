//! Shop webhooks (SPEC §6): `POST /v1/webhooks/{product_id}/{platform}` takes a
//! signed order event from a merchant's backend and stores it as a purchase or a
//! refund through the product's actor; `PUT /v1/products/{id}/webhook` sets the
//! platform and secret (shown once), keeping the previous secret valid for a
//! grace period.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::body::{parse_json, refuse_nul};
use super::interactions::{ItemView, send_to_product, unavailable};
use super::problem::{ApiError, FieldError};
use super::{authorization, json_reply, peer_addr, request_id, respond, with_ctx};
use crate::actors::product::{IngestItem, ItemResult, RequestMeta};
use crate::actors::product_directory::OpenError;
use crate::app::AppContext;
use crate::config::Secret;
use crate::db;
use crate::domain::ids::parse_bytes32;
use crate::domain::interaction::InteractionType;
use crate::domain::product::roles;
use crate::domain::webhook::{
    self, DEFAULT_GRACE_SECS, MAX_GRACE_SECS, Platform, WebhookConfig, WebhookEvent,
};
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let timeout = ctx.request_timeout();
    let receive = warp::path!("v1" / "webhooks" / String / String)
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(warp::header::headers_cloned())
        .and(peer_addr())
        .and(request_id())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |product, platform, ctx, headers, remote, id, body| {
            let delivery = Delivery {
                headers,
                remote,
                id,
                body,
            };
            respond(timeout, receive(ctx, product, platform, delivery))
        });
    let configure = warp::path!("v1" / "products" / String / "webhook")
        .and(warp::put())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |id, ctx, auth, body| respond(timeout, configure(ctx, auth, id, body)));
    receive.or(configure).unify()
}

/// One webhook request, as received.
struct Delivery {
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    id: RequestId,
    body: Bytes,
}

fn count(platform: &'static str, outcome: &'static str) {
    metrics::counter!(telemetry::WEBHOOKS_TOTAL, "platform" => platform, "outcome" => outcome)
        .increment(1);
}

async fn receive(
    ctx: Arc<AppContext>,
    product: String,
    platform: String,
    delivery: Delivery,
) -> Result<Response, ApiError> {
    let platform = Platform::parse(&platform).ok_or_else(|| {
        ApiError::NotFound("unknown webhook platform (shopify, woocommerce or custom)".into())
    })?;
    let label = platform.as_str();
    let result = handle(&ctx, &product, platform, delivery).await;
    let outcome = match &result {
        Ok((outcome, _)) => outcome,
        Err(ApiError::Unauthorized(_)) => "unauthorized",
        Err(ApiError::Unavailable { .. } | ApiError::Timeout(_)) => "unavailable",
        Err(_) => "invalid",
    };
    count(label, outcome);
    result.map(|(_, response)| response)
}

/// The delivery's fate: an outcome label and the response.
async fn handle(
    ctx: &AppContext,
    product: &str,
    platform: Platform,
    delivery: Delivery,
) -> Result<(&'static str, Response), ApiError> {
    let no_product = || ApiError::NotFound("no such product".into());
    let product = parse_bytes32(product).map_err(|_| no_product())?;
    let handle = match ctx.ingest.open(product).await {
        Ok(handle) => handle,
        Err(OpenError::Unknown) => return Err(no_product()),
        Err(err) => {
            tracing::warn!(error = %err, "product unavailable");
            return Err(unavailable(ctx));
        }
    };
    let signature = delivery.headers.get(platform.signature_header());
    if platform == Platform::Woocommerce && signature.is_none() && is_ping(&delivery.body) {
        // WooCommerce checks a new webhook's URL with an unsigned ping.
        return Ok((
            "ping",
            json_reply(&json!({"status": "ping"}), StatusCode::OK),
        ));
    }
    let config = handle
        .config
        .webhook
        .as_ref()
        .filter(|c| c.platform == platform)
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "no {} webhook is configured for this product",
                platform.as_str()
            ))
        })?;
    webhook::verify(
        platform,
        signature.map(|v| v.as_bytes()),
        &delivery.body,
        &config.secrets_at(chrono::Utc::now()),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    refuse_nul(&delivery.body)?;

    let topic = platform
        .topic_header()
        .and_then(|h| delivery.headers.get(h))
        .and_then(|v| v.to_str().ok());
    let order = match webhook::parse_event(platform, topic, &delivery.body).map_err(invalid)? {
        WebhookEvent::Order(order) => order,
        WebhookEvent::Ignored(reason) => {
            let body = json!({"status": "ignored", "reason": reason});
            return Ok(("ignored", json_reply(&body, StatusCode::OK)));
        }
    };
    let interaction = order.interaction(product).map_err(invalid)?;
    // A deactivated product earns nothing more, but what it already owes is still
    // pushed: a refund must still cancel the order's rewards. Its other events are
    // answered 200 and not stored: a platform disables a webhook that keeps
    // failing, and the refunds would stop coming with the rest.
    if !handle.config.is_active && interaction.kind != InteractionType::PurchaseRefunded {
        let body = json!({"status": "ignored", "reason": "the product is not active"});
        return Ok(("ignored", json_reply(&body, StatusCode::OK)));
    }
    let meta = Arc::new(RequestMeta {
        source: "webhook",
        source_ip: delivery.remote.map(|r| r.ip()),
        user_agent: delivery
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(1024).collect()),
        request_id: delivery.id,
    });
    let item = IngestItem {
        index: 0,
        wallet: order.wallet,
        interaction,
    };
    let receiver =
        send_to_product(ctx, &handle, vec![item], &meta).ok_or_else(|| unavailable(ctx))?;
    let result = receiver
        .await
        .ok()
        .and_then(|mut results| results.pop())
        .map(|(_, result)| result);
    match result {
        Some(result @ ItemResult::Accepted { .. }) => {
            Ok(("accepted", json_reply(&ItemView(&result), StatusCode::OK)))
        }
        // A redelivery: nothing new is stored, and the shop must stop retrying.
        Some(result @ ItemResult::Duplicate { .. }) => {
            Ok(("duplicate", json_reply(&ItemView(&result), StatusCode::OK)))
        }
        Some(ItemResult::Unavailable) | None => Err(unavailable(ctx)),
    }
}

fn invalid(errors: Vec<crate::domain::interaction::InvalidField>) -> ApiError {
    ApiError::Invalid(errors.into_iter().map(FieldError::from).collect())
}

/// WooCommerce's ping: `webhook_id=<digits>`, form-encoded, unsigned.
fn is_ping(body: &[u8]) -> bool {
    body.strip_prefix(b"webhook_id=")
        .is_some_and(|id| !id.is_empty() && id.len() <= 20 && id.iter().all(u8::is_ascii_digit))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigureWebhook {
    platform: String,
    /// Chosen by the merchant (e.g. the one Shopify shows); generated if absent.
    #[serde(default)]
    secret: Option<String>,
    /// How long the previous secret stays valid (default one day, 0: at once).
    #[serde(default)]
    grace_period_secs: Option<u64>,
}

/// Owner or admin. Answers the new secret: the only time it is shown.
async fn configure(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = super::access::authorize(&ctx, auth.as_deref(), &id, roles::ADMIN).await?;
    let request: ConfigureWebhook = parse_json(&body)?;
    let mut errors = Vec::new();
    let platform = Platform::parse(&request.platform);
    if platform.is_none() {
        errors.push(FieldError::new(
            "platform",
            "must be shopify, woocommerce or custom",
        ));
    }
    if let Some(secret) = &request.secret
        && let Err(message) = webhook::validate_secret(secret)
    {
        errors.push(FieldError::new("secret", message));
    }
    let grace = request.grace_period_secs.unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        errors.push(FieldError::new(
            "grace_period_secs",
            format!("must be at most {MAX_GRACE_SECS}"),
        ));
    }
    let (Some(platform), true) = (platform, errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    let secret = request
        .secret
        .map(Secret::new)
        .unwrap_or_else(webhook::generate_secret);
    let now = chrono::Utc::now();
    let config = db::products::change_webhook(&ctx.pool, access.product, |current| {
        WebhookConfig::rotate(current, platform, secret, now, grace)
    })
    .await?;
    if let Some(product) = db::products::load_config(&ctx.pool, access.product).await? {
        ctx.ingest.products.update_config(product);
    }
    let body = json!({
        "platform": config.platform.as_str(),
        "secret": config.secret.expose(),
        "url": format!("/v1/webhooks/{id}/{}", config.platform.as_str()),
        "previous_secret_valid_until": config.previous_valid_until,
    });
    Ok(json_reply(&body, StatusCode::OK))
}
