-- A reward is identified by where it comes from: its interaction, its campaign and
-- its recipient level, the key that already said "one reward per level per
-- campaign per interaction". That key becomes the primary key; the `id` column
-- stays (assigned by the service, UUIDv7, shown by the API) without an index of its
-- own. Rewards are written several per interaction at ingestion speed, and each
-- index is one more entry per row; every lookup (pushers, refunds) now goes
-- through the primary key, the campaign index or the batch index.
--
-- `batch_id` loses its foreign key for the same reason as the references dropped
-- in `…0003_lean_reward_rows`: an insert queues a check per row even when the
-- column is NULL, which it always is then. The push ledger sets `batch_id` only in
-- the transaction that inserts that batch (`db::push`), and no code path deletes
-- batches, so no reference can dangle.
ALTER TABLE rewards
    DROP CONSTRAINT rewards_batch_id_fkey,
    DROP CONSTRAINT rewards_pkey,
    DROP CONSTRAINT rewards_interaction_id_campaign_id_recipient_type_key,
    ADD CONSTRAINT rewards_pkey PRIMARY KEY (interaction_id, campaign_id, recipient_type);
