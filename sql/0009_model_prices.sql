-- Model prices as data, effective-dated (metrics_platform/prices/ loads them; the Dagster asset
-- model_prices refreshes them). The finalizer (0011) prices every LLM span with the entry in force
-- on the span's day; a price change followed by a recompute changes computed cost from that day on.
--
-- model_prices: one row per price entry and the day range it is in force. Prices are USD per
-- million tokens; NULL means "not listed" (a cache read without its own price costs the input
-- price, reasoning tokens without their own price cost the output price). A tier replaces the
-- base prices for a call whose input tokens exceed tier_start_tokens (providers' long-context
-- pricing; 0 = no tier).
CREATE TABLE IF NOT EXISTS model_prices
(
    price_id                  String,
    provider_id               LowCardinality(String),
    model_id                  String,
    valid_from                Date,
    valid_to                  Date,
    input_per_mtok            Nullable(Decimal(20, 10)),
    output_per_mtok           Nullable(Decimal(20, 10)),
    cache_read_per_mtok       Nullable(Decimal(20, 10)),
    cache_write_per_mtok      Nullable(Decimal(20, 10)),
    reasoning_per_mtok        Nullable(Decimal(20, 10)),
    tier_start_tokens         UInt64,
    tier_input_per_mtok       Nullable(Decimal(20, 10)),
    tier_output_per_mtok      Nullable(Decimal(20, 10)),
    tier_cache_read_per_mtok  Nullable(Decimal(20, 10)),
    tier_cache_write_per_mtok Nullable(Decimal(20, 10)),
    source                    String,
    loaded_at                 DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (price_id, valid_from);

-- How spans name models, resolved to a price entry: (provider as the span names it, lowercase;
-- '' = any provider) x model name as sent -> price_id. The loader writes every name the price
-- source knows plus every name seen in agent_events that its matcher resolves (dated variants,
-- provider prefixes, aliases); the finalizer also tries the name without a provider prefix and
-- without a date suffix, so a new dated variant is priced before the next refresh.
CREATE TABLE IF NOT EXISTS model_price_aliases
(
    provider  String,
    model     String,
    price_id  String,
    source    String,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (provider, model);

-- Range lookup: the entry whose valid_from is the latest on or before the span's day. A dictionary
-- reads its local table as a ClickHouse user of its own, so the platform's user and password are
-- written into it (SHOW CREATE hides the password); after changing that password, re-create both.
CREATE DICTIONARY IF NOT EXISTS model_price_dict
(
    price_id                  String,
    valid_from                Date,
    valid_to                  Date,
    input_per_mtok            Nullable(Decimal(20, 10)),
    output_per_mtok           Nullable(Decimal(20, 10)),
    cache_read_per_mtok       Nullable(Decimal(20, 10)),
    cache_write_per_mtok      Nullable(Decimal(20, 10)),
    reasoning_per_mtok        Nullable(Decimal(20, 10)),
    tier_start_tokens         UInt64,
    tier_input_per_mtok       Nullable(Decimal(20, 10)),
    tier_output_per_mtok      Nullable(Decimal(20, 10)),
    tier_cache_read_per_mtok  Nullable(Decimal(20, 10)),
    tier_cache_write_per_mtok Nullable(Decimal(20, 10))
)
PRIMARY KEY price_id
SOURCE(CLICKHOUSE(DB '{{database}}' TABLE 'model_prices' USER '{{clickhouse_user}}' PASSWORD '{{clickhouse_password}}'))
LIFETIME(MIN 300 MAX 600)
LAYOUT(COMPLEX_KEY_RANGE_HASHED(range_lookup_strategy 'max'))
RANGE(MIN valid_from MAX valid_to);

CREATE DICTIONARY IF NOT EXISTS model_alias_dict
(
    provider String,
    model    String,
    price_id String
)
PRIMARY KEY provider, model
SOURCE(CLICKHOUSE(DB '{{database}}' TABLE 'model_price_aliases' USER '{{clickhouse_user}}' PASSWORD '{{clickhouse_password}}'))
LIFETIME(MIN 300 MAX 600)
LAYOUT(COMPLEX_KEY_HASHED());

-- One row per recompute of a day's computed cost: totals before and after, for the audit trail.
CREATE TABLE IF NOT EXISTS cost_recompute_audit
(
    day                  Date,
    run_id               String,
    llm_calls            UInt64,
    computed_before_usd  Decimal(38, 10),
    computed_after_usd   Decimal(38, 10),
    cost_before_usd      Decimal(38, 10),
    cost_after_usd       Decimal(38, 10),
    reported_usd         Decimal(38, 10),
    unpriced_before      UInt64,
    unpriced_after       UInt64,
    finished_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (day, finished_at);
