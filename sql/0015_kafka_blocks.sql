-- Bigger Kafka engine blocks for the OTLP topic, and both topics' blocks ended twice a second.
--
-- Every block the Kafka engine inserts pays a fixed cost: planning the chain of views behind it (the
-- mapping, the accept and reject views with their ledger joins, the dead-letter scrub), 100-200 ms on the
-- reference machine. With blocks of 1,024 records (one trace each) that cost came back several times a
-- second at saturation and was most of the Kafka engine thread's 50 µs per span (bench/README.md).
-- Blocks of up to 16,384 records end on the flush interval instead, so the cost is paid a fixed number of
-- times per second: measured with bench/compare_peer.py, sustained 16.7k -> 27.0k spans/s and the Kafka
-- engine thread 50 -> 24 µs per span. The flush interval ({{kafka_flush_interval_ms}} ms,
-- METRICS_PLATFORM_KAFKA_FLUSH_INTERVAL_MS, now 500 by default) is then what a span waits at steady load.
--
-- The Kafka engine cannot ALTER its settings, so the tables are recreated. The materialized views reading
-- them stay: a view is bound to its source by name and streams again as soon as the new table exists.
-- The consumer groups keep their committed offsets in Kafka; a block read but not committed when the old
-- table closed is read again and skipped by the offset ledger (0010).
DROP TABLE IF EXISTS kafka_otel_spans;
CREATE TABLE kafka_otel_spans
(
    payload String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{{kafka_brokers}}',
    kafka_topic_list = '{{spans_topic}}',
    kafka_group_name = '{{consumer_group_prefix}}_otel_spans',
    kafka_format = 'RawBLOB',
    kafka_handle_error_mode = 'stream',
    kafka_num_consumers = {{kafka_num_consumers}},
    kafka_flush_interval_ms = {{kafka_flush_interval_ms}},
    kafka_poll_timeout_ms = {{kafka_poll_timeout_ms}},
    kafka_consumer_reschedule_ms = {{kafka_poll_timeout_ms}},
    kafka_max_block_size = 16384;

DROP TABLE IF EXISTS kafka_agent_events;
CREATE TABLE kafka_agent_events
(
    payload String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{{kafka_brokers}}',
    kafka_topic_list = '{{events_topic}}',
    kafka_group_name = '{{consumer_group_prefix}}_agent_events',
    kafka_format = 'RawBLOB',
    kafka_handle_error_mode = 'stream',
    kafka_num_consumers = {{kafka_num_consumers}},
    kafka_flush_interval_ms = {{kafka_flush_interval_ms}},
    kafka_poll_timeout_ms = {{kafka_poll_timeout_ms}},
    kafka_consumer_reschedule_ms = {{kafka_poll_timeout_ms}},
    kafka_max_block_size = 65536;
