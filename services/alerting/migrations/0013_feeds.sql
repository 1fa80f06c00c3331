-- Feeds gone silent (stations.health.v1 and risk's no_data events): one incident per subject
-- (an enterprise's stations, or a station of no enterprise) from its first station offline to
-- its last back. Its notices are ledger rows of warning id 'feed:<incident id>': version 1 the
-- offline notice, 2 the escalation, 3 the back-online notice.
CREATE TABLE alerting.feed_incidents (
    id             bigserial PRIMARY KEY,
    subject        text NOT NULL,
    enterprise     text,
    region_code    text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    -- the enterprise's name (from the 一张图) or the station's id, as the notices say it
    title          text NOT NULL,
    opened_at      timestamptz NOT NULL,
    closed_at      timestamptz,
    notified_at    timestamptz,
    -- the jurisdiction whose duty officers were told: the escalation goes to the level above
    notified_level text,
    escalated_at   timestamptz,
    -- why the offline notice has not gone out yet (a silence, maintenance, nobody on duty)
    held_by        text
);
CREATE UNIQUE INDEX feed_incidents_open_idx ON alerting.feed_incidents (subject)
    WHERE closed_at IS NULL;
CREATE INDEX feed_incidents_due_idx ON alerting.feed_incidents (opened_at)
    WHERE closed_at IS NULL AND (notified_at IS NULL OR escalated_at IS NULL);

-- a station's signal in an incident: offline while either ingest's health or risk's no-data
-- says so
CREATE TABLE alerting.feed_members (
    incident_id bigint NOT NULL REFERENCES alerting.feed_incidents (id),
    station_id  text NOT NULL,
    source      text NOT NULL CHECK (source IN ('health', 'no_data')),
    offline     boolean NOT NULL,
    since       timestamptz NOT NULL,
    last_seen   timestamptz,
    PRIMARY KEY (incident_id, station_id, source)
);

-- which enterprise a station belongs to, as its health events last said (risk's no-data events
-- do not carry it)
CREATE TABLE alerting.feed_stations (
    station_id  text PRIMARY KEY,
    enterprise  text,
    region_code text NOT NULL
);

ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_purpose_check;
ALTER TABLE alerting.deliveries ADD CONSTRAINT deliveries_purpose_check
    CHECK (purpose IN ('warning', 'voice', 'escalation', 'relay', 'reminder', 'digest',
                       'expiry', 'feed'));
