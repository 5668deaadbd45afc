-- Rewards are written at ingestion speed, several per interaction, in the
-- interaction's own transaction. Per row, a foreign-key check (a parent index
-- probe, a row lock with its WAL record, contention on hot campaign rows) cost more
-- than the row and all its indexes together, so rewards keep their references
-- without foreign keys:
--   * interaction_id: the writer inserts a reward only in the transaction that
--     inserts its interaction (rewards of a row refused as a duplicate are dropped);
--   * campaign_id, product_id: taken from the product actor's campaign rules, which
--     are loaded from `campaigns`; the product is the campaign's product.
-- No code path deletes interactions, campaigns or products (products are
-- soft-deleted), so no reference can dangle later.
ALTER TABLE rewards
    DROP CONSTRAINT rewards_product_id_fkey,
    DROP CONSTRAINT rewards_campaign_id_fkey,
    DROP CONSTRAINT rewards_interaction_id_fkey;

-- Pushers find pending rewards per campaign (rewards_campaign_status_idx), so the
-- per-token pending index was one more index entry per reward for nothing.
DROP INDEX rewards_pending_idx;

-- Pushers read the campaigns of their token's banks every round.
CREATE INDEX campaigns_bank_idx ON campaigns (bank_id);
