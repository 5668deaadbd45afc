-- rewardflow data model (SPEC §3).
--
-- Conventions:
--   * ids of products and on-chain nonces are bytes32 → BYTEA of 32 bytes;
--   * wallet, token and contract addresses → BYTEA of 20 bytes (case-free by nature);
--   * token amounts are integers in the token's base unit → NUMERIC(78,0) (fits uint256);
--   * enumerations are TEXT with a CHECK so the values read plainly in SQL.

CREATE TABLE products (
    id               BYTEA PRIMARY KEY CHECK (octet_length(id) = 32),
    domain           TEXT NOT NULL CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    name             TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    owner_wallet     BYTEA NOT NULL CHECK (octet_length(owner_wallet) = 20),
    product_types    BIGINT NOT NULL DEFAULT 0 CHECK (product_types >= 0),
    metadata         JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- {"platform": "shopify"|"woocommerce"|"custom", "secret": …, "previous_secret": …,
    --  "previous_secret_expires_at": …}; never returned by the API after it is set.
    webhook_config   JSONB,
    -- Empty means: only https://<domain> (SPEC §4 rule 1).
    allowed_origins  TEXT[] NOT NULL DEFAULT '{}',
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX products_domain_key ON products (domain);
CREATE INDEX products_owner_idx ON products (owner_wallet);

CREATE TABLE product_banks (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id     BYTEA NOT NULL REFERENCES products (id),
    chain_id       BIGINT NOT NULL CHECK (chain_id > 0),
    bank_address   BYTEA NOT NULL CHECK (octet_length(bank_address) = 20),
    token_address  BYTEA NOT NULL CHECK (octet_length(token_address) = 20),
    symbol         TEXT NOT NULL CHECK (length(symbol) BETWEEN 1 AND 32),
    decimals       SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 77),
    is_active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (product_id, token_address)
);

-- roles bitmask: 1 admin, 2 campaign manager, 4 interaction manager, 8 oracle updater.
-- The product's owner_wallet has every role without a row here.
CREATE TABLE product_administrators (
    product_id  BYTEA NOT NULL REFERENCES products (id),
    wallet      BYTEA NOT NULL CHECK (octet_length(wallet) = 20),
    roles       INTEGER NOT NULL CHECK (roles BETWEEN 1 AND 15),
    granted_by  BYTEA NOT NULL CHECK (octet_length(granted_by) = 20),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, wallet)
);
CREATE INDEX product_administrators_wallet_idx ON product_administrators (wallet);

CREATE TABLE campaigns (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- On-chain campaignId = bytes32 of this UUID, right-aligned.
    external_id           UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    product_id            BYTEA NOT NULL REFERENCES products (id),
    bank_id               BIGINT NOT NULL REFERENCES product_banks (id),
    name                  TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description           TEXT NOT NULL DEFAULT '',
    trigger               TEXT NOT NULL CHECK (trigger IN (
                              'referral.referred', 'referral.link_creation', 'purchase.started',
                              'purchase.completed', 'purchase.refunded', 'webshop.open',
                              'press.open_article', 'press.read_article',
                              'retail.customer_meeting')),
    requires_referral     BOOLEAN NOT NULL DEFAULT FALSE,
    reward_type           TEXT NOT NULL CHECK (reward_type IN ('fixed', 'range')),
    reward_amount         NUMERIC(78, 0),
    reward_min            NUMERIC(78, 0),
    reward_max            NUMERIC(78, 0),
    reward_beta_bps       INTEGER,
    user_bps              INTEGER NOT NULL DEFAULT 5000 CHECK (user_bps BETWEEN 0 AND 10000),
    deperdition_bps       INTEGER NOT NULL DEFAULT 8000 CHECK (deperdition_bps BETWEEN 0 AND 10000),
    max_depth             SMALLINT NOT NULL DEFAULT 5 CHECK (max_depth BETWEEN 0 AND 5),
    max_rewards_per_user  INTEGER CHECK (max_rewards_per_user > 0),
    -- 0 = unlimited (bounded by the bank's balance on-chain).
    budget_cap            NUMERIC(78, 0) NOT NULL DEFAULT 0 CHECK (budget_cap >= 0),
    used_budget           NUMERIC(78, 0) NOT NULL DEFAULT 0 CHECK (used_budget >= 0),
    lockup_seconds        BIGINT NOT NULL DEFAULT 0 CHECK (lockup_seconds >= 0),
    starts_at             TIMESTAMPTZ,
    ends_at               TIMESTAMPTZ,
    status                TEXT NOT NULL DEFAULT 'draft' CHECK (status IN (
                              'draft', 'active', 'paused', 'deactivated', 'budget_exhausted',
                              'expired')),
    metadata              JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_by            BYTEA NOT NULL CHECK (octet_length(created_by) = 20),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (budget_cap = 0 OR used_budget <= budget_cap),
    CHECK (starts_at IS NULL OR ends_at IS NULL OR starts_at < ends_at),
    CHECK (
        (reward_type = 'fixed' AND reward_amount > 0
            AND reward_min IS NULL AND reward_max IS NULL AND reward_beta_bps IS NULL)
     OR (reward_type = 'range' AND reward_amount IS NULL AND reward_min >= 0
            AND reward_max >= reward_min AND reward_max > 0 AND reward_beta_bps > 0)
    )
);
CREATE INDEX campaigns_product_status_idx ON campaigns (product_id, status);

CREATE TABLE campaign_user_rewards (
    campaign_id      BIGINT NOT NULL REFERENCES campaigns (id),
    wallet           BYTEA NOT NULL CHECK (octet_length(wallet) = 20),
    -- Rewards this wallet got as the acting user (max_rewards_per_user counts these).
    reward_count     INTEGER NOT NULL DEFAULT 0 CHECK (reward_count >= 0),
    total_amount     NUMERIC(78, 0) NOT NULL DEFAULT 0 CHECK (total_amount >= 0),
    first_reward_at  TIMESTAMPTZ,
    last_reward_at   TIMESTAMPTZ,
    PRIMARY KEY (campaign_id, wallet)
);

CREATE TABLE interactions (
    -- Assigned by the service (UUIDv7: time-ordered) so a batch is written without
    -- a round trip for ids.
    id                    UUID PRIMARY KEY,
    product_id            BYTEA NOT NULL REFERENCES products (id),
    -- NULL for a webhook order that names no wallet (stored, never rewarded).
    wallet                BYTEA CHECK (octet_length(wallet) = 20),
    type                  TEXT NOT NULL CHECK (type IN (
                              'referral.referred', 'referral.link_creation', 'purchase.started',
                              'purchase.completed', 'purchase.refunded', 'webshop.open',
                              'press.open_article', 'press.read_article',
                              'retail.customer_meeting')),
    data                  JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Set only on a registered referral edge; a rejected referral keeps the claimed
    -- referrer in data and leaves this NULL.
    referrer_wallet       BYTEA CHECK (octet_length(referrer_wallet) = 20),
    -- Natural key of the type (order id, referrer+wallet, platform order id+status).
    dedup_key             TEXT CHECK (length(dedup_key) <= 512),
    idempotency_key       TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    session_id            TEXT CHECK (length(session_id) <= 255),
    device_id             TEXT CHECK (length(device_id) <= 255),
    profile_id            TEXT CHECK (length(profile_id) <= 255),
    fallback_fingerprint  TEXT CHECK (length(fallback_fingerprint) <= 255),
    source                TEXT NOT NULL CHECK (source IN ('sdk', 'webhook', 'api')),
    source_ip             INET,
    user_agent            TEXT CHECK (length(user_agent) <= 1024),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at          TIMESTAMPTZ,
    -- No self-referral, and only referral.referred rows carry a referrer.
    CONSTRAINT interactions_no_self_referral CHECK (referrer_wallet IS NULL OR referrer_wallet <> wallet),
    CONSTRAINT interactions_referrer_only_on_referral CHECK (
        referrer_wallet IS NULL OR (type = 'referral.referred' AND wallet IS NOT NULL))
);
-- A wallet has at most one referrer per product (first referrer wins).
CREATE UNIQUE INDEX interactions_one_referrer_per_wallet
    ON interactions (product_id, wallet)
    WHERE type = 'referral.referred' AND referrer_wallet IS NOT NULL;
-- Exactly one interaction per (product, idempotency key), forever.
CREATE UNIQUE INDEX interactions_idempotency_key
    ON interactions (product_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Natural-key dedup backstop.
CREATE UNIQUE INDEX interactions_dedup_key
    ON interactions (product_id, dedup_key)
    WHERE dedup_key IS NOT NULL;
-- (product, wallet, type) also serves lookups by product and by (product, wallet).
CREATE INDEX interactions_product_wallet_type_idx ON interactions (product_id, wallet, type);
CREATE INDEX interactions_product_type_created_idx ON interactions (product_id, type, created_at);
CREATE INDEX interactions_wallet_idx ON interactions (wallet);
CREATE INDEX interactions_referrer_idx ON interactions (referrer_wallet)
    WHERE referrer_wallet IS NOT NULL;
CREATE INDEX interactions_session_idx ON interactions (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX interactions_device_idx ON interactions (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX interactions_profile_idx ON interactions (profile_id) WHERE profile_id IS NOT NULL;
-- Rows arrive in time order: a BRIN index costs almost nothing to maintain.
CREATE INDEX interactions_created_brin ON interactions USING brin (created_at);

-- The push ledger (SPEC §7): one row per signed batch, written before it is signed.
CREATE TABLE reward_batches (
    id               UUID PRIMARY KEY,
    product_id       BYTEA NOT NULL REFERENCES products (id),
    bank_id          BIGINT NOT NULL REFERENCES product_banks (id),
    token            BYTEA NOT NULL CHECK (octet_length(token) = 20),
    campaign_id      BIGINT NOT NULL REFERENCES campaigns (id),
    nonce            BYTEA NOT NULL UNIQUE CHECK (octet_length(nonce) = 32),
    deadline         TIMESTAMPTZ NOT NULL,
    total            NUMERIC(78, 0) NOT NULL CHECK (total > 0),
    recipient_count  INTEGER NOT NULL CHECK (recipient_count > 0),
    status           TEXT NOT NULL DEFAULT 'created' CHECK (status IN (
                         'created', 'sent', 'confirmed', 'failed', 'expired')),
    signature        BYTEA,
    tx_hash          BYTEA CHECK (octet_length(tx_hash) = 32),
    block_number     BIGINT,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ,
    confirmed_at     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX reward_batches_unfinished_idx ON reward_batches (bank_id, status)
    WHERE status IN ('created', 'sent');

CREATE TABLE rewards (
    id              UUID PRIMARY KEY,
    product_id      BYTEA NOT NULL REFERENCES products (id),
    campaign_id     BIGINT NOT NULL REFERENCES campaigns (id),
    interaction_id  UUID NOT NULL REFERENCES interactions (id),
    wallet          BYTEA NOT NULL CHECK (octet_length(wallet) = 20),
    token           BYTEA NOT NULL CHECK (octet_length(token) = 20),
    amount          NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    recipient_type  TEXT NOT NULL CHECK (recipient_type IN (
                        'user', 'referrer_l1', 'referrer_l2', 'referrer_l3', 'referrer_l4',
                        'referrer_l5')),
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
                        'pending', 'pushing', 'pushed', 'cancelled')),
    -- Why the reward is (back) where it is: last push failure, cancellation reason.
    status_reason   TEXT,
    batch_id        UUID REFERENCES reward_batches (id),
    available_at    TIMESTAMPTZ NOT NULL,
    tx_hash         BYTEA CHECK (octet_length(tx_hash) = 32),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    pushed_at       TIMESTAMPTZ,
    cancelled_at    TIMESTAMPTZ,
    cancel_reason   TEXT,
    -- A reward in a live batch is pushing; a pushed one keeps its batch.
    CHECK ((status IN ('pushing', 'pushed')) = (batch_id IS NOT NULL)),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    -- One reward per recipient level per campaign per interaction.
    UNIQUE (interaction_id, campaign_id, recipient_type)
);
CREATE INDEX rewards_wallet_idx ON rewards (wallet, token);
CREATE INDEX rewards_campaign_status_idx ON rewards (campaign_id, status);
CREATE INDEX rewards_pending_idx ON rewards (token, available_at) WHERE status = 'pending';
CREATE INDEX rewards_batch_idx ON rewards (batch_id) WHERE batch_id IS NOT NULL;

-- Indexed MultiTokenPushPull events (SPEC §9).
CREATE TABLE chain_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id      BIGINT NOT NULL,
    contract      BYTEA NOT NULL CHECK (octet_length(contract) = 20),
    block_number  BIGINT NOT NULL CHECK (block_number >= 0),
    block_hash    BYTEA NOT NULL CHECK (octet_length(block_hash) = 32),
    tx_hash       BYTEA NOT NULL CHECK (octet_length(tx_hash) = 32),
    log_index     INTEGER NOT NULL CHECK (log_index >= 0),
    event         TEXT NOT NULL CHECK (event IN ('RewardAdded', 'RewardClaimed')),
    token         BYTEA NOT NULL CHECK (octet_length(token) = 20),
    user_wallet   BYTEA NOT NULL CHECK (octet_length(user_wallet) = 20),
    -- The pushing bank (RewardAdded only).
    emitter       BYTEA CHECK (octet_length(emitter) = 20),
    amount        NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    block_time    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain_id, block_hash, log_index)
);
CREATE INDEX chain_events_user_idx ON chain_events (user_wallet, token);
CREATE INDEX chain_events_block_idx ON chain_events (chain_id, contract, block_number);

-- How far the indexer has followed a contract; block_hash detects reorgs.
CREATE TABLE indexer_cursor (
    chain_id      BIGINT NOT NULL,
    contract      BYTEA NOT NULL CHECK (octet_length(contract) = 20),
    block_number  BIGINT NOT NULL CHECK (block_number >= 0),
    block_hash    BYTEA NOT NULL CHECK (octet_length(block_hash) = 32),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract)
);

-- Single-use Sign-In with Ethereum nonces (SPEC §10).
CREATE TABLE auth_nonces (
    nonce       TEXT PRIMARY KEY CHECK (length(nonce) BETWEEN 8 AND 64),
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX auth_nonces_expires_idx ON auth_nonces (expires_at);
