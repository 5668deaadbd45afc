//! A campaign as the business API receives it, and its validation into the
//! engine's terms. A PATCH is the stored campaign's input with the patch's keys
//! laid over it, validated the same way.

use alloy::primitives::{Address, U256};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::campaign::{BPS, MAX_DEPTH, RewardSpec};
use super::ids::parse_address;
use super::interaction::{InteractionType, InvalidField};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trigger: String,
    #[serde(default)]
    pub requires_referral: bool,
    pub token: String,
    pub reward: RewardInput,
    #[serde(default = "default_user_bps")]
    pub user_bps: u32,
    #[serde(default = "default_deperdition_bps")]
    pub deperdition_bps: u32,
    #[serde(default = "default_max_depth")]
    pub max_depth: u8,
    #[serde(default)]
    pub max_rewards_per_user: Option<u32>,
    #[serde(default = "zero")]
    pub budget_cap: String,
    #[serde(default)]
    pub lockup_seconds: u64,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

fn default_user_bps() -> u32 {
    5_000
}
fn default_deperdition_bps() -> u32 {
    8_000
}
fn default_max_depth() -> u8 {
    MAX_DEPTH
}
fn zero() -> String {
    "0".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardInput {
    Fixed {
        amount: String,
    },
    Range {
        min: String,
        max: String,
        beta_bps: u32,
    },
}

/// A validated campaign definition.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignSpec {
    pub name: String,
    pub description: String,
    pub trigger: InteractionType,
    pub requires_referral: bool,
    pub token: Address,
    pub reward: RewardSpec,
    pub user_bps: u32,
    pub deperdition_bps: u32,
    pub max_depth: u8,
    pub max_rewards_per_user: Option<u32>,
    pub budget_cap: U256,
    pub lockup_seconds: u64,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub metadata: Value,
}

/// Reward amounts (fixed, or a range's bounds) have at most 60 decimal digits:
/// below 10^60 base units (10^42 tokens of 18 decimals). That keeps every product
/// of the formula (amount × bps, a range's width × 2^53) inside 256 bits.
pub const MAX_REWARD_DIGITS: usize = 60;

/// The largest `beta_bps` (β = 100): the draws of a larger β all sit at the
/// range's minimum.
pub const MAX_BETA_BPS: u32 = 1_000_000;

/// The largest `max_rewards_per_user` (it is stored as a 32-bit integer).
pub const MAX_REWARDS_PER_USER: u32 = i32::MAX as u32;

/// A non-negative integer amount in base units, as a decimal string.
pub fn parse_amount(text: &str) -> Option<U256> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(text, 10).ok()
}

impl CampaignInput {
    pub fn validate(self) -> Result<CampaignSpec, Vec<InvalidField>> {
        let mut errors = Vec::new();
        let mut bad = |field: &'static str, message: &str| {
            errors.push(InvalidField {
                field,
                message: message.to_owned(),
            })
        };
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            bad("name", "must be 1 to 200 characters");
        }
        if self.description.chars().count() > 2_000 {
            bad("description", "must be at most 2000 characters");
        }
        let trigger = match InteractionType::parse(&self.trigger) {
            Some(InteractionType::PurchaseRefunded) => {
                bad(
                    "trigger",
                    "purchase.refunded cancels rewards; it cannot trigger them",
                );
                None
            }
            Some(kind) => Some(kind),
            None => {
                bad("trigger", "must be an interaction type");
                None
            }
        };
        let token = parse_address(&self.token).ok();
        if token.is_none() {
            bad("token", "must be a 0x-prefixed 20-byte hex address");
        }
        let reward_amount =
            |text: &str| parse_amount(text).filter(|_| text.len() <= MAX_REWARD_DIGITS);
        let reward = match &self.reward {
            RewardInput::Fixed { amount } => match reward_amount(amount) {
                Some(amount) if !amount.is_zero() => Some(RewardSpec::Fixed { amount }),
                _ => {
                    bad(
                        "reward.amount",
                        "must be a positive integer in base units below 10^60, as a decimal string",
                    );
                    None
                }
            },
            RewardInput::Range { min, max, beta_bps } => {
                let beta_ok = (1..=MAX_BETA_BPS).contains(beta_bps);
                match (reward_amount(min), reward_amount(max)) {
                    (Some(min), Some(max)) if min <= max && !max.is_zero() && beta_ok => {
                        Some(RewardSpec::Range {
                            min,
                            max,
                            beta_bps: *beta_bps,
                        })
                    }
                    (Some(_), Some(_)) if !beta_ok => {
                        bad("reward.beta_bps", "must be between 1 and 1000000");
                        None
                    }
                    (Some(_), Some(_)) => {
                        bad(
                            "reward.min",
                            "must not exceed reward.max, and max must be positive",
                        );
                        None
                    }
                    _ => {
                        bad(
                            "reward",
                            "min and max must be integers in base units below 10^60, as decimal strings",
                        );
                        None
                    }
                }
            }
        };
        if self.user_bps > BPS {
            bad("user_bps", "must be between 0 and 10000");
        }
        if self.deperdition_bps > BPS {
            bad("deperdition_bps", "must be between 0 and 10000");
        }
        if self.max_depth > MAX_DEPTH {
            bad("max_depth", "must be between 0 and 5");
        }
        if self
            .max_rewards_per_user
            .is_some_and(|n| n == 0 || n > MAX_REWARDS_PER_USER)
        {
            bad(
                "max_rewards_per_user",
                "must be between 1 and 2147483647, or null for no limit",
            );
        }
        let budget_cap = parse_amount(&self.budget_cap);
        if budget_cap.is_none() {
            bad(
                "budget_cap",
                "must be a non-negative integer in base units (\"0\": unlimited)",
            );
        }
        if self.lockup_seconds > 10 * 365 * 24 * 3600 {
            bad("lockup_seconds", "must be at most ten years");
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at)
            && start >= end
        {
            bad("ends_at", "must be after starts_at");
        }
        if Value::Object(self.metadata.clone()).to_string().len() > 16 * 1024 {
            bad("metadata", "must be at most 16384 bytes");
        }
        match (trigger, token, reward, budget_cap, errors.is_empty()) {
            (Some(trigger), Some(token), Some(reward), Some(budget_cap), true) => {
                Ok(CampaignSpec {
                    name,
                    description: self.description,
                    trigger,
                    requires_referral: self.requires_referral,
                    token,
                    reward,
                    user_bps: self.user_bps,
                    deperdition_bps: self.deperdition_bps,
                    max_depth: self.max_depth,
                    max_rewards_per_user: self.max_rewards_per_user,
                    budget_cap,
                    lockup_seconds: self.lockup_seconds,
                    starts_at: self.starts_at,
                    ends_at: self.ends_at,
                    metadata: Value::Object(self.metadata),
                })
            }
            _ => Err(errors),
        }
    }
}

/// Lays a PATCH object over a stored campaign's input (top-level keys replace).
pub fn apply_patch(
    current: &CampaignInput,
    patch: Map<String, Value>,
) -> Result<CampaignInput, String> {
    let mut merged = match serde_json::to_value(current) {
        Ok(Value::Object(map)) => map,
        _ => return Err("campaign cannot be represented".into()),
    };
    for (key, value) in patch {
        merged.insert(key, value);
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> CampaignInput {
        serde_json::from_value(value).unwrap()
    }

    const TOKEN: &str = "0x7070707070707070707070707070707070707070";

    #[test]
    fn defaults_and_a_valid_range_campaign() {
        let spec = input(
            json!({"name": "Spring", "trigger": "purchase.completed", "token": TOKEN,
            "reward": {"type": "range", "min": "10", "max": "1000", "beta_bps": 20000}}),
        )
        .validate()
        .unwrap();
        assert_eq!(
            (spec.user_bps, spec.deperdition_bps, spec.max_depth),
            (5_000, 8_000, 5)
        );
        assert_eq!(spec.budget_cap, U256::ZERO);
        assert!(matches!(
            spec.reward,
            RewardSpec::Range {
                beta_bps: 20_000,
                ..
            }
        ));
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = input(json!({"name": "", "trigger": "purchase.refunded", "token": "0x1",
            "reward": {"type": "fixed", "amount": "-5"}, "user_bps": 10001, "deperdition_bps": 20000,
            "max_depth": 6, "max_rewards_per_user": 0, "budget_cap": "1e18", "lockup_seconds": 999999999999u64,
            "starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}))
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "name",
                "trigger",
                "token",
                "reward.amount",
                "user_bps",
                "deperdition_bps",
                "max_depth",
                "max_rewards_per_user",
                "budget_cap",
                "lockup_seconds",
                "ends_at"
            ]
        );
        let errors = input(
            json!({"name": "x", "trigger": "webshop.open", "token": TOKEN,
            "reward": {"type": "range", "min": "10", "max": "5", "beta_bps": 1}}),
        )
        .validate()
        .unwrap_err();
        assert_eq!(errors[0].field, "reward.min");
    }

    #[test]
    fn values_the_formula_or_the_database_cannot_hold_are_refused() {
        let with = |reward: Value, cap: Value| {
            let mut body = json!({"name": "x", "trigger": "webshop.open", "token": TOKEN,
                "reward": reward});
            body["max_rewards_per_user"] = cap;
            input(body).validate()
        };
        let largest = "9".repeat(MAX_REWARD_DIGITS);
        let spec = with(
            json!({"type": "fixed", "amount": largest}),
            json!(2147483647),
        )
        .unwrap();
        // The formula's products of the largest amount stay inside 256 bits.
        let RewardSpec::Fixed { amount } = spec.reward else {
            panic!("fixed");
        };
        assert!(amount.checked_mul(U256::from(BPS)).is_some());
        assert!(amount.checked_mul(U256::from(1u64 << 53)).is_some());
        let too_large = format!("1{}", "0".repeat(MAX_REWARD_DIGITS));
        let field = |r: Result<CampaignSpec, Vec<InvalidField>>| r.unwrap_err()[0].field;
        assert_eq!(
            field(with(
                json!({"type": "fixed", "amount": too_large}),
                Value::Null
            )),
            "reward.amount"
        );
        assert_eq!(
            field(with(
                json!({"type": "range", "min": "1", "max": too_large, "beta_bps": 1}),
                Value::Null
            )),
            "reward"
        );
        assert_eq!(
            field(with(
                json!({"type": "range", "min": "1", "max": "2", "beta_bps": MAX_BETA_BPS + 1}),
                Value::Null
            )),
            "reward.beta_bps"
        );
        assert_eq!(
            field(with(
                json!({"type": "fixed", "amount": "1"}),
                json!(2147483648u64)
            )),
            "max_rewards_per_user"
        );
    }

    #[test]
    fn amounts_are_plain_decimal_integers() {
        assert_eq!(parse_amount("0"), Some(U256::ZERO));
        assert_eq!(
            parse_amount(
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
            ),
            Some(U256::MAX)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e3",
            " 1",
            "0x10",
            "115792089237316195423570985008687907853269984665640564039457584007913129639936",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_patch_replaces_top_level_keys() {
        let current = input(
            json!({"name": "A", "trigger": "webshop.open", "token": TOKEN,
            "reward": {"type": "fixed", "amount": "5"}}),
        );
        let patch = json!({"name": "B", "reward": {"type": "fixed", "amount": "7"}});
        let merged = apply_patch(&current, patch.as_object().unwrap().clone()).unwrap();
        let spec = merged.validate().unwrap();
        assert_eq!(spec.name, "B");
        assert_eq!(
            spec.reward,
            RewardSpec::Fixed {
                amount: U256::from(7u8)
            }
        );
        assert!(apply_patch(&current, json!({"colour": 1}).as_object().unwrap().clone()).is_err());
    }
}
