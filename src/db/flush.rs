//! What one writer flush stores, in one statement: the interactions, the rewards
//! of those actually inserted (a row a unique index refused earned nothing), the
//! campaign budgets they charge (and the campaigns they exhaust), and the acting
//! users' per-campaign counters.
//!
//! One statement is one round trip: outside a transaction it commits by itself,
//! so a flush without refunds costs the writer's lane a single exchange with
//! PostgreSQL however many tables it touches.

use std::collections::{HashMap, HashSet};

use alloy::primitives::U256;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::DbError;
use super::interactions::{self, InteractionRow};
use super::rewards::{RewardRow, UserReward};

// The statement's parts. A flush whose rewards all belong to unlimited
// campaigns charges no budget row (an unlimited campaign's spend is the sum of
// its rewards: `db::campaigns`), and one without per-user caps counts nothing:
// the parts they would not use are left out of the statement. The argument of
// `stored_and_earned!` is what `earned` returns: only the charges read it.
macro_rules! stored_and_earned {
    ($returning:literal) => {
        concat!(
            r#"
WITH stored AS (
    INSERT INTO interactions (id, product_id, wallet, type, data, referrer_wallet, dedup_key,
        idempotency_key, session_id, device_id, profile_id, fallback_fingerprint, source,
        source_ip, user_agent, created_at, processed_at)
    SELECT id, product_id, wallet, type, data::jsonb, referrer_wallet, dedup_key,
        idempotency_key, session_id, device_id, profile_id, fallback_fingerprint, source,
        source_ip::inet, user_agent, created_at, created_at
    FROM UNNEST($1::uuid[], $2::bytea[], $3::bytea[], $4::text[], $5::text[], $6::bytea[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[], $16::timestamptz[])
        AS t(id, product_id, wallet, type, data, referrer_wallet, dedup_key, idempotency_key,
             session_id, device_id, profile_id, fallback_fingerprint, source, source_ip,
             user_agent, created_at)
    ON CONFLICT DO NOTHING
    RETURNING id
), earned AS (
    INSERT INTO rewards (id, product_id, campaign_id, interaction_id, wallet, token, amount,
        recipient_type, available_at, created_at)
    SELECT * FROM UNNEST($17::uuid[], $18::bytea[], $19::bigint[], $20::uuid[], $21::bytea[],
        $22::bytea[], $23::text[]::numeric[], $24::text[], $25::timestamptz[],
        $26::timestamptz[]) AS r(id, product_id, campaign_id, interaction_id, wallet, token,
        amount, recipient_type, available_at, created_at)
    WHERE r.interaction_id IN (SELECT id FROM stored)"#,
            $returning,
            "\n)"
        )
    };
}

// Campaign rows are charged and exhausted by one UPDATE: two CTEs of a statement
// may not modify the same row. No other flush lane writes this product's
// campaigns (the writer gives each product one lane), so no lock ordering is
// needed. Only capped campaigns are charged: a campaign whose cap was set since
// the rewards were computed was brought up to date in this lane before any
// capped reward of it (`db::campaigns::recap`).
macro_rules! charged {
    () => {
        r#", charged AS (
    UPDATE campaigns c SET
        used_budget = c.used_budget + coalesce(d.amount, 0),
        status = CASE WHEN c.status = 'active'
                           AND c.budget_cap - c.used_budget - coalesce(d.amount, 0) < d.smallest
                      THEN 'budget_exhausted' ELSE c.status END,
        updated_at = now()
    FROM (
        SELECT coalesce(e.campaign_id, x.id) AS id, e.amount, x.smallest
        FROM (SELECT campaign_id, sum(amount) AS amount FROM earned GROUP BY campaign_id) e
        FULL JOIN (SELECT id, min(smallest) AS smallest
                   FROM UNNEST($32::bigint[], $33::text[]::numeric[]) AS x(id, smallest)
                   GROUP BY id) x
            ON x.id = e.campaign_id
    ) d
    WHERE c.id = d.id AND c.budget_cap > 0
)"#
    };
}

macro_rules! counted {
    () => {
        r#", counted AS (
    INSERT INTO campaign_user_rewards AS r (campaign_id, wallet, reward_count, total_amount,
        first_reward_at, last_reward_at)
    SELECT u.c, u.w, count(*), sum(u.a), min(u.t), max(u.t)
    FROM UNNEST($27::bigint[], $28::bytea[], $29::uuid[], $30::text[]::numeric[],
        $31::timestamptz[]) AS u(c, w, i, a, t)
    WHERE u.i IN (SELECT id FROM stored)
    GROUP BY u.c, u.w
    ON CONFLICT (campaign_id, wallet) DO UPDATE SET
        reward_count = r.reward_count + EXCLUDED.reward_count,
        total_amount = r.total_amount + EXCLUDED.total_amount,
        first_reward_at = COALESCE(r.first_reward_at, EXCLUDED.first_reward_at),
        last_reward_at = GREATEST(r.last_reward_at, EXCLUDED.last_reward_at)
)"#
    };
}

const STORE: &str = concat!(stored_and_earned!(""), "\nSELECT id FROM stored");
const STORE_COUNTED: &str = concat!(
    stored_and_earned!(""),
    counted!(),
    "\nSELECT id FROM stored"
);
const STORE_CHARGED: &str = concat!(
    stored_and_earned!("\n    RETURNING campaign_id, amount"),
    charged!(),
    "\nSELECT id FROM stored"
);
const STORE_CHARGED_COUNTED: &str = concat!(
    stored_and_earned!("\n    RETURNING campaign_id, amount"),
    charged!(),
    counted!(),
    "\nSELECT id FROM stored"
);

/// The rows of one flush.
pub struct FlushRows<'a> {
    pub interactions: &'a [InteractionRow],
    pub rewards: &'a [RewardRow],
    pub users: &'a [UserReward],
    /// Campaigns these rows may exhaust.
    pub exhausted: &'a [MayExhaust],
}

/// A campaign a flush may exhaust: it becomes `budget_exhausted` when what its cap
/// leaves, once the flush's stored rewards are charged, is below `smallest` (the
/// least a reward set of it costs). Decided on the stored spend, so a row the
/// database refuses (a duplicate) exhausts nothing, and a cap raised meanwhile
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MayExhaust {
    pub campaign_id: i64,
    pub smallest: U256,
}

/// Stores the rows in the caller's transaction. Returns, for each interaction a
/// unique index refused (an idempotency or natural key stored earlier), the id of
/// the row holding its key (`None` if none does: the row hit the one-referrer
/// index instead).
pub async fn store(
    conn: &mut PgConnection,
    rows: FlushRows<'_>,
) -> Result<HashMap<Uuid, Option<Uuid>>, DbError> {
    let refused = insert(conn, &rows).await?;
    holders(conn, &refused).await
}

/// Stores the rows by one statement outside any transaction: it commits by
/// itself. Returns what [`store`] does, except that once the statement has
/// committed, its rows are stored whatever happens next: if the holders of the
/// refused rows cannot be read, the flush must not be reported failed, so those
/// rows get `None` (answered unavailable; a retry finds its holder).
pub async fn store_alone(
    conn: &mut PgConnection,
    rows: FlushRows<'_>,
) -> Result<HashMap<Uuid, Option<Uuid>>, DbError> {
    let refused = insert(conn, &rows).await?;
    holders(conn, &refused).await.or_else(|err| {
        tracing::warn!(error = %err, rows = refused.len(), "the holders of refused rows could not be read");
        Ok(refused.iter().map(|r| (r.id, None)).collect())
    })
}

async fn holders(
    conn: &mut PgConnection,
    refused: &[&InteractionRow],
) -> Result<HashMap<Uuid, Option<Uuid>>, DbError> {
    if refused.is_empty() {
        return Ok(HashMap::new());
    }
    interactions::holders(conn, refused).await
}

/// The statement; returns the interactions a unique index refused.
async fn insert<'a>(
    conn: &mut PgConnection,
    rows: &FlushRows<'a>,
) -> Result<Vec<&'a InteractionRow>, DbError> {
    let i = InteractionColumns::of(rows.interactions);
    let r = RewardColumns::of(rows.rewards);
    let u = UserColumns::of(rows.users);
    let charged = rows.rewards.iter().any(|r| r.charged) || !rows.exhausted.is_empty();
    let sql = match (charged, rows.users.is_empty()) {
        (true, true) => STORE_CHARGED,
        (true, false) => STORE_CHARGED_COUNTED,
        (false, true) => STORE,
        (false, false) => STORE_COUNTED,
    };
    let inserted: Vec<Uuid> = sqlx::query_scalar(sql)
        .bind(i.id)
        .bind(i.product_id)
        .bind(i.wallet)
        .bind(i.kind)
        .bind(i.data)
        .bind(i.referrer_wallet)
        .bind(i.dedup_key)
        .bind(i.idempotency_key)
        .bind(i.session_id)
        .bind(i.device_id)
        .bind(i.profile_id)
        .bind(i.fallback_fingerprint)
        .bind(i.source)
        .bind(i.source_ip)
        .bind(i.user_agent)
        .bind(i.created_at)
        .bind(r.id)
        .bind(r.product_id)
        .bind(r.campaign_id)
        .bind(r.interaction_id)
        .bind(r.wallet)
        .bind(r.token)
        .bind(r.amount)
        .bind(r.recipient_type)
        .bind(r.available_at)
        .bind(r.created_at)
        .bind(u.campaign_id)
        .bind(u.wallet)
        .bind(u.interaction_id)
        .bind(u.amount)
        .bind(u.at)
        .bind(
            rows.exhausted
                .iter()
                .map(|e| e.campaign_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.exhausted
                .iter()
                .map(|e| e.smallest.to_string())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    if inserted.len() == rows.interactions.len() {
        return Ok(Vec::new());
    }
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    Ok(rows
        .interactions
        .iter()
        .filter(|r| !inserted.contains(&r.id))
        .collect())
}

/// The interactions, column by column, as UNNEST wants them.
struct InteractionColumns<'a> {
    id: Vec<Uuid>,
    product_id: Vec<&'a [u8]>,
    wallet: Vec<Option<&'a [u8]>>,
    kind: Vec<&'static str>,
    data: Vec<String>,
    referrer_wallet: Vec<Option<&'a [u8]>>,
    dedup_key: Vec<Option<String>>,
    idempotency_key: Vec<Option<String>>,
    session_id: Vec<Option<String>>,
    device_id: Vec<Option<String>>,
    profile_id: Vec<Option<String>>,
    fallback_fingerprint: Vec<Option<String>>,
    source: Vec<&'static str>,
    source_ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
}

impl<'a> InteractionColumns<'a> {
    fn of(rows: &'a [InteractionRow]) -> Self {
        Self {
            id: rows.iter().map(|r| r.id).collect(),
            product_id: rows.iter().map(|r| r.product_id.as_slice()).collect(),
            wallet: rows
                .iter()
                .map(|r| r.wallet.as_ref().map(|w| w.as_slice()))
                .collect(),
            kind: rows.iter().map(|r| r.kind.as_str()).collect(),
            data: rows.iter().map(|r| r.data.clone()).collect(),
            referrer_wallet: rows
                .iter()
                .map(|r| r.referrer_wallet.as_ref().map(|w| w.as_slice()))
                .collect(),
            dedup_key: rows.iter().map(|r| r.dedup_key.clone()).collect(),
            idempotency_key: rows.iter().map(|r| r.idempotency_key.clone()).collect(),
            session_id: rows.iter().map(|r| r.session_id.clone()).collect(),
            device_id: rows.iter().map(|r| r.device_id.clone()).collect(),
            profile_id: rows.iter().map(|r| r.profile_id.clone()).collect(),
            fallback_fingerprint: rows
                .iter()
                .map(|r| r.fallback_fingerprint.clone())
                .collect(),
            source: rows.iter().map(|r| r.source).collect(),
            source_ip: rows
                .iter()
                .map(|r| r.source_ip.map(|ip| ip.to_string()))
                .collect(),
            user_agent: rows.iter().map(|r| r.user_agent.clone()).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
        }
    }
}

/// The rewards, column by column.
struct RewardColumns<'a> {
    id: Vec<Uuid>,
    product_id: Vec<&'a [u8]>,
    campaign_id: Vec<i64>,
    interaction_id: Vec<Uuid>,
    wallet: Vec<&'a [u8]>,
    token: Vec<&'a [u8]>,
    amount: Vec<String>,
    recipient_type: Vec<&'static str>,
    available_at: Vec<DateTime<Utc>>,
    created_at: Vec<DateTime<Utc>>,
}

impl<'a> RewardColumns<'a> {
    fn of(rewards: &'a [RewardRow]) -> Self {
        Self {
            id: rewards.iter().map(|r| r.id).collect(),
            product_id: rewards.iter().map(|r| r.product_id.as_slice()).collect(),
            campaign_id: rewards.iter().map(|r| r.campaign_id).collect(),
            interaction_id: rewards.iter().map(|r| r.interaction_id).collect(),
            wallet: rewards.iter().map(|r| r.wallet.as_slice()).collect(),
            token: rewards.iter().map(|r| r.token.as_slice()).collect(),
            amount: rewards.iter().map(|r| r.amount.to_string()).collect(),
            recipient_type: rewards.iter().map(|r| r.recipient_type).collect(),
            available_at: rewards.iter().map(|r| r.available_at).collect(),
            created_at: rewards.iter().map(|r| r.created_at).collect(),
        }
    }
}

/// The acting users' rewards, column by column.
struct UserColumns<'a> {
    campaign_id: Vec<i64>,
    wallet: Vec<&'a [u8]>,
    interaction_id: Vec<Uuid>,
    amount: Vec<String>,
    at: Vec<DateTime<Utc>>,
}

impl<'a> UserColumns<'a> {
    fn of(users: &'a [UserReward]) -> Self {
        Self {
            campaign_id: users.iter().map(|u| u.campaign_id).collect(),
            wallet: users.iter().map(|u| u.wallet.as_slice()).collect(),
            interaction_id: users.iter().map(|u| u.interaction_id).collect(),
            amount: users.iter().map(|u| u.amount.to_string()).collect(),
            at: users.iter().map(|u| u.at).collect(),
        }
    }
}
