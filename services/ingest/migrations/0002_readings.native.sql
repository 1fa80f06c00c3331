-- Readings on plain PostgreSQL: range-partitioned by day; partitions are created on demand by the
-- writer and dropped whole for retention.
CREATE TABLE ingest.readings (
    station_id  text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    quality     smallint NOT NULL DEFAULT 0,  -- 0 good, 1 doubtful, 2 bad
    checks      text[] NOT NULL DEFAULT '{}',
    source      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, metric, ts)
) PARTITION BY RANGE (ts);
