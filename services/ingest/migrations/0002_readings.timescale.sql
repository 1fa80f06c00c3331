-- Readings on TimescaleDB: a hypertable with daily chunks.
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
);
SELECT create_hypertable('ingest.readings', 'ts', chunk_time_interval => interval '1 day');
