-- Station registry and the sources that push to us.
CREATE TABLE ingest.stations (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:\-]{1,64}$'),
    name             text NOT NULL,
    kind             text NOT NULL,
    region_code      text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    lat              double precision CHECK (lat BETWEEN -90 AND 90),
    lon              double precision CHECK (lon BETWEEN -180 AND 180),
    owner_enterprise text,
    interval_s       integer NOT NULL DEFAULT 300 CHECK (interval_s > 0),
    attributes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    maintenance      boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stations_region_idx ON ingest.stations (region_code text_pattern_ops);

CREATE TABLE ingest.sources (
    id             text PRIMARY KEY,
    auto_register  boolean NOT NULL DEFAULT false,
    last_seen      timestamptz,
    messages_total bigint NOT NULL DEFAULT 0
);

-- A reading that arrived again for the same (station, metric, ts) with another value: the first
-- value is kept, the conflict is recorded here.
CREATE TABLE ingest.reading_conflicts (
    station_id     text NOT NULL,
    metric         text NOT NULL,
    ts             timestamptz NOT NULL,
    kept_value     double precision NOT NULL,
    rejected_value double precision NOT NULL,
    source         text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, metric, ts, rejected_value)
);

CREATE TABLE ingest.forecasts (
    station_id  text NOT NULL,
    metric      text NOT NULL,
    issued_at   timestamptz NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    source      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, metric, issued_at, ts)
);
