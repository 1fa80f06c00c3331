-- The whole state of a station's rules (series windows, forecast runs, per-rule levels), written in
-- the same transaction as the applied offsets and the outbox. rule_state stays the queryable view.
CREATE TABLE risk.station_state (
    station_id  text PRIMARY KEY,
    region_code text NOT NULL,
    state       jsonb NOT NULL,
    last_seen   timestamptz,
    silent      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX station_state_region_idx ON risk.station_state (region_code text_pattern_ops);

ALTER TABLE risk.rule_state ADD COLUMN pack text NOT NULL DEFAULT '';
ALTER TABLE risk.rule_state ADD COLUMN urgency text NOT NULL DEFAULT 'Immediate';

-- The level of each region at each administrative level and hazard, as last published.
CREATE TABLE risk.region_level (
    region_code text NOT NULL,
    hazard      text NOT NULL,
    admin_level text NOT NULL CHECK (admin_level IN ('village', 'township', 'county')),
    level       smallint NOT NULL,
    counts      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_code, hazard)
);

-- Warnings issued upstream (warnings.upstream.v1), the context of compound rules.
CREATE TABLE risk.upstream_warnings (
    identifier   text PRIMARY KEY,
    sender       text NOT NULL,
    hazard       text NOT NULL,
    level        smallint NOT NULL,
    region_codes text[] NOT NULL,
    sent         timestamptz NOT NULL,
    expires      timestamptz,
    active       boolean NOT NULL DEFAULT true,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- Stricter values set by a bureau for a region (a code prefix): {rule_id: {level: value}}.
CREATE TABLE risk.overrides (
    region_prefix text NOT NULL CHECK (region_prefix ~ '^[0-9]{2,12}$'),
    rule_id       text NOT NULL,
    level         text NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
    value         double precision NOT NULL,
    author        text NOT NULL,
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_prefix, rule_id, level)
);
