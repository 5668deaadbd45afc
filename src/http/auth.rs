//! Wallet sign-in (EIP-4361 + EIP-191) and the bearer-token check every business
//! route uses.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::body::parse_json;
use super::problem::ApiError;
use super::{json_reply, respond, with_ctx};
use crate::app::AppContext;
use crate::db::{self, auth_nonces::NonceState};
use crate::domain::ids::to_hex;
use crate::domain::session_token::{self, Session, TokenError};
use crate::domain::siwe::{self, SiweError, SiweMessage};
use crate::telemetry;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let timeout = ctx.request_timeout();
    let nonce = warp::path!("v1" / "auth" / "nonce")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(super::peer_addr())
        .and_then(move |ctx, peer| respond(timeout, issue_nonce(ctx, peer)));
    let wallet = warp::path!("v1" / "auth" / "wallet")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |ctx, body| respond(timeout, sign_in(ctx, body)));
    nonce.or(wallet).unify()
}

/// Verifies `Authorization: Bearer <token>`.
pub fn authenticate(ctx: &AppContext, header: Option<&str>) -> Result<Session, ApiError> {
    let header = header.ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
    session_token::verify(
        ctx.jwt_secret.expose().as_bytes(),
        token.trim(),
        Utc::now().timestamp(),
    )
    .map_err(|err| {
        ApiError::Unauthorized(match err {
            TokenError::Expired => "the session token has expired; sign in again".into(),
            other => other.to_string(),
        })
    })
}

#[derive(Serialize)]
struct NonceResponse {
    nonce: String,
    expires_at: chrono::DateTime<Utc>,
}

/// Unauthenticated, and each nonce is a row until used or expired: limited per
/// source IP (`rate_limit.nonces_per_ip_per_hour`).
async fn issue_nonce(
    ctx: Arc<AppContext>,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response, ApiError> {
    use rand::distr::{Alphanumeric, SampleString};
    let now_ms = Utc::now().timestamp_millis();
    if let Err(limited) = ctx.ingest.limiter.check_nonce(peer.map(|p| p.ip()), now_ms) {
        metrics::counter!(telemetry::RATE_LIMITED_TOTAL, "scope" => limited.scope).increment(1);
        return Err(ApiError::TooManyRequests {
            detail: "too many sign-in nonces from this address".into(),
            retry_after_secs: limited.retry_after_secs,
        });
    }
    let nonce = Alphanumeric.sample_string(&mut rand::rng(), 24);
    let expires_at = Utc::now() + Duration::seconds(ctx.settings.auth.nonce_ttl_secs as i64);
    db::auth_nonces::insert(&ctx.pool, &nonce, expires_at).await?;
    Ok(json_reply(
        &NonceResponse { nonce, expires_at },
        StatusCode::CREATED,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    message: String,
    signature: String,
}

#[derive(Serialize)]
struct SignInResponse {
    token: String,
    wallet: String,
    expires_at: chrono::DateTime<Utc>,
}

async fn sign_in(ctx: Arc<AppContext>, body: Bytes) -> Result<Response, ApiError> {
    let outcome = verify_sign_in(&ctx, &body).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(SignInError::Siwe(err)) => err.reason(),
        Err(SignInError::Nonce(NonceState::Expired)) => "nonce_expired",
        Err(SignInError::Nonce(_)) => "nonce_unknown",
        Err(SignInError::Api(_)) => "invalid_request",
    };
    metrics::counter!(telemetry::AUTH_LOGINS_TOTAL, "outcome" => label).increment(1);
    let wallet = outcome.map_err(ApiError::from)?;
    let now = Utc::now();
    let ttl = ctx.settings.auth.token_ttl_secs as i64;
    let token = session_token::mint(
        ctx.jwt_secret.expose().as_bytes(),
        wallet,
        now.timestamp(),
        ttl,
    );
    Ok(json_reply(
        &SignInResponse {
            token,
            wallet: to_hex(wallet),
            expires_at: now + Duration::seconds(ttl),
        },
        StatusCode::OK,
    ))
}

enum SignInError {
    Api(ApiError),
    Siwe(SiweError),
    Nonce(NonceState),
}

impl From<SignInError> for ApiError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::Api(err) => err,
            SignInError::Siwe(SiweError::Malformed(why)) => ApiError::invalid("message", why),
            SignInError::Siwe(err) => ApiError::Unauthorized(err.to_string()),
            SignInError::Nonce(NonceState::Expired) => {
                ApiError::Unauthorized("the nonce has expired; request a new one".into())
            }
            SignInError::Nonce(_) => {
                ApiError::Unauthorized("unknown or already used nonce; request a new one".into())
            }
        }
    }
}

/// Parse, check, verify the signature, and only then spend the nonce (so a forged
/// request cannot burn a nonce that a real client is about to use).
async fn verify_sign_in(
    ctx: &AppContext,
    body: &[u8],
) -> Result<alloy::primitives::Address, SignInError> {
    let request: SignInRequest = parse_json(body).map_err(SignInError::Api)?;
    let message = SiweMessage::parse(&request.message).map_err(SignInError::Siwe)?;
    let auth = &ctx.settings.auth;
    message
        .check(&auth.siwe_domains, Utc::now(), auth.clock_skew_secs as i64)
        .map_err(SignInError::Siwe)?;
    siwe::verify_signature(&request.message, &request.signature, message.address)
        .map_err(SignInError::Siwe)?;
    match db::auth_nonces::consume(&ctx.pool, &message.nonce)
        .await
        .map_err(|e| SignInError::Api(e.into()))?
    {
        NonceState::Valid => Ok(message.address),
        other => Err(SignInError::Nonce(other)),
    }
}
