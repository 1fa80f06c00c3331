-- Per (station, rule) state: the checkpoint that survives restarts.
CREATE TABLE risk.rule_state (
    station_id  text NOT NULL,
    rule_id     text NOT NULL,
    hazard      text NOT NULL,
    region_code text NOT NULL,
    level       smallint NOT NULL DEFAULT 0,
    since       timestamptz,
    last_ts     timestamptz,
    last_value  double precision,
    evidence    jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, rule_id)
);
CREATE INDEX rule_state_region_idx ON risk.rule_state (region_code text_pattern_ops, hazard);

-- Offsets of readings.v1 applied to the state above, written in the same transaction as the
-- state: a re-delivered message at or below the stored offset is skipped, so a crash between the
-- state write and the Kafka commit applies nothing twice.
CREATE TABLE risk.applied_offsets (
    topic     text NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Transactional outbox for risk.events.v1: written with the state, relayed to Kafka afterwards.
CREATE TABLE risk.outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON risk.outbox (seq) WHERE published_at IS NULL;
