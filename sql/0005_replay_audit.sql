-- One row per replayed history day: what was read, rejected, already stored and produced.
-- Replays are idempotent (events already in agent_events are skipped by trace_id + span_id), and
-- this table is the record of every replay that ran.
CREATE TABLE IF NOT EXISTS replay_audit
(
    day            Date,
    run_id         String,
    files          Array(String),
    lines          UInt64,
    valid          UInt64,
    rejected       UInt64,
    already_stored UInt64,
    produced       UInt64,
    finished_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (day, finished_at);
