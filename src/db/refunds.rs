//! Refunds (SPEC §6), inside the writer's transaction, after the flush's rows
//! are stored (a purchase and its refund may share a flush): cancel the refunded
//! purchase's rewards that are still pending, say what that gives back, and give
//! it back to the budgets and per-user counters.

use std::collections::{BTreeSet, HashMap};

use alloy::primitives::{Address, B256, U256};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{DbError, parse_u256};
use crate::domain::interaction::{InteractionType, purchase_key};
use crate::domain::refund::{CancelledReward, Counted, RefundEffects};

/// A stored `purchase.refunded` interaction to apply.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub refund_id: Uuid,
    pub product_id: B256,
    pub order_id: String,
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcome {
    pub refund_id: Uuid,
    /// The refunded purchase, if it was stored.
    pub purchase_id: Option<Uuid>,
    /// Rewards cancelled (they were still pending).
    pub cancelled: u32,
    /// Rewards left as they are: already on their way on-chain or pushed.
    pub kept: u32,
    pub effects: RefundEffects,
}

/// Cancels the pending rewards of each refunded purchase (rows locked in id order,
/// so a pusher taking the same rows waits or skips them), and records on each
/// refund interaction what it did.
pub async fn cancel(
    conn: &mut PgConnection,
    requests: &[RefundRequest],
) -> Result<Vec<RefundOutcome>, DbError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let purchases: Vec<(Uuid, Uuid, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT r.refund_id, i.id, i.wallet
         FROM UNNEST($1::uuid[], $2::bytea[], $3::text[]) AS r(refund_id, product_id, key)
         JOIN interactions i ON i.product_id = r.product_id AND i.dedup_key = r.key",
    )
    .bind(requests.iter().map(|r| r.refund_id).collect::<Vec<_>>())
    .bind(
        requests
            .iter()
            .map(|r| r.product_id.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| purchase_key(InteractionType::PurchaseCompleted, &r.order_id))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let purchase_of: HashMap<Uuid, (Uuid, Option<Address>)> = purchases
        .iter()
        .map(|(refund, purchase, wallet)| {
            let buyer = wallet.as_deref().map(Address::from_slice);
            (*refund, (*purchase, buyer))
        })
        .collect();
    let purchase_ids: Vec<Uuid> = purchases.iter().map(|(_, p, _)| *p).collect();

    // Locked in primary-key order, the order pushers lock them in (`db::push`).
    // Rewards on their way on-chain are locked too: a batch being abandoned right
    // now puts them back to pending first (they are then cancelled here, as read
    // after the wait), or waits for this refund and cancels them itself.
    let cancelled = sqlx::query(
        "WITH target AS (
             SELECT w.interaction_id, w.campaign_id, w.recipient_type, w.status, p.refund_id
             FROM rewards w
             JOIN UNNEST($1::uuid[], $2::uuid[]) AS p(purchase, refund_id) ON w.interaction_id = p.purchase
             WHERE w.status IN ('pending', 'pushing')
             ORDER BY w.interaction_id, w.campaign_id, w.recipient_type
             FOR UPDATE OF w)
         UPDATE rewards w SET status = 'cancelled', cancelled_at = now(),
             cancel_reason = 'order refunded (interaction ' || t.refund_id || ')'
         FROM target t
         WHERE w.interaction_id = t.interaction_id AND w.campaign_id = t.campaign_id
           AND w.recipient_type = t.recipient_type AND t.status = 'pending'
         RETURNING w.interaction_id, w.campaign_id, w.recipient_type, w.amount::text AS amount",
    )
    .bind(&purchase_ids)
    .bind(purchases.iter().map(|(r, _, _)| *r).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut by_purchase: HashMap<Uuid, Vec<CancelledReward>> = HashMap::new();
    for row in &cancelled {
        by_purchase
            .entry(row.get("interaction_id"))
            .or_default()
            .push(CancelledReward {
                campaign_id: row.get("campaign_id"),
                is_user: row.get::<&str, _>("recipient_type") == "user",
                amount: parse_u256(row.get::<&str, _>("amount")),
            });
    }

    let kept_rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT interaction_id, campaign_id, count(*) FROM rewards
         WHERE interaction_id = ANY($1) AND status IN ('pushing', 'pushed')
         GROUP BY interaction_id, campaign_id",
    )
    .bind(&purchase_ids)
    .fetch_all(&mut *conn)
    .await?;
    let campaigns: Vec<i64> = cancelled.iter().map(|r| r.get("campaign_id")).collect();
    let counted = counted(conn, &campaigns).await?;

    let outcomes: Vec<RefundOutcome> = requests
        .iter()
        .map(|request| {
            let Some((purchase, buyer)) = purchase_of.get(&request.refund_id).copied() else {
                return RefundOutcome {
                    refund_id: request.refund_id,
                    purchase_id: None,
                    cancelled: 0,
                    kept: 0,
                    effects: RefundEffects::default(),
                };
            };
            let rewards = by_purchase.get(&purchase).map(Vec::as_slice).unwrap_or(&[]);
            let mine = kept_rows.iter().filter(|(p, _, _)| *p == purchase);
            let kept: BTreeSet<i64> = mine.clone().map(|(_, c, _)| *c).collect();
            RefundOutcome {
                refund_id: request.refund_id,
                purchase_id: Some(purchase),
                cancelled: rewards.len() as u32,
                kept: mine.map(|(_, _, n)| *n as u32).sum(),
                effects: RefundEffects::of_purchase(buyer, rewards, &kept, &counted),
            }
        })
        .collect();

    sqlx::query(
        "UPDATE interactions i SET data = i.data || jsonb_build_object('refund', jsonb_build_object(
             'purchase_id', u.purchase, 'cancelled_rewards', u.cancelled, 'kept_rewards', u.kept))
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::int[]) AS u(id, purchase, cancelled, kept)
         WHERE i.id = u.id",
    )
    .bind(outcomes.iter().map(|o| o.refund_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.purchase_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.cancelled as i32).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.kept as i32).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(outcomes)
}

/// When a batch is abandoned (`db::push::abandon`, its rewards locked): cancels
/// its rewards whose purchase was refunded while they were on their way on-chain
/// (the refund had to keep them), gives back what that frees, and records it on
/// the refund. Returns how many it cancelled. What is given back reaches the
/// product actors' memory at their next (re)load: until then they count it as
/// spent, which can only pay less, never more.
pub async fn cancel_abandoned(conn: &mut PgConnection, batch: Uuid) -> Result<u64, DbError> {
    let completed = InteractionType::PurchaseCompleted.as_str();
    let refunded = InteractionType::PurchaseRefunded.as_str();
    let cancelled = sqlx::query(
        "WITH target AS (
             SELECT r.interaction_id, r.campaign_id, r.recipient_type, f.id AS refund_id
             FROM rewards r
             JOIN interactions p ON p.id = r.interaction_id AND p.type = $2
             JOIN interactions f ON f.product_id = p.product_id
                 AND f.dedup_key = $3 || substr(p.dedup_key, length($2) + 1)
             WHERE r.batch_id = $1 AND r.status = 'pushing')
         UPDATE rewards w SET status = 'cancelled', batch_id = NULL, cancelled_at = now(),
             cancel_reason = 'order refunded (interaction ' || t.refund_id || ')'
         FROM target t
         WHERE w.interaction_id = t.interaction_id AND w.campaign_id = t.campaign_id
           AND w.recipient_type = t.recipient_type
         RETURNING w.interaction_id, w.campaign_id, w.recipient_type, w.amount::text AS amount,
             t.refund_id",
    )
    .bind(batch)
    .bind(completed)
    .bind(refunded)
    .fetch_all(&mut *conn)
    .await?;
    if cancelled.is_empty() {
        return Ok(0);
    }
    let purchases: Vec<Uuid> = cancelled
        .iter()
        .map(|row| row.get::<Uuid, _>("interaction_id"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Every cancelled reward of those purchases (these included), who bought,
    // and where they still have rewards on-chain or on their way.
    let all: Vec<(Uuid, i64, bool, String)> = sqlx::query_as(
        "SELECT interaction_id, campaign_id, recipient_type = 'user', amount::text FROM rewards
         WHERE interaction_id = ANY($1) AND status = 'cancelled'",
    )
    .bind(&purchases)
    .fetch_all(&mut *conn)
    .await?;
    let buyers: HashMap<Uuid, Option<Vec<u8>>> =
        sqlx::query_as("SELECT id, wallet FROM interactions WHERE id = ANY($1)")
            .bind(&purchases)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let kept: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT DISTINCT interaction_id, campaign_id FROM rewards
         WHERE interaction_id = ANY($1) AND status IN ('pushing', 'pushed')",
    )
    .bind(&purchases)
    .fetch_all(&mut *conn)
    .await?;
    let campaigns: Vec<i64> = all.iter().map(|r| r.1).collect();
    let counted = counted(conn, &campaigns).await?;

    let mut effects = RefundEffects::default();
    for purchase in &purchases {
        let reward = |campaign_id: i64, is_user: bool, amount: &str| CancelledReward {
            campaign_id,
            is_user,
            amount: parse_u256(amount),
        };
        let now: Vec<CancelledReward> = cancelled
            .iter()
            .filter(|row| row.get::<Uuid, _>("interaction_id") == *purchase)
            .map(|row| {
                reward(
                    row.get("campaign_id"),
                    row.get::<&str, _>("recipient_type") == "user",
                    row.get("amount"),
                )
            })
            .collect();
        let every: Vec<CancelledReward> = all
            .iter()
            .filter(|r| r.0 == *purchase)
            .map(|r| reward(r.1, r.2, &r.3))
            .collect();
        let still: BTreeSet<i64> = kept
            .iter()
            .filter(|k| k.0 == *purchase)
            .map(|k| k.1)
            .collect();
        let buyer = buyers
            .get(purchase)
            .and_then(|w| w.as_deref())
            .map(Address::from_slice);
        effects.merge(&RefundEffects::of_abandoned(
            buyer, &now, &every, &still, &counted,
        ));
    }
    give_back(conn, &effects).await?;

    let mut per_refund: HashMap<Uuid, i32> = HashMap::new();
    for row in &cancelled {
        *per_refund.entry(row.get("refund_id")).or_default() += 1;
    }
    sqlx::query(
        "UPDATE interactions i SET data = jsonb_set(jsonb_set(i.data,
             '{refund,cancelled_rewards}',
             to_jsonb((i.data #>> '{refund,cancelled_rewards}')::int + u.n)),
             '{refund,kept_rewards}',
             to_jsonb(GREATEST((i.data #>> '{refund,kept_rewards}')::int - u.n, 0)))
         FROM UNNEST($1::uuid[], $2::int[]) AS u(id, n)
         WHERE i.id = u.id AND i.data ? 'refund'",
    )
    .bind(per_refund.keys().copied().collect::<Vec<_>>())
    .bind(per_refund.values().copied().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(cancelled.len() as u64)
}

/// Which of `campaigns` have a budget cap, and which count rewards per user.
async fn counted(conn: &mut PgConnection, campaigns: &[i64]) -> Result<Counted, DbError> {
    let limits: Vec<(i64, bool, bool)> = sqlx::query_as(
        "SELECT id, budget_cap > 0, max_rewards_per_user IS NOT NULL FROM campaigns
         WHERE id = ANY($1)",
    )
    .bind(campaigns)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Counted {
        budget: limits.iter().filter(|l| l.1).map(|l| l.0).collect(),
        per_user: limits.iter().filter(|l| l.2).map(|l| l.0).collect(),
    })
}

/// The order ids a product has stored refunds for (its actor's memory of them).
pub async fn refunded_orders(pool: &sqlx::PgPool, product: B256) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT data->>'order_id' FROM interactions
         WHERE product_id = $1 AND type = 'purchase.refunded' AND data ? 'order_id'",
    )
    .bind(product.as_slice())
    .fetch_all(pool)
    .await?)
}

/// Gives the cancelled rewards' budget back to their capped campaigns and uncounts the
/// buyers whose rewards of a campaign were all cancelled (their counter rows
/// exist: the purchase counted them).
pub async fn give_back(conn: &mut PgConnection, effects: &RefundEffects) -> Result<(), DbError> {
    if !effects.budgets.is_empty() {
        sqlx::query(
            "UPDATE campaigns c SET used_budget = c.used_budget - d.amount::numeric, updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[]) AS d(id, amount) WHERE c.id = d.id",
        )
        .bind(effects.budgets.keys().copied().collect::<Vec<_>>())
        .bind(effects.budgets.values().map(U256::to_string).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !effects.counters.is_empty() {
        let keys: Vec<&(i64, Address)> = effects.counters.keys().collect();
        sqlx::query(
            "UPDATE campaign_user_rewards r SET
                reward_count = GREATEST(r.reward_count - d.n, 0),
                total_amount = GREATEST(r.total_amount - d.a::numeric, 0)
             FROM UNNEST($1::bigint[], $2::bytea[], $3::int[], $4::text[]) AS d(c, w, n, a)
             WHERE r.campaign_id = d.c AND r.wallet = d.w",
        )
        .bind(keys.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, w)| w.to_vec()).collect::<Vec<_>>())
        .bind(
            effects
                .counters
                .values()
                .map(|(n, _)| *n as i32)
                .collect::<Vec<_>>(),
        )
        .bind(
            effects
                .counters
                .values()
                .map(|(_, a)| a.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
