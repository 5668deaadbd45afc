//! One flush: the write sets of a lane written in one transaction, each product
//! actor told its outcome, the pushers told what was committed, and the batch's
//! metrics and log line.

use std::collections::HashMap;
use std::time::Instant;

use alloy::primitives::{Address, B256};
use ractor::ActorRef;
use sqlx::{Acquire, PgPool};
use uuid::Uuid;

use crate::actors::product::ProductMsg;
use crate::actors::push_directory::PushDirectoryMsg;
use crate::actors::supervisor::ActorSlot;
use crate::db::DbError;
use crate::db::flush::{self, FlushRows, MayExhaust};
use crate::db::interactions::InteractionRow;
use crate::db::refunds::{self, RefundOutcome, RefundRequest};
use crate::db::rewards::{RewardRow, UserReward};
use crate::domain::ids::to_hex;
use crate::domain::refund::RefundEffects;
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

use super::{FlushOutcome, WriteSet};

/// Everything one flush writes.
#[derive(Default)]
struct Batch {
    rows: Vec<InteractionRow>,
    rewards: Vec<RewardRow>,
    users: Vec<UserReward>,
    exhausted: Vec<MayExhaust>,
    refunds: Vec<RefundRequest>,
}

/// Who a write set of a batch belongs to, and how many of each kind of row it has.
struct Owner {
    product: ActorRef<ProductMsg>,
    product_id: B256,
    tag: u64,
    request_id: RequestId,
    counts: (usize, usize, usize, usize),
    exhausted: Vec<MayExhaust>,
}

/// Writes the sets in one transaction (flush number `number`) and tells each
/// product actor the outcome. A batch refused for a non-retryable reason is
/// retried set by set, so one bad write set cannot fail the others. Returns
/// whether the database looks down.
pub(super) async fn flush(
    pool: &PgPool,
    pushers: &ActorSlot<PushDirectoryMsg>,
    sets: Vec<WriteSet>,
    number: u64,
) -> bool {
    let mut owners = Vec::with_capacity(sets.len());
    let mut batch = Batch::default();
    for set in sets {
        batch.exhausted.extend(set.exhausted.iter().copied());
        owners.push(Owner {
            product: set.product,
            product_id: set.product_id,
            tag: set.tag,
            request_id: set.request_id,
            counts: (
                set.rows.len(),
                set.rewards.len(),
                set.users.len(),
                set.refunds.len(),
            ),
            exhausted: set.exhausted,
        });
        batch.rows.extend(set.rows);
        batch.rewards.extend(set.rewards);
        batch.users.extend(set.users);
        batch.refunds.extend(set.refunds);
    }
    match write(pool, &batch).await {
        Ok(written) => {
            // Fields are only evaluated when debug is enabled: no string otherwise.
            tracing::debug!(
                flush = number,
                rows = batch.rows.len() - written.skipped.len(),
                rewards = written.created.total(),
                requests = %request_ids(&owners),
                "flush committed"
            );
            let skipped = written.skipped;
            let mut refunds = written.refunds;
            notify_pushers(pushers, &written.created);
            let mut start = 0;
            for Owner {
                product,
                tag,
                counts: (count, ..),
                ..
            } in owners
            {
                let rows = &batch.rows[start..start + count];
                let mine: HashMap<Uuid, Option<Uuid>> = rows
                    .iter()
                    .filter_map(|r| skipped.get(&r.id).map(|e| (r.id, *e)))
                    .collect();
                let (my_refunds, others): (Vec<_>, Vec<_>) = refunds
                    .into_iter()
                    .partition(|o| rows.iter().any(|r| r.id == o.refund_id));
                refunds = others;
                start += count;
                let _ = product.cast(ProductMsg::Flushed {
                    tag,
                    outcome: FlushOutcome::Committed {
                        skipped: mine,
                        refunds: my_refunds,
                    },
                });
            }
            false
        }
        Err(err) if err.is_retryable() || owners.len() == 1 => {
            tracing::warn!(
                error = %err,
                flush = number,
                rows = batch.rows.len(),
                requests = %request_ids(&owners),
                "flush failed"
            );
            let retryable = err.is_retryable();
            for Owner { product, tag, .. } in owners {
                let _ = product.cast(ProductMsg::Flushed {
                    tag,
                    outcome: FlushOutcome::Failed { retryable },
                });
            }
            retryable
        }
        Err(err) => {
            tracing::error!(
                error = %err,
                flush = number,
                "flush refused; retrying write set by write set"
            );
            let mut rows = batch.rows.into_iter();
            let mut rewards = batch.rewards.into_iter();
            let mut users = batch.users.into_iter();
            let mut refunds = batch.refunds.into_iter();
            // Every set gets its own try and its owner an answer, whatever the
            // others' fate (one set's retryable failure, e.g. a deadlock, says
            // nothing of the next).
            let mut retryable = false;
            for owner in owners {
                let (count, reward_count, user_count, refund_count) = owner.counts;
                let set = WriteSet {
                    product: owner.product,
                    product_id: owner.product_id,
                    tag: owner.tag,
                    request_id: owner.request_id,
                    rows: rows.by_ref().take(count).collect(),
                    rewards: rewards.by_ref().take(reward_count).collect(),
                    users: users.by_ref().take(user_count).collect(),
                    exhausted: owner.exhausted,
                    refunds: refunds.by_ref().take(refund_count).collect(),
                };
                retryable |= Box::pin(flush(pool, pushers, vec![set], number)).await;
            }
            retryable
        }
    }
}

/// Tells the pushers how many rewards of each token were committed (a hint: a
/// pusher holding `max_batch` of them pushes before its interval).
fn notify_pushers(pushers: &ActorSlot<PushDirectoryMsg>, created: &RewardsCreated) {
    let counts = created.per_token();
    if counts.is_empty() {
        return;
    }
    if let Some(directory) = pushers.get() {
        let _ = directory.cast(PushDirectoryMsg::Committed(counts));
    }
}

/// What a committed flush stored.
struct Written {
    /// Rows a unique index refused → the id holding their key.
    skipped: HashMap<Uuid, Option<Uuid>>,
    /// Reward rows inserted, by recipient type and token.
    created: RewardsCreated,
    refunds: Vec<RefundOutcome>,
}

/// Stores the batch. Without refunds that is one statement, which commits by
/// itself (`flush::store_alone`: one round trip). With refunds, one transaction: the
/// rows, then the refunds of those inserted (after the rewards: a purchase and
/// its refund may share a flush) and what they give back.
async fn write(pool: &PgPool, batch: &Batch) -> Result<Written, DbError> {
    let started = Instant::now();
    let rows = &batch.rows;
    let stored = FlushRows {
        interactions: rows,
        rewards: &batch.rewards,
        users: &batch.users,
        exhausted: &batch.exhausted,
    };
    let result = async {
        let mut conn = pool.acquire().await?;
        if batch.refunds.is_empty() {
            let skipped = flush::store_alone(&mut conn, stored).await?;
            return Ok::<_, DbError>((skipped, Vec::new()));
        }
        let mut tx = conn.begin().await?;
        let skipped = flush::store(&mut tx, stored).await?;
        let stored_refunds: Vec<RefundRequest> = batch
            .refunds
            .iter()
            .filter(|r| !skipped.contains_key(&r.refund_id))
            .cloned()
            .collect();
        let refunded = refunds::cancel(&mut tx, &stored_refunds).await?;
        let mut effects = RefundEffects::default();
        for outcome in &refunded {
            effects.merge(&outcome.effects);
        }
        refunds::give_back(&mut tx, &effects).await?;
        tx.commit().await?;
        Ok((skipped, refunded))
    }
    .await;
    let outcome = if result.is_ok() {
        "committed"
    } else {
        "failed"
    };
    metrics::histogram!(telemetry::WRITER_FLUSH_DURATION_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(telemetry::WRITER_BATCH_ROWS).record(rows.len() as f64);
    metrics::counter!(telemetry::WRITER_FLUSHES_TOTAL, "outcome" => outcome).increment(1);
    let (skipped, refunds) = result?;
    // A row a unique index refused earned nothing.
    let created = RewardsCreated::count(
        batch
            .rewards
            .iter()
            .filter(|r| !skipped.contains_key(&r.interaction_id)),
    );
    created.publish();
    Ok(Written {
        skipped,
        created,
        refunds,
    })
}

/// Reward rows of one committed flush by (recipient type, token): counted per
/// flush, published once (a flush has few distinct pairs).
struct RewardsCreated(Vec<((&'static str, Address), u64)>);

impl RewardsCreated {
    fn count<'a>(rewards: impl Iterator<Item = &'a RewardRow>) -> Self {
        let mut counts = Vec::new();
        for reward in rewards {
            tally(&mut counts, (reward.recipient_type, reward.token), 1);
        }
        Self(counts)
    }

    fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| *n as usize).sum()
    }

    /// The counts summed over recipient types, per token.
    fn per_token(&self) -> Vec<(Address, u64)> {
        let mut counts = Vec::new();
        for ((_, token), n) in &self.0 {
            tally(&mut counts, *token, *n);
        }
        counts
    }

    fn publish(&self) {
        for ((recipient_type, token), n) in &self.0 {
            metrics::counter!(
                telemetry::REWARDS_CREATED_TOTAL,
                "recipient_type" => *recipient_type,
                "token" => to_hex(token)
            )
            .increment(*n);
        }
    }
}

/// Adds `n` to `key`'s count (a linear search: a flush has few distinct keys).
fn tally<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K, n: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, sum)) => *sum += n,
        None => counts.push((key, n)),
    }
}

/// The request ids of a batch, comma-separated, for a log line.
fn request_ids(owners: &[Owner]) -> String {
    let mut ids = String::with_capacity(owners.len() * 37);
    for (i, owner) in owners.iter().enumerate() {
        if i > 0 {
            ids.push(',');
        }
        ids.push_str(owner.request_id.as_str());
    }
    ids
}
