-- The wallet history pages through a wallet's rewards newest first by
-- (created_at, id) and its claims by (block_number, log_index, id): each page is an
-- index range below the previous page's last entry, whatever the wallet's size.
-- The wallet views are the only readers of these two indexes (the balances filter
-- on the wallet alone), so they change order instead of being added to: a reward
-- row still carries three index entries.
DROP INDEX rewards_wallet_idx;
CREATE INDEX rewards_wallet_idx ON rewards (wallet, created_at, id);

DROP INDEX chain_events_user_idx;
CREATE INDEX chain_events_user_idx ON chain_events (user_wallet, block_number, log_index, id);
