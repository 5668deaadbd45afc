//! `POST /v1/interactions`: one interaction or `{"interactions": […]}` (≤ 1,000),
//! from the signed-in wallet. Validates, rate-limits, hands each product's items
//! to its actor, and answers 202 only with what was committed (SPEC §4).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::primitives::{Address, B256, U256};
use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde_json::Value;
use tokio::sync::oneshot;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::authenticate;
use super::body::parse_json;
use super::problem::{ApiError, FieldError};
use super::{authorization, json_reply, peer_addr, request_id, respond, with_ctx};
use crate::actors::product::{
    DedupCache, GrantedReward, IngestItem, ItemResult, ProductMsg, RequestMeta,
};
use crate::actors::product_directory::{OpenError, ProductHandle};
use crate::app::AppContext;
use crate::domain::interaction::{DedupKey, Interaction, InteractionInput, MAX_BATCH};
use crate::domain::product::origin_allowed;
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let timeout = ctx.request_timeout();
    warp::path!("v1" / "interactions")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("user-agent"))
        .and(peer_addr())
        .and(request_id())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |ctx, auth, origin, agent, remote, id, body| {
            let request = Request {
                auth,
                origin,
                user_agent: agent,
                remote,
                id,
            };
            respond(timeout, ingest(ctx, request, body))
        })
}

/// What became of one item of the request.
#[derive(Clone)]
enum Slot {
    Rejected {
        errors: Vec<FieldError>,
        reason: &'static str,
    },
    /// Not answered by a product actor (refused at the door, or the actor failed).
    Waiting,
    Done(ItemResult),
}

/// What the handler reads from the request besides its body.
struct Request {
    auth: Option<String>,
    origin: Option<String>,
    user_agent: Option<String>,
    remote: Option<SocketAddr>,
    id: RequestId,
}

async fn ingest(ctx: Arc<AppContext>, request: Request, body: Bytes) -> Result<Response, ApiError> {
    let Request {
        auth,
        origin,
        user_agent,
        remote,
        id,
    } = request;
    let session = authenticate(&ctx, auth.as_deref())?;
    let (batch, raw) = split_body(parse_json(&body)?)?;

    let mut slots: Vec<Slot> = Vec::with_capacity(raw.len());
    let mut valid: Vec<(usize, Interaction)> = Vec::with_capacity(raw.len());
    for (index, value) in raw.into_iter().enumerate() {
        match parse_item(value) {
            Ok(interaction) => {
                slots.push(Slot::Waiting);
                valid.push((index, interaction));
            }
            Err(errors) => slots.push(Slot::Rejected {
                errors,
                reason: "invalid",
            }),
        }
    }
    if !batch && valid.is_empty() {
        count_rejections(&slots, &[]);
        let Some(Slot::Rejected { errors, .. }) = slots.pop() else {
            unreachable!("a single request has one slot")
        };
        return Err(ApiError::Invalid(errors));
    }

    let ip = remote.map(|r| r.ip());
    // Deduplication comes before the rate limit (SPEC §4): an item repeating an
    // idempotency or natural key stored recently is answered as the duplicate it
    // is and takes nothing from the limits.
    if let Some(most) = ctx.ingest.limiter.most_at_once(ip.is_some()) {
        let new = valid
            .iter()
            .filter(|(_, item)| !recently_stored(&ctx.ingest.dedup, item, session.wallet))
            .count() as u64;
        if new > most {
            return Err(ApiError::invalid(
                "interactions",
                format!(
                    "more than the rate limit admits at once ({most} per hour): split the batch"
                ),
            ));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        if new > 0
            && let Err(limited) = ctx.ingest.limiter.check(session.wallet, ip, new, now_ms)
        {
            metrics::counter!(telemetry::RATE_LIMITED_TOTAL, "scope" => limited.scope).increment(1);
            return Err(ApiError::TooManyRequests {
                detail: format!("rate limit per {} exceeded", limited.scope),
                retry_after_secs: limited.retry_after_secs,
            });
        }
    }

    let meta = Arc::new(RequestMeta {
        source: "sdk",
        source_ip: ip,
        user_agent: user_agent.map(|ua| ua.chars().take(1024).collect()),
        request_id: id,
    });
    let mut by_product: BTreeMap<B256, Vec<(usize, Interaction)>> = BTreeMap::new();
    let kinds: Vec<Option<&'static str>> = {
        let mut kinds = vec![None; slots.len()];
        for (index, interaction) in &valid {
            kinds[*index] = Some(interaction.kind.as_str());
        }
        kinds
    };
    for (index, interaction) in valid {
        by_product
            .entry(interaction.product_id)
            .or_default()
            .push((index, interaction));
    }
    let mut waiting = Vec::new();
    for (product, items) in by_product {
        match dispatch(
            &ctx,
            product,
            items,
            origin.as_deref(),
            session.wallet,
            &meta,
        )
        .await
        {
            Dispatched::Sent(receiver) => waiting.push(receiver),
            Dispatched::Refused(indexes, slot) => {
                for index in indexes {
                    slots[index] = slot.clone();
                }
            }
        }
    }
    for receiver in waiting {
        // A dropped reply (the actor failed) leaves its items Waiting → unavailable.
        if let Ok(results) = receiver.await {
            for (index, result) in results {
                slots[index] = Slot::Done(result);
            }
        }
    }
    count_rejections(&slots, &kinds);
    log_outcome(&slots);
    Ok(render(&ctx, batch, slots))
}

/// Whether the interaction repeats an idempotency or natural key stored recently
/// (the product actors' dedup cache). Keys gone from the cache, and the time-window
/// dedup (its hash serializes the data: not worth it here), are not looked up: such
/// a repeat counts against the limits.
fn recently_stored(dedup: &DedupCache, interaction: &Interaction, wallet: Address) -> bool {
    let idempotency = interaction
        .idempotency_key
        .clone()
        .map(DedupKey::Idempotency);
    let natural = interaction.natural_key(Some(wallet)).map(DedupKey::Natural);
    [idempotency, natural]
        .into_iter()
        .flatten()
        .any(|key| dedup.contains_key(&(interaction.product_id, key)))
}

/// `{"interactions": [...]}` is a batch; any other value is one interaction.
fn split_body(value: Value) -> Result<(bool, Vec<Value>), ApiError> {
    match value {
        Value::Object(mut map) if map.contains_key("interactions") => {
            if map.len() != 1 {
                return Err(ApiError::invalid(
                    "body",
                    "a batch has only the `interactions` key",
                ));
            }
            match map.remove("interactions") {
                Some(Value::Array(items)) if items.is_empty() => {
                    Err(ApiError::invalid("interactions", "must not be empty"))
                }
                Some(Value::Array(items)) if items.len() > MAX_BATCH => Err(ApiError::invalid(
                    "interactions",
                    format!("at most {MAX_BATCH} interactions per request"),
                )),
                Some(Value::Array(items)) => Ok((true, items)),
                _ => Err(ApiError::invalid("interactions", "must be an array")),
            }
        }
        other => Ok((false, vec![other])),
    }
}

fn parse_item(value: Value) -> Result<Interaction, Vec<FieldError>> {
    let input: InteractionInput = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "interaction".to_owned()
        } else {
            path
        };
        vec![FieldError::new(field, err.into_inner())]
    })?;
    input
        .validate()
        .map_err(|errors| errors.into_iter().map(FieldError::from).collect())
}

enum Dispatched {
    Sent(oneshot::Receiver<Vec<(usize, ItemResult)>>),
    Refused(Vec<usize>, Slot),
}

/// Hands one product's items to its actor, unless the product refuses them.
async fn dispatch(
    ctx: &AppContext,
    product: B256,
    items: Vec<(usize, Interaction)>,
    origin: Option<&str>,
    wallet: alloy::primitives::Address,
    meta: &Arc<RequestMeta>,
) -> Dispatched {
    let indexes: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
    let rejected = |field: &str, message: &str, reason| Slot::Rejected {
        errors: vec![FieldError::new(field, message)],
        reason,
    };
    let handle = match ctx.ingest.open(product).await {
        Ok(handle) => handle,
        Err(OpenError::Unknown) => {
            return Dispatched::Refused(
                indexes,
                rejected("product_id", "unknown product", "unknown_product"),
            );
        }
        Err(err) => {
            tracing::warn!(error = %err, "product unavailable");
            return Dispatched::Refused(indexes, Slot::Waiting);
        }
    };
    if !handle.config.is_active {
        return Dispatched::Refused(
            indexes,
            rejected(
                "product_id",
                "the product is not active",
                "inactive_product",
            ),
        );
    }
    if let Some(origin) = origin
        && !origin_allowed(
            &handle.config.domain,
            &handle.config.allowed_origins,
            origin,
        )
    {
        let message = format!("origin {origin:?} is not allowed for this product");
        return Dispatched::Refused(indexes, rejected("origin", &message, "origin"));
    }
    let items = items
        .into_iter()
        .map(|(index, interaction)| IngestItem {
            index,
            wallet: Some(wallet),
            interaction,
        })
        .collect();
    match send_to_product(ctx, &handle, items, meta) {
        Some(receiver) => Dispatched::Sent(receiver),
        None => Dispatched::Refused(indexes, Slot::Waiting),
    }
}

/// Hands items to a product's actor if its mailbox has room; `None`: refused
/// (full, or the actor is gone), nothing sent.
pub(super) fn send_to_product(
    ctx: &AppContext,
    handle: &ProductHandle,
    items: Vec<IngestItem>,
    meta: &Arc<RequestMeta>,
) -> Option<oneshot::Receiver<Vec<(usize, ItemResult)>>> {
    let n = items.len() as u64;
    let capacity = ctx.settings.ingest.product_mailbox_capacity;
    if handle.queued.fetch_add(n, Ordering::AcqRel) + n > capacity {
        handle.queued.fetch_sub(n, Ordering::AcqRel);
        return None;
    }
    let (reply, receiver) = oneshot::channel();
    let message = ProductMsg::Ingest {
        items,
        meta: meta.clone(),
        reply,
    };
    if handle.actor.cast(message).is_err() {
        handle.queued.fetch_sub(n, Ordering::AcqRel);
        return None;
    }
    Some(receiver)
}

/// Counts what the front door refused (product actors count the rest).
fn count_rejections(slots: &[Slot], kinds: &[Option<&'static str>]) {
    let mut counts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (index, slot) in slots.iter().enumerate() {
        let kind = kinds.get(index).copied().flatten().unwrap_or("unknown");
        match slot {
            Slot::Rejected { reason, .. } => {
                *counts.entry((kind, "rejected", reason)).or_default() += 1
            }
            Slot::Waiting => {
                *counts
                    .entry((kind, "unavailable", "overloaded"))
                    .or_default() += 1
            }
            Slot::Done(_) => {}
        }
    }
    for ((kind, outcome, reason), n) in counts {
        metrics::counter!(telemetry::INTERACTIONS_TOTAL, "type" => kind, "outcome" => outcome, "reason" => reason)
            .increment(n);
    }
}

/// One debug line per request, in the request's span (so it carries the request
/// id): what was stored and the rewards it earned.
fn log_outcome(slots: &[Slot]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let (mut accepted, mut duplicate, mut rewards, mut refused) = (0, 0, 0, 0);
    for slot in slots {
        match slot {
            Slot::Done(ItemResult::Accepted { rewards: r, .. }) => {
                accepted += 1;
                rewards += r.len();
            }
            Slot::Done(ItemResult::Duplicate { .. }) => duplicate += 1,
            _ => refused += 1,
        }
    }
    tracing::debug!(
        accepted,
        duplicate,
        refused,
        rewards,
        "interactions answered"
    );
}

/// One item's result as answered: serialized straight from the result, without
/// building a JSON tree (this runs for every interaction).
pub(super) struct ItemView<'a>(pub &'a ItemResult);

impl Serialize for ItemView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            ItemResult::Accepted {
                id,
                referral,
                rewards,
                refund,
            } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("status", "accepted")?;
                map.serialize_entry("rewards", &RewardsView(rewards))?;
                if let Some(outcome) = referral {
                    map.serialize_entry("referral", outcome.as_str())?;
                }
                if let Some(refund) = refund {
                    map.serialize_entry(
                        "refund",
                        &RefundView {
                            purchase_id: refund.purchase_id,
                            cancelled_rewards: refund.cancelled,
                            kept_rewards: refund.kept,
                        },
                    )?;
                }
            }
            ItemResult::Duplicate { id } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("status", "duplicate")?;
                map.serialize_entry("rewards", &[(); 0])?;
            }
            ItemResult::Unavailable => map.serialize_entry("status", "unavailable")?,
        }
        map.end()
    }
}

/// An interaction's rewards as answered, each serialized from the granted reward
/// itself, without intermediate strings: addresses as `Address` serializes them
/// (`0x` and lowercase hex, from a stack buffer), amounts through one too.
struct RewardsView<'a>(&'a [GrantedReward]);

impl Serialize for RewardsView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(RewardView))
    }
}

struct RewardView<'a>(&'a GrantedReward);

impl Serialize for RewardView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let reward = self.0;
        let mut map = serializer.serialize_struct("Reward", 5)?;
        map.serialize_field("campaign_id", &reward.campaign_id)?;
        map.serialize_field("recipient", &reward.recipient)?;
        map.serialize_field("recipient_type", reward.recipient_type.as_str())?;
        map.serialize_field("token", &reward.token)?;
        map.serialize_field("amount", &DecimalView(reward.amount))?;
        map.end()
    }
}

/// A token amount in decimal, as a string (JSON numbers cannot hold 256 bits).
struct DecimalView(U256);

impl Serialize for DecimalView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut digits = Digits {
            bytes: [0; 78],
            len: 0,
        };
        std::fmt::Write::write_fmt(&mut digits, format_args!("{}", self.0))
            .map_err(serde::ser::Error::custom)?;
        let text =
            std::str::from_utf8(&digits.bytes[..digits.len]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// The decimal digits of a U256 (at most 78), written on the stack.
struct Digits {
    bytes: [u8; 78],
    len: usize,
}

impl std::fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[derive(Serialize)]
struct RefundView {
    purchase_id: Option<uuid::Uuid>,
    cancelled_rewards: u32,
    kept_rewards: u32,
}

/// A batch answer.
#[derive(Serialize)]
struct BatchView<'a> {
    interactions: Vec<SlotView<'a>>,
}

/// An item of a batch answer.
#[derive(Serialize)]
#[serde(untagged)]
enum SlotView<'a> {
    Result(ItemView<'a>),
    Rejected {
        status: &'static str,
        errors: &'a [FieldError],
    },
}

pub(super) fn unavailable(ctx: &AppContext) -> ApiError {
    ApiError::Unavailable {
        detail: "the service is overloaded or the database is unavailable; nothing was stored, retry later".into(),
        retry_after_secs: ctx.settings.ingest.retry_after_secs,
    }
}

fn render(ctx: &AppContext, batch: bool, slots: Vec<Slot>) -> Response {
    if !batch {
        let slot = slots.into_iter().next().expect("one slot");
        return match slot {
            Slot::Done(ItemResult::Unavailable) | Slot::Waiting => unavailable(ctx).into_response(),
            Slot::Done(result) => json_reply(&ItemView(&result), StatusCode::ACCEPTED),
            Slot::Rejected {
                errors,
                reason: "origin",
            } => ApiError::Forbidden(errors[0].message.clone()).into_response(),
            Slot::Rejected { errors, .. } => ApiError::Invalid(errors).into_response(),
        };
    }
    let stored = slots.iter().any(|s| {
        matches!(
            s,
            Slot::Done(ItemResult::Accepted { .. } | ItemResult::Duplicate { .. })
        )
    });
    let any_unavailable = slots
        .iter()
        .any(|s| matches!(s, Slot::Waiting | Slot::Done(ItemResult::Unavailable)));
    if !stored && any_unavailable {
        return unavailable(ctx).into_response();
    }
    if !stored {
        let errors = slots
            .into_iter()
            .enumerate()
            .flat_map(|(i, slot)| match slot {
                Slot::Rejected { errors, .. } => errors
                    .into_iter()
                    .map(|e| FieldError::new(format!("interactions[{i}].{}", e.field), e.message))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        return ApiError::Invalid(errors).into_response();
    }
    let items: Vec<SlotView> = slots
        .iter()
        .map(|slot| match slot {
            Slot::Done(result) => SlotView::Result(ItemView(result)),
            Slot::Waiting => SlotView::Result(ItemView(&ItemResult::Unavailable)),
            Slot::Rejected { errors, .. } => SlotView::Rejected {
                status: "rejected",
                errors,
            },
        })
        .collect();
    let mut response = json_reply(
        &BatchView {
            interactions: items,
        },
        StatusCode::ACCEPTED,
    );
    if any_unavailable {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ctx.settings.ingest.retry_after_secs),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, U256};
    use uuid::Uuid;

    use super::ItemView;
    use crate::actors::product::{GrantedReward, ItemResult};
    use crate::domain::campaign::RecipientType;
    use crate::domain::ids::to_hex;

    #[test]
    fn rewards_are_answered_as_strings_of_hex_and_decimal() {
        let (recipient, token) = (Address::repeat_byte(0xab), Address::repeat_byte(0x07));
        let rewards = [U256::MAX, U256::from(1u8)].map(|amount| GrantedReward {
            campaign_id: 42,
            recipient,
            recipient_type: RecipientType::Referrer(2),
            token,
            amount,
        });
        let result = ItemResult::Accepted {
            id: Uuid::nil(),
            referral: None,
            rewards: rewards.to_vec(),
            refund: None,
        };
        let answer = serde_json::to_value(ItemView(&result)).unwrap();
        let shown = &answer["rewards"];
        for (i, reward) in rewards.iter().enumerate() {
            assert_eq!(shown[i]["campaign_id"], 42);
            assert_eq!(shown[i]["recipient"], to_hex(recipient));
            assert_eq!(shown[i]["recipient_type"], "referrer_l2");
            assert_eq!(shown[i]["token"], to_hex(token));
            assert_eq!(shown[i]["amount"], reward.amount.to_string());
        }
    }
}
