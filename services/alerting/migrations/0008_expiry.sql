-- Expiry. Each version carries its CAP expires (sent + validity). Before it runs out, a warning
-- that risk still backs is renewed by an Update; one whose evidence lapsed is expired.
ALTER TABLE alerting.warning_versions ADD COLUMN expires timestamptz;
-- the current version's expires (warnings issued before this migration have none)
ALTER TABLE alerting.warnings ADD COLUMN expires_at timestamptz;
CREATE INDEX warnings_expiry_idx ON alerting.warnings (expires_at)
    WHERE state IN ('issued', 'updated') AND expires_at IS NOT NULL;
-- when risk last stated each station's level (its clock: the event's produced_at)
ALTER TABLE alerting.warning_stations ADD COLUMN seen_at timestamptz;
-- a station's rules of one hazard stand each on their own (a rain gauge's observed and forecast
-- rainstorm rules); the station's level is the highest. Rows from before have rule '' and are
-- replaced by the station's first event that names its rule.
ALTER TABLE alerting.warning_stations ADD COLUMN rule_id text NOT NULL DEFAULT '';
ALTER TABLE alerting.warning_stations DROP CONSTRAINT warning_stations_pkey;
ALTER TABLE alerting.warning_stations ADD PRIMARY KEY (warning_id, station_id, rule_id);
-- the newest risk event heard at all: risk is alive while this moves (its standing
-- announcements include every county roll-up, so it moves even when nothing stands)
CREATE TABLE alerting.risk_heard (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    heard_at timestamptz NOT NULL
);
-- duty officers are told of an expiry
ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_purpose_check;
ALTER TABLE alerting.deliveries ADD CONSTRAINT deliveries_purpose_check
    CHECK (purpose IN ('warning', 'voice', 'escalation', 'relay', 'reminder', 'digest',
                       'expiry'));
