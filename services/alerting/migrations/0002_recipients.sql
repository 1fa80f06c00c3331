-- people who receive warnings, what they subscribe to, who is on duty when, and 叫应 tasks

CREATE TABLE alerting.persons (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN
                    ('village_cadre', 'grid_worker', 'info_officer', 'enterprise_safety_officer',
                     'township_duty_officer', 'county_duty_officer', 'leader')),
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    -- the significant digits of region_code (the code without its trailing zero levels)
    jurisdiction  text NOT NULL CHECK (region_code LIKE jurisdiction || '%'),
    phone         text CHECK (phone ~ '^\+?[0-9]{5,20}$'),
    wechat_openid text,
    wecom_userid  text,
    email         text,
    -- receives drills (CAP status Exercise); only drill recipients ever get one
    drill         boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX persons_region_idx ON alerting.persons (region_code text_pattern_ops) WHERE active;
CREATE INDEX persons_jurisdiction_idx ON alerting.persons (jurisdiction) WHERE active;
-- an SMS reply is matched to its sender by number
CREATE INDEX persons_phone_idx ON alerting.persons (phone) WHERE active;

CREATE TABLE alerting.person_subscriptions (
    id         bigserial PRIMARY KEY,
    person_id  bigint NOT NULL REFERENCES alerting.persons (id) ON DELETE CASCADE,
    hazard     text,
    min_level  smallint NOT NULL DEFAULT 1 CHECK (min_level BETWEEN 1 AND 4),
    channels   text[] NOT NULL CHECK (channels <@ ARRAY['sms', 'wechat_mp', 'wecom_app', 'email']
                                      AND cardinality(channels) > 0)
);
CREATE INDEX person_subscriptions_person_idx ON alerting.person_subscriptions (person_id);

-- duty officers receive warnings, and 叫应 escalations, while on duty
CREATE TABLE alerting.duty_roster (
    id         bigserial PRIMARY KEY,
    person_id  bigint NOT NULL REFERENCES alerting.persons (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at)
);
CREATE INDEX duty_roster_time_idx ON alerting.duty_roster (starts_at, ends_at);

-- the ledger learns what a row is for, a text of its own when it is not the warning itself
-- (escalation notices), and the provider's reference for matching delivery receipts
ALTER TABLE alerting.deliveries
    ADD COLUMN purpose      text NOT NULL DEFAULT 'warning'
                            CHECK (purpose IN ('warning', 'voice', 'escalation', 'relay',
                                              'reminder')),
    ADD COLUMN message      text,
    ADD COLUMN provider     text,
    ADD COLUMN provider_ref text,
    ADD COLUMN delivered_at timestamptz,
    -- the names of the provider requests a batch row has been in, each written before its
    -- request goes out: after a crash the provider is asked what it took under any of them,
    -- instead of sending twice; a row known not to be out starts a new list
    ADD COLUMN attempt_keys text[] NOT NULL DEFAULT '{}';
-- a warning goes once to each recipient and channel; notices about it (escalations) are keyed
-- by their idempotency key alone
ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_warning_id_version_recipient_channel_key;
CREATE UNIQUE INDEX deliveries_warning_once_idx
    ON alerting.deliveries (warning_id, version, recipient, channel) WHERE purpose = 'warning';
CREATE INDEX deliveries_provider_ref_idx ON alerting.deliveries (provider, provider_ref)
    WHERE provider_ref IS NOT NULL;

-- 叫应: every responsible person in scope of a red (or configured orange) warning version confirms
CREATE TABLE alerting.confirm_tasks (
    id            bigserial PRIMARY KEY,
    warning_id    text NOT NULL REFERENCES alerting.warnings (id),
    version       integer NOT NULL,
    person_id     bigint NOT NULL REFERENCES alerting.persons (id),
    region_code   text NOT NULL,
    level         smallint NOT NULL,
    created_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    confirmed_via text CHECK (confirmed_via IN ('link', 'sms', 'api')),
    voice_at      timestamptz,
    escalated_at  timestamptz,
    escalated_to  bigint[],
    closed        boolean NOT NULL DEFAULT false,
    UNIQUE (warning_id, version, person_id)
);
CREATE INDEX confirm_tasks_open_idx ON alerting.confirm_tasks (created_at)
    WHERE confirmed_at IS NULL AND NOT closed;
CREATE INDEX confirm_tasks_person_idx ON alerting.confirm_tasks (person_id)
    WHERE confirmed_at IS NULL AND NOT closed;
CREATE INDEX confirm_tasks_region_idx ON alerting.confirm_tasks (region_code text_pattern_ops);
