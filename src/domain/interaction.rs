//! Interactions as the SDK sends them: the known types, per-field validation, and
//! the keys that make a retry a duplicate (SPEC §4 rules 1 and 2).

use std::hash::{Hash, Hasher};

use alloy::primitives::Address;
use serde::Deserialize;
use serde_json::Value;

use super::ids::{ProductId, parse_account, parse_bytes32};

/// Largest accepted `data` object, serialized.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Deepest nesting of arrays and objects in `data`.
pub const MAX_DATA_DEPTH: usize = 16;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Longest analytics id.
pub const MAX_ANALYTICS_ID: usize = 255;
/// Most interactions in one request.
pub const MAX_BATCH: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InteractionType {
    ReferralReferred,
    ReferralLinkCreation,
    PurchaseStarted,
    PurchaseCompleted,
    PurchaseRefunded,
    WebshopOpen,
    PressOpenArticle,
    PressReadArticle,
    RetailCustomerMeeting,
}

impl InteractionType {
    pub const ALL: [InteractionType; 9] = [
        Self::ReferralReferred,
        Self::ReferralLinkCreation,
        Self::PurchaseStarted,
        Self::PurchaseCompleted,
        Self::PurchaseRefunded,
        Self::WebshopOpen,
        Self::PressOpenArticle,
        Self::PressReadArticle,
        Self::RetailCustomerMeeting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReferralReferred => "referral.referred",
            Self::ReferralLinkCreation => "referral.link_creation",
            Self::PurchaseStarted => "purchase.started",
            Self::PurchaseCompleted => "purchase.completed",
            Self::PurchaseRefunded => "purchase.refunded",
            Self::WebshopOpen => "webshop.open",
            Self::PressOpenArticle => "press.open_article",
            Self::PressReadArticle => "press.read_article",
            Self::RetailCustomerMeeting => "retail.customer_meeting",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// `purchase.refunded` only arrives by signed webhook (SPEC §6).
    pub fn allowed_from_sdk(self) -> bool {
        self != Self::PurchaseRefunded
    }

    fn is_purchase(self) -> bool {
        matches!(
            self,
            Self::PurchaseStarted | Self::PurchaseCompleted | Self::PurchaseRefunded
        )
    }
}

/// One interaction as received, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionInput {
    pub product_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub referrer: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub analytics: Option<AnalyticsInput>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsInput {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub profile_id: Option<String>,
    #[serde(default)]
    pub fallback_fingerprint: Option<String>,
}

/// A validated interaction, ready for its product actor.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub product_id: ProductId,
    pub kind: InteractionType,
    /// Always a JSON object.
    pub data: Value,
    /// Only on `referral.referred` (required there).
    pub referrer: Option<Address>,
    pub idempotency_key: Option<String>,
    pub analytics: AnalyticsInput,
}

/// A field that failed validation; `field` is relative to the interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

impl InteractionInput {
    /// Static checks that need no product state. All failures are reported.
    pub fn validate(self) -> Result<Interaction, Vec<InvalidField>> {
        let mut errors = Vec::new();
        let product_id = parse_bytes32(&self.product_id)
            .map_err(|e| errors.push(invalid("product_id", e.to_string())))
            .ok();
        let kind = match InteractionType::parse(&self.kind) {
            Some(kind) if kind.allowed_from_sdk() => Some(kind),
            Some(_) => {
                errors.push(invalid(
                    "type",
                    "purchase.refunded is only accepted by webhook",
                ));
                None
            }
            None => {
                errors.push(invalid(
                    "type",
                    format!("unknown interaction type {:?}", self.kind),
                ));
                None
            }
        };
        let data = match self.data {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                errors.push(invalid("data", "must be a JSON object"));
                Value::Null
            }
        };
        if data.is_object() && data.to_string().len() > MAX_DATA_BYTES {
            errors.push(invalid(
                "data",
                format!("must be at most {MAX_DATA_BYTES} bytes"),
            ));
        } else if depth(&data) > MAX_DATA_DEPTH {
            errors.push(invalid(
                "data",
                format!("must nest at most {MAX_DATA_DEPTH} levels"),
            ));
        }
        let referrer = match (&self.referrer, kind) {
            (Some(text), Some(InteractionType::ReferralReferred)) => parse_account(text)
                .map_err(|e| errors.push(invalid("referrer", e.to_string())))
                .ok(),
            (None, Some(InteractionType::ReferralReferred)) => {
                errors.push(invalid("referrer", "is required for referral.referred"));
                None
            }
            (Some(_), Some(_)) => {
                errors.push(invalid("referrer", "is only accepted on referral.referred"));
                None
            }
            _ => None,
        };
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY)
        {
            errors.push(invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        }
        let analytics = self.analytics.unwrap_or_default();
        for (field, value) in [
            ("analytics.session_id", &analytics.session_id),
            ("analytics.device_id", &analytics.device_id),
            ("analytics.profile_id", &analytics.profile_id),
            (
                "analytics.fallback_fingerprint",
                &analytics.fallback_fingerprint,
            ),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.chars().count() > MAX_ANALYTICS_ID)
            {
                errors.push(invalid(
                    field,
                    format!("must be at most {MAX_ANALYTICS_ID} characters"),
                ));
            }
        }
        if kind.is_some_and(InteractionType::is_purchase) && order_id(&data).is_none() {
            errors.push(invalid(
                "data.order_id",
                "is required for purchases (a non-empty string or a number)",
            ));
        }
        match (product_id, kind, errors.is_empty()) {
            (Some(product_id), Some(kind), true) => Ok(Interaction {
                product_id,
                kind,
                data,
                referrer,
                idempotency_key: self.idempotency_key,
                analytics,
            }),
            _ => Err(errors),
        }
    }
}

/// Nesting depth of a JSON value (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `data.order_id` as text: a non-empty string (≤ 255 bytes) or an integer.
pub fn order_id(data: &Value) -> Option<String> {
    match data.get("order_id")? {
        Value::String(s) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// How a retry is recognised (SPEC §4 rule 2), strongest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// Forever per (product, idempotency key).
    Idempotency(String),
    /// Forever per (product, natural key of the type).
    Natural(String),
    /// Identical (wallet, type, data) within the dedup window.
    Window(u64),
}

impl Interaction {
    /// The natural key stored in `interactions.dedup_key`: the order id for
    /// purchases, referrer+wallet for a referral; none for other types. `wallet` is
    /// `None` for a shop order that names no buyer.
    pub fn natural_key(&self, wallet: Option<Address>) -> Option<String> {
        if self.kind.is_purchase() {
            return order_id(&self.data).map(|id| purchase_key(self.kind, &id));
        }
        match (self.kind, self.referrer, wallet) {
            (InteractionType::ReferralReferred, Some(referrer), Some(wallet)) => {
                Some(format!("{}:{referrer:#x}:{wallet:#x}", self.kind.as_str()))
            }
            _ => None,
        }
    }

    /// The keys under which this interaction is a duplicate of an earlier one.
    pub fn dedup_keys(&self, wallet: Option<Address>) -> Vec<DedupKey> {
        let mut keys = Vec::with_capacity(2);
        if let Some(key) = &self.idempotency_key {
            keys.push(DedupKey::Idempotency(key.clone()));
        }
        if let Some(key) = self.natural_key(wallet) {
            keys.push(DedupKey::Natural(key));
        }
        if keys.is_empty() {
            keys.push(DedupKey::Window(window_hash(wallet, self.kind, &self.data)));
        }
        keys
    }
}

/// The natural key of a purchase of `kind` for an order id.
pub fn purchase_key(kind: InteractionType, order_id: &str) -> String {
    format!("{}:{order_id}", kind.as_str())
}

/// Hash of (wallet, type, data) for the time-window dedup. `serde_json` maps are
/// ordered by key, so equal objects serialize, and hash, equally.
pub fn window_hash(wallet: Option<Address>, kind: InteractionType, data: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    wallet.hash(&mut hasher);
    kind.as_str().hash(&mut hasher);
    data.to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> InteractionInput {
        serde_json::from_value(value).unwrap()
    }

    const PRODUCT: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn every_type_round_trips() {
        for kind in InteractionType::ALL {
            assert_eq!(InteractionType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(InteractionType::parse("page.view"), None);
    }

    #[test]
    fn a_valid_purchase() {
        let interaction = input(json!({"product_id": PRODUCT, "type": "purchase.completed",
            "data": {"order_id": "A-1", "amount": "12990"}, "idempotency_key": "k1",
            "analytics": {"session_id": "s"}}))
        .validate()
        .unwrap();
        assert_eq!(interaction.kind, InteractionType::PurchaseCompleted);
        let wallet = Address::repeat_byte(1);
        assert_eq!(
            interaction.natural_key(Some(wallet)).as_deref(),
            Some("purchase.completed:A-1")
        );
        assert_eq!(
            interaction.dedup_keys(Some(wallet)),
            vec![
                DedupKey::Idempotency("k1".into()),
                DedupKey::Natural("purchase.completed:A-1".into())
            ]
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let errors = input(
            json!({"product_id": "0x12", "type": "page.view", "data": [1],
            "referrer": "0x1", "idempotency_key": "", "analytics": {"device_id": "x".repeat(300)}}),
        )
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "product_id",
                "type",
                "data",
                "idempotency_key",
                "analytics.device_id"
            ]
        );

        let errors = input(json!({"product_id": PRODUCT, "type": "referral.referred"}))
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "referrer");
        let errors = input(json!({"product_id": PRODUCT, "type": "webshop.open",
            "referrer": "0x1111111111111111111111111111111111111111"}))
        .validate()
        .unwrap_err();
        assert_eq!(errors[0].field, "referrer");
        let errors = input(json!({"product_id": PRODUCT, "type": "purchase.started"}))
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "data.order_id");
        let errors = input(json!({"product_id": PRODUCT, "type": "purchase.refunded",
            "data": {"order_id": 1}}))
        .validate()
        .unwrap_err();
        assert_eq!(errors[0].field, "type");
        let mut deep = json!(1);
        for _ in 0..MAX_DATA_DEPTH {
            deep = json!([deep]);
        }
        let errors =
            input(json!({"product_id": PRODUCT, "type": "webshop.open", "data": {"a": deep}}))
                .validate()
                .unwrap_err();
        assert!(errors[0].message.contains("nest"), "{errors:?}");
        let big = "x".repeat(MAX_DATA_BYTES);
        let errors =
            input(json!({"product_id": PRODUCT, "type": "webshop.open", "data": {"a": big}}))
                .validate()
                .unwrap_err();
        assert_eq!(errors[0].field, "data");
    }

    #[test]
    fn window_keys_ignore_key_order_but_not_values() {
        let wallet = Some(Address::repeat_byte(2));
        let a: Value = serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"y":2,"x":3}"#).unwrap();
        let kind = InteractionType::WebshopOpen;
        assert_eq!(window_hash(wallet, kind, &a), window_hash(wallet, kind, &b));
        assert_ne!(window_hash(wallet, kind, &a), window_hash(wallet, kind, &c));
        assert_ne!(
            window_hash(wallet, kind, &a),
            window_hash(Some(Address::repeat_byte(3)), kind, &a)
        );
    }

    #[test]
    fn referral_natural_key_names_both_wallets() {
        let referrer = Address::repeat_byte(0xaa);
        let interaction = input(json!({"product_id": PRODUCT, "type": "referral.referred",
            "referrer": format!("{referrer:#x}")}))
        .validate()
        .unwrap();
        let key = interaction
            .natural_key(Some(Address::repeat_byte(0xbb)))
            .unwrap();
        assert!(
            key.contains(&format!("{referrer:#x}")) && key.contains("bbbb"),
            "{key}"
        );
    }
}
