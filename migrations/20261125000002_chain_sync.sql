-- What a campaign's bank must still be told (SPEC §7, capped campaigns): the pusher
-- allocates the budget of an activated campaign ('allocate' → 'allocated') and
-- deactivates a deactivated one once its rewards are pushed ('deactivate' →
-- 'deactivated'). A failed call keeps the state and records why.
ALTER TABLE campaigns
    ADD COLUMN chain_state TEXT NOT NULL DEFAULT 'none' CHECK (chain_state IN (
        'none', 'allocate', 'allocated', 'deactivate', 'deactivated')),
    ADD COLUMN chain_error TEXT,
    ADD COLUMN chain_synced_at TIMESTAMPTZ,
    ADD COLUMN chain_tx_hash BYTEA CHECK (octet_length(chain_tx_hash) = 32);
CREATE INDEX campaigns_chain_sync_idx ON campaigns (bank_id)
    WHERE chain_state IN ('allocate', 'deactivate');

-- The chain head when a batch was written: its RewardsPushed event, if any, is in a
-- later block.
ALTER TABLE reward_batches ADD COLUMN from_block BIGINT NOT NULL DEFAULT 0 CHECK (from_block >= 0);
