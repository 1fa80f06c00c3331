-- Plain PostgreSQL: the database itself marks what the roll-up refresh must recompute, and at the
-- grain of (metric, hour) rather than (station, metric, hour).
--
-- A statement trigger reads the statement's transition table, which holds only the rows actually
-- inserted (a COPY, or the rows an INSERT … ON CONFLICT DO NOTHING did not skip): every writer is
-- covered, and no writer sends its keys a second time to mark them. Marking per station cost as
-- much as storing the readings (a batch of 5,000 readings touched ~2,000 station-hours); a batch
-- touches one or two (metric, hour) pairs. The refresh recomputes a marked hour for every station
-- of that metric, which it did anyway in steady state (every station's current hour is dirty), and
-- a BRIN index on ts finds that hour's rows in its daily partition.
CREATE TABLE ingest.rollup_stale (
    metric text NOT NULL,
    hour   timestamptz NOT NULL,
    PRIMARY KEY (metric, hour)
);
INSERT INTO ingest.rollup_stale (metric, hour)
SELECT DISTINCT metric, hour FROM ingest.rollup_dirty;
DROP TABLE ingest.rollup_dirty;

CREATE INDEX readings_ts_brin ON ingest.readings USING brin (ts);
CREATE INDEX readings_1h_metric_bucket ON ingest.readings_1h (metric, bucket);
CREATE INDEX readings_1d_metric_bucket ON ingest.readings_1d (metric, bucket);

CREATE FUNCTION ingest.mark_rollups_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ingest.rollup_stale (metric, hour)
    SELECT DISTINCT metric, date_trunc('hour', ts, 'UTC') FROM inserted
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER readings_mark_rollups_stale
    AFTER INSERT ON ingest.readings
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.mark_rollups_stale();
