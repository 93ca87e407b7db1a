-- Every event, once. `{database}` is replaced by the quoted database name.
--
-- Sorting key: every report is tenant-scoped and asks for a time range first, so merchant_id
-- then the day lead the key; `type` next, because reports count or list one kind of event
-- (messages, CSAT, assignments) within those days. event_id comes last so that the key is
-- unique per event: ReplacingMergeTree collapses rows whose whole key is equal, and every
-- earlier column is a function of the event, so two copies of one event always share a key.
-- toDate(ts) rather than ts: with ts in the key, `type` would only ever sort within one
-- millisecond and be useless for pruning.
CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id    UUID,
    merchant_id LowCardinality(String),
    type        LowCardinality(String),
    actor_key   String,
    seq         UInt64,
    session_id  String,
    ts          DateTime64(3, 'UTC'),
    channel     LowCardinality(String),
    agent_id    String,
    customer_id String,
    group_id    String,
    payload     String CODEC(ZSTD(3)),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    -- The redelivery check looks events up by id within a time range: the filter skips
    -- granules that cannot hold any of the ids.
    INDEX event_id_bf event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    -- Conversation history reads one session's events.
    INDEX session_id_bf session_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (merchant_id, toDate(ts), type, event_id)
-- Remember the last 10,000 insert blocks (one block per writer batch): a batch re-sent with
-- the same insert_deduplication_token within that window is dropped by the server. At peak a
-- writer inserts a few batches a second, so the window covers far more than any retry.
SETTINGS non_replicated_deduplication_window = 10000;
