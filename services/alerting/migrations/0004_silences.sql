-- silences (notifications held back while they match) and stations in maintenance

CREATE TABLE alerting.silences (
    id            bigserial PRIMARY KEY,
    station_id    text,
    region_prefix text CHECK (region_prefix ~ '^[0-9]{1,12}$'),
    hazard        text,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL CHECK (ends_at > starts_at),
    author        text NOT NULL,
    reason        text NOT NULL CHECK (length(reason) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (station_id IS NOT NULL OR region_prefix IS NOT NULL OR hazard IS NOT NULL)
);
CREATE INDEX silences_time_idx ON alerting.silences (ends_at, starts_at);

-- readings of a station in maintenance may be anything: they raise no warning
CREATE TABLE alerting.maintenance (
    station_id  text PRIMARY KEY,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    author      text NOT NULL,
    reason      text NOT NULL
);

-- whether a version went out to its recipients, waits for its group timer, or is held back
-- (by a silence, by a higher warning that inhibits it), or was superseded before it went out
ALTER TABLE alerting.warning_versions
    ADD COLUMN dispatch     text NOT NULL DEFAULT 'dispatched'
                            CHECK (dispatch IN ('scheduled', 'dispatched', 'silenced', 'inhibited',
                                                'released', 'superseded')),
    ADD COLUMN dispatch_at  timestamptz,
    ADD COLUMN silenced_by  bigint,
    ADD COLUMN inhibited_by text,
    -- when the reading behind the version was taken (its risk event's time): the start of the
    -- reading → delivery latency
    ADD COLUMN cause_time   timestamptz;
CREATE INDEX warning_versions_held_idx ON alerting.warning_versions (warning_id)
    WHERE dispatch IN ('silenced', 'inhibited');
CREATE INDEX warning_versions_scheduled_idx ON alerting.warning_versions (dispatch_at)
    WHERE dispatch = 'scheduled';

ALTER TABLE alerting.warnings
    ADD COLUMN last_dispatch_at timestamptz,
    ADD COLUMN reminders        integer NOT NULL DEFAULT 0;
