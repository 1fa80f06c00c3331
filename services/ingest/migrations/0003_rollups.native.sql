-- Plain PostgreSQL: the hourly and daily roll-ups as tables the ingest service maintains (see
-- services/ingest/rollups.py). The writer records each (station, metric, hour) a batch touched in
-- rollup_dirty, in the same transaction; a refresh recomputes those hours from the raw data and
-- their days from the hours, so late data re-aggregates the buckets it falls into. Days are
-- Beijing calendar days; min, max, avg, sum and count are over good and doubtful readings.
CREATE TABLE ingest.readings_1h (
    station_id text NOT NULL,
    metric     text NOT NULL,
    bucket     timestamptz NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    avg        double precision NOT NULL,
    sum        double precision NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (station_id, metric, bucket)
);
CREATE TABLE ingest.readings_1d (LIKE ingest.readings_1h INCLUDING ALL);

CREATE TABLE ingest.rollup_dirty (
    station_id text NOT NULL,
    metric     text NOT NULL,
    hour       timestamptz NOT NULL,
    PRIMARY KEY (station_id, metric, hour)
);
-- readings stored before this migration get their roll-ups at the first refresh
INSERT INTO ingest.rollup_dirty (station_id, metric, hour)
SELECT DISTINCT station_id, metric, date_trunc('hour', ts) FROM ingest.readings;
