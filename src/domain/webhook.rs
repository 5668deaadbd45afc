//! Shop webhooks (SPEC §6): which platform signs how, the product's secrets and
//! their rotation, and how each platform's order becomes a purchase interaction.

use alloy::primitives::{Address, B256};
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::ids::parse_account;
use super::interaction::{
    AnalyticsInput, Interaction, InteractionType, InvalidField, MAX_DATA_BYTES, MAX_DATA_DEPTH,
    depth,
};
use crate::config::Secret;

/// Longest platform order id.
pub const MAX_ORDER_ID: usize = 255;
/// Longest amount or currency text kept from an order.
const MAX_SHORT_TEXT: usize = 64;
/// Grace period of the previous secret after a rotation, by default.
pub const DEFAULT_GRACE_SECS: u64 = 24 * 3600;
/// Longest accepted grace period.
pub const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Shopify,
    Woocommerce,
    Custom,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Self::Shopify, Self::Woocommerce, Self::Custom];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shopify => "shopify",
            Self::Woocommerce => "woocommerce",
            Self::Custom => "custom",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The header carrying the body's signature.
    pub fn signature_header(self) -> &'static str {
        match self {
            Self::Shopify => "x-shopify-hmac-sha256",
            Self::Woocommerce => "x-wc-webhook-signature",
            Self::Custom => "x-signature",
        }
    }

    /// The header naming the event, when the platform sends one.
    pub fn topic_header(self) -> Option<&'static str> {
        match self {
            Self::Shopify => Some("x-shopify-topic"),
            Self::Woocommerce => Some("x-wc-webhook-topic"),
            Self::Custom => None,
        }
    }
}

/// A product's webhook settings (`products.webhook_config`). `Debug` never shows
/// the secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub platform: Platform,
    pub secret: Secret,
    /// The secret before the last rotation, accepted until `previous_valid_until`.
    pub previous_secret: Option<Secret>,
    pub previous_valid_until: Option<DateTime<Utc>>,
}

/// The stored form: secrets in clear (the service needs them to verify).
#[derive(Serialize, Deserialize)]
struct StoredConfig {
    platform: Platform,
    secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_valid_until: Option<DateTime<Utc>>,
}

impl WebhookConfig {
    /// Reads the stored JSON; `None` if it is not a webhook configuration.
    pub fn from_stored(value: &Value) -> Option<Self> {
        let stored = StoredConfig::deserialize(value).ok()?;
        Some(Self {
            platform: stored.platform,
            secret: Secret::new(stored.secret),
            previous_secret: stored.previous_secret.map(Secret::new),
            previous_valid_until: stored.previous_valid_until,
        })
    }

    /// The JSON to store.
    pub fn to_stored(&self) -> Value {
        serde_json::to_value(StoredConfig {
            platform: self.platform,
            secret: self.secret.expose().to_owned(),
            previous_secret: self.previous_secret.as_ref().map(|s| s.expose().to_owned()),
            previous_valid_until: self.previous_valid_until,
        })
        .expect("plain data serializes")
    }

    /// The settings after setting `secret` at `now`: the current secret (if any)
    /// stays valid for `grace_secs`, whatever the platform becomes. Setting the
    /// current secret again (a retried request, a platform change) keeps the
    /// grace of the rotation that made it current.
    pub fn rotate(
        current: Option<&WebhookConfig>,
        platform: Platform,
        secret: Secret,
        now: DateTime<Utc>,
        grace_secs: u64,
    ) -> WebhookConfig {
        let (previous_secret, previous_valid_until) = match current {
            Some(c) if c.secret == secret => (c.previous_secret.clone(), c.previous_valid_until),
            Some(c) if grace_secs > 0 => (
                Some(c.secret.clone()),
                Some(now + chrono::Duration::seconds(grace_secs as i64)),
            ),
            _ => (None, None),
        };
        WebhookConfig {
            platform,
            secret,
            previous_secret,
            previous_valid_until,
        }
    }

    /// The secrets a signature may be made with at `now`, current first.
    pub fn secrets_at(&self, now: DateTime<Utc>) -> Vec<&[u8]> {
        let mut secrets = vec![self.secret.expose().as_bytes()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_valid_until)
            && now < until
        {
            secrets.push(previous.expose().as_bytes());
        }
        secrets
    }
}

/// A new random secret: 32 bytes, hex.
pub fn generate_secret() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 32]>()))
}

/// Checks a chosen secret: long enough to resist guessing, printable.
pub fn validate_secret(secret: &str) -> Result<(), &'static str> {
    if !(16..=256).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 16 to 256 printable ASCII characters");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is not in the platform's encoding")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Verifies the platform's signature header over the raw body against each secret
/// (HMAC-SHA256, compared in constant time).
pub fn verify(
    platform: Platform,
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[&[u8]],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let text = std::str::from_utf8(header)
        .map_err(|_| SignatureError::Malformed)?
        .trim();
    let signature = match platform {
        Platform::Shopify | Platform::Woocommerce => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SignatureError::Malformed)?,
        Platform::Custom => {
            let hex_text = text
                .strip_prefix("sha256=")
                .ok_or(SignatureError::Malformed)?;
            hex::decode(hex_text).map_err(|_| SignatureError::Malformed)?
        }
    };
    if signature.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let matches = secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The signature header value a platform would send for `body` (tests, tools).
pub fn sign(platform: Platform, secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    match platform {
        Platform::Shopify | Platform::Woocommerce => {
            base64::engine::general_purpose::STANDARD.encode(digest)
        }
        Platform::Custom => format!("sha256={}", hex::encode(digest)),
    }
}

/// What an order's state means for rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderOutcome {
    /// Paid or completed: `purchase.completed`.
    Paid,
    /// Refunded or cancelled: `purchase.refunded`.
    Refunded,
}

/// One order event, read from a verified body.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub platform: Platform,
    pub id: String,
    pub outcome: OrderOutcome,
    /// The platform's own status text.
    pub status: String,
    /// The buyer's wallet; `None`: stored, never rewarded.
    pub wallet: Option<Address>,
    /// A wallet attribute that is not an address (kept for support, truncated).
    pub invalid_wallet: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    /// Custom platform only: the order's items, as sent.
    pub items: Option<Value>,
}

/// A verified webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    Order(Order),
    /// Acknowledged and not stored: an event that is not an order state this
    /// service acts on (a pending order, a product update, a partial refund…).
    Ignored(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> Vec<InvalidField> {
    vec![InvalidField {
        field,
        message: message.into(),
    }]
}

/// Reads a delivery's body (already verified) for `platform`; `topic` is the
/// platform's topic header, when sent.
pub fn parse_event(
    platform: Platform,
    topic: Option<&str>,
    body: &[u8],
) -> Result<WebhookEvent, Vec<InvalidField>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid("body", format!("is not JSON: {e}")))?;
    let Value::Object(order) = value else {
        return Err(invalid("body", "must be a JSON object"));
    };
    match platform {
        Platform::Shopify => shopify(topic, &order),
        Platform::Woocommerce => woocommerce(topic, &order),
        Platform::Custom => custom(&order),
    }
}

fn shopify(
    topic: Option<&str>,
    order: &Map<String, Value>,
) -> Result<WebhookEvent, Vec<InvalidField>> {
    if let Some(topic) = topic
        && !topic.starts_with("orders/")
    {
        return Ok(WebhookEvent::Ignored(format!(
            "topic {topic:?} is not an order event"
        )));
    }
    let id = order_id(order.get("id"))?;
    let financial = text(order.get("financial_status")).unwrap_or_default();
    let cancelled = order.get("cancelled_at").is_some_and(|v| !v.is_null());
    let outcome = if topic == Some("orders/cancelled")
        || cancelled
        || matches!(financial.as_str(), "refunded" | "voided")
    {
        OrderOutcome::Refunded
    } else if financial == "paid" {
        OrderOutcome::Paid
    } else {
        return Ok(WebhookEvent::Ignored(format!(
            "financial_status {financial:?} is neither paid nor refunded"
        )));
    };
    let status = if cancelled && financial.is_empty() {
        "cancelled".to_owned()
    } else {
        financial
    };
    let wallet = attribute(order.get("note_attributes"), "name", "value");
    Ok(WebhookEvent::Order(with_wallet(
        Order {
            platform: Platform::Shopify,
            id,
            outcome,
            status,
            wallet: None,
            invalid_wallet: None,
            amount: short(order.get("total_price")),
            currency: short(order.get("currency")),
            items: None,
        },
        wallet,
    )))
}

fn woocommerce(
    topic: Option<&str>,
    order: &Map<String, Value>,
) -> Result<WebhookEvent, Vec<InvalidField>> {
    if let Some(topic) = topic
        && !matches!(topic, "order.created" | "order.updated")
    {
        return Ok(WebhookEvent::Ignored(format!(
            "topic {topic:?} is not an order state"
        )));
    }
    let id = order_id(order.get("id"))?;
    let status = text(order.get("status")).ok_or_else(|| invalid("status", "is required"))?;
    let outcome = match status.as_str() {
        "completed" | "processing" => OrderOutcome::Paid,
        "refunded" | "cancelled" => OrderOutcome::Refunded,
        other => {
            return Ok(WebhookEvent::Ignored(format!(
                "status {other:?} is neither paid nor refunded"
            )));
        }
    };
    let wallet = attribute(order.get("meta_data"), "key", "value");
    Ok(WebhookEvent::Order(with_wallet(
        Order {
            platform: Platform::Woocommerce,
            id,
            outcome,
            status,
            wallet: None,
            invalid_wallet: None,
            amount: short(order.get("total")),
            currency: short(order.get("currency")),
            items: None,
        },
        wallet,
    )))
}

/// `{"id", "status": paid|refunded|cancelled, "wallet"?, "amount", "currency", "items"?}`.
fn custom(order: &Map<String, Value>) -> Result<WebhookEvent, Vec<InvalidField>> {
    const FIELDS: [&str; 6] = ["id", "status", "wallet", "amount", "currency", "items"];
    if let Some(unknown) = order.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid("body", format!("unknown field {unknown:?}")));
    }
    let id = match order.get("id") {
        Some(Value::String(_)) => order_id(order.get("id"))?,
        _ => return Err(invalid("id", "must be a non-empty string")),
    };
    let status = text(order.get("status")).ok_or_else(|| invalid("status", "is required"))?;
    let outcome = match status.as_str() {
        "paid" => OrderOutcome::Paid,
        "refunded" | "cancelled" => OrderOutcome::Refunded,
        _ => return Err(invalid("status", "must be paid, refunded or cancelled")),
    };
    let amount = match order.get("amount") {
        Some(Value::String(a)) if is_decimal(a) => a.clone(),
        _ => {
            return Err(invalid(
                "amount",
                "must be a decimal string such as \"12.90\"",
            ));
        }
    };
    let currency = match order.get("currency") {
        Some(Value::String(c)) if (1..=MAX_SHORT_TEXT).contains(&c.len()) => c.clone(),
        _ => {
            return Err(invalid(
                "currency",
                "must be a currency code such as \"EUR\"",
            ));
        }
    };
    let items = match order.get("items") {
        None | Some(Value::Null) => None,
        Some(items @ Value::Array(_)) => Some(items.clone()),
        Some(_) => return Err(invalid("items", "must be an array")),
    };
    let wallet = match order.get("wallet") {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) => Some(w.clone()),
        Some(_) => return Err(invalid("wallet", "must be an address string")),
    };
    Ok(WebhookEvent::Order(with_wallet(
        Order {
            platform: Platform::Custom,
            id,
            outcome,
            status,
            wallet: None,
            invalid_wallet: None,
            amount: Some(amount),
            currency: Some(currency),
            items,
        },
        wallet,
    )))
}

fn with_wallet(mut order: Order, wallet: Option<String>) -> Order {
    match wallet.as_deref().map(str::trim) {
        None | Some("") => {}
        Some(text) => match parse_account(&text.to_ascii_lowercase()) {
            Ok(address) => order.wallet = Some(address),
            Err(_) => order.invalid_wallet = Some(text.chars().take(MAX_SHORT_TEXT).collect()),
        },
    }
    order
}

/// A platform order id: a non-empty string or an integer, at most 255 bytes.
fn order_id(value: Option<&Value>) -> Result<String, Vec<InvalidField>> {
    match value {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ORDER_ID => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(invalid(
            "id",
            format!(
                "must be the order id (a non-empty string of at most {MAX_ORDER_ID} bytes, or an integer)"
            ),
        )),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if s.len() <= MAX_SHORT_TEXT => Some(s.clone()),
        _ => None,
    }
}

/// A short string or number, as text.
fn short(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::Number(n)) => Some(n.to_string()),
        other => text(other),
    }
}

/// The value of the `[{key_field: "wallet", value_field: …}]` entry.
fn attribute(list: Option<&Value>, key_field: &str, value_field: &str) -> Option<String> {
    list?.as_array()?.iter().find_map(|entry| {
        let name = entry.get(key_field)?.as_str()?;
        if !name.eq_ignore_ascii_case("wallet") {
            return None;
        }
        entry.get(value_field)?.as_str().map(str::to_owned)
    })
}

fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && text.len() <= MAX_SHORT_TEXT
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

impl Order {
    /// The interaction this order event is: `purchase.completed` or
    /// `purchase.refunded`, keyed by the platform order id so that redeliveries
    /// (and an SDK report of the same order) are duplicates.
    pub fn interaction(&self, product_id: B256) -> Result<Interaction, Vec<InvalidField>> {
        let kind = match self.outcome {
            OrderOutcome::Paid => InteractionType::PurchaseCompleted,
            OrderOutcome::Refunded => InteractionType::PurchaseRefunded,
        };
        let mut data = json!({
            "order_id": self.id,
            "platform": self.platform.as_str(),
            "status": self.status,
        });
        for (key, value) in [
            ("amount", &self.amount),
            ("currency", &self.currency),
            ("invalid_wallet", &self.invalid_wallet),
        ] {
            if let Some(value) = value {
                data[key] = Value::String(value.clone());
            }
        }
        if let Some(items) = &self.items {
            data["items"] = items.clone();
        }
        if data.to_string().len() > MAX_DATA_BYTES || depth(&data) > MAX_DATA_DEPTH {
            return Err(invalid(
                "items",
                format!(
                    "the order must fit in {MAX_DATA_BYTES} bytes and {MAX_DATA_DEPTH} levels of nesting"
                ),
            ));
        }
        Ok(Interaction {
            product_id,
            kind,
            data,
            referrer: None,
            idempotency_key: None,
            analytics: AnalyticsInput::default(),
        })
    }
}

#[cfg(test)]
mod tests;
