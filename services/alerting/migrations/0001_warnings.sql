-- risk events already applied (re-delivery is a no-op)
CREATE TABLE alerting.processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerting.warnings (
    id           text PRIMARY KEY,
    hazard       text NOT NULL,
    region_code  text NOT NULL,
    level        smallint NOT NULL,
    state        text NOT NULL CHECK (state IN
                   ('draft', 'pending_approval', 'issued', 'updated', 'cancelled', 'expired')),
    kind         text NOT NULL DEFAULT 'internal' CHECK (kind IN ('internal', 'public')),
    status       text NOT NULL DEFAULT 'Actual' CHECK (status IN ('Actual', 'Exercise', 'Test')),
    identifier   text NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz
);
-- one open warning per (hazard, region) at a time
CREATE UNIQUE INDEX warnings_open_idx ON alerting.warnings (hazard, region_code)
    WHERE state IN ('draft', 'pending_approval', 'issued', 'updated');
CREATE INDEX warnings_region_idx ON alerting.warnings (region_code text_pattern_ops, created_at DESC);

CREATE TABLE alerting.warning_stations (
    warning_id  text NOT NULL REFERENCES alerting.warnings (id),
    station_id  text NOT NULL,
    level       smallint NOT NULL,
    event_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (warning_id, station_id)
);

CREATE TABLE alerting.warning_versions (
    warning_id  text NOT NULL REFERENCES alerting.warnings (id),
    version     integer NOT NULL,
    msg_type    text NOT NULL CHECK (msg_type IN ('Alert', 'Update', 'Cancel')),
    level       smallint NOT NULL,
    identifier  text NOT NULL UNIQUE,
    sent        timestamptz NOT NULL,
    headline    text NOT NULL,
    description text NOT NULL,
    refs        text[] NOT NULL DEFAULT '{}',
    station_ids text[] NOT NULL DEFAULT '{}',
    cause_event text NOT NULL,
    PRIMARY KEY (warning_id, version)
);

-- who receives what: a channel, its target, a region scope, a minimum level, an optional hazard
CREATE TABLE alerting.subscriptions (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('webhook', 'wecom_robot')),
    target        text NOT NULL,
    secret        text,
    region_prefix text NOT NULL DEFAULT '' CHECK (region_prefix ~ '^[0-9]{0,12}$'),
    min_level     smallint NOT NULL DEFAULT 1 CHECK (min_level BETWEEN 1 AND 4),
    hazard        text,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- the delivery ledger (outbox): one row per (warning version, recipient, channel)
CREATE TABLE alerting.deliveries (
    id              bigserial PRIMARY KEY,
    warning_id      text NOT NULL,
    version         integer NOT NULL,
    recipient       text NOT NULL,
    channel         text NOT NULL,
    target          text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'delivered', 'failed', 'confirmed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (warning_id, version, recipient, channel)
);
CREATE INDEX deliveries_due_idx ON alerting.deliveries (next_attempt_at)
    WHERE state IN ('pending', 'sending');

CREATE TABLE alerting.audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    warning_id text,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE SEQUENCE alerting.warning_serial;
