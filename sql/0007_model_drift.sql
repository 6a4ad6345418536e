-- Daily behaviour of each model: how long its answers are and how often it refuses.
-- A provider silently changing a model (new snapshot, new safety filter) shows up here as a shift
-- against the model's own recent days; metrics_platform/drift.py computes and compares it.
--
-- llm_calls: spans of the model that produced output or declare a generation operation (chat,
--   text_completion, generate_content), plus refusals; the refusal rate is over these.
-- answered_calls: those with tokens_completion > 0; the output-length statistics are over these,
--   so failed calls (no output at all) move the error rate, not the length distribution.
-- Each day is one partition, recomputed from raw events and swapped in with REPLACE PARTITION.
CREATE TABLE IF NOT EXISTS model_drift_daily
(
    day                    Date,
    model                  LowCardinality(String),
    llm_calls              UInt64,
    answered_calls         UInt64,
    refusals               UInt64,
    refusal_rate           Float64,
    tokens_completion_p50  Float64,
    tokens_completion_p95  Float64,
    tokens_completion_mean Float64,
    tokens_completion_sum  UInt64,
    computed_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY model
TTL day + INTERVAL {{retention_days}} DAY DELETE;
