-- Health of stations and sources. A station's last_seen is the time of its newest observation
-- (never later than when it was stored); online is the state last announced on
-- stations.health.v1. Messages per source and topic are counted per minute.
CREATE TABLE ingest.station_health (
    station_id text PRIMARY KEY REFERENCES ingest.stations (id) ON DELETE CASCADE,
    last_seen  timestamptz NOT NULL,
    online     boolean NOT NULL DEFAULT true,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingest.source_minutes (
    source    text NOT NULL,
    topic     text NOT NULL,
    minute    timestamptz NOT NULL,
    messages  bigint NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (source, topic, minute)
);
