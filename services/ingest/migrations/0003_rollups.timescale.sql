-- TimescaleDB: chunks older than 7 days compressed (segments per station and metric), raw data
-- kept 180 days; hourly and daily roll-ups (min, max, avg, sum, count of good and doubtful
-- readings) as continuous aggregates kept 10 years. Days are Beijing calendar days. A refresh
-- re-aggregates every bucket that late data fell into (TimescaleDB's invalidation log). The ingest
-- service sets the retention periods from its settings at start-up. Queries see real-time
-- aggregates: the materialised buckets plus the raw data not materialised yet.
ALTER TABLE ingest.readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'station_id, metric',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('ingest.readings', interval '7 days');
SELECT add_retention_policy('ingest.readings', interval '180 days');

CREATE MATERIALIZED VIEW ingest.readings_1h
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, metric, time_bucket(interval '1 hour', ts) AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, sum(value) AS sum,
       count(*) AS count
  FROM ingest.readings
 WHERE quality < 2
 GROUP BY station_id, metric, time_bucket(interval '1 hour', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW ingest.readings_1d
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, metric, time_bucket(interval '1 day', ts, 'Asia/Shanghai') AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, sum(value) AS sum,
       count(*) AS count
  FROM ingest.readings
 WHERE quality < 2
 GROUP BY station_id, metric, time_bucket(interval '1 day', ts, 'Asia/Shanghai')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('ingest.readings_1h',
    start_offset => interval '30 days', end_offset => NULL,
    schedule_interval => interval '5 minutes');
SELECT add_continuous_aggregate_policy('ingest.readings_1d',
    start_offset => interval '30 days', end_offset => NULL,
    schedule_interval => interval '15 minutes');
SELECT add_retention_policy('ingest.readings_1h', interval '10 years');
SELECT add_retention_policy('ingest.readings_1d', interval '10 years');
