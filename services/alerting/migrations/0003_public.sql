-- public warnings: resident broadcast lists, and publication with approval

-- residents' numbers per village (10^5 to 10^6 of them)
CREATE TABLE alerting.residents (
    id          bigserial PRIMARY KEY,
    region_code text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    phone       text NOT NULL CHECK (phone ~ '^\+?[0-9]{5,20}$'),
    -- takes part in drills
    drill       boolean NOT NULL DEFAULT false,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (region_code, phone)
);
CREATE INDEX residents_region_idx ON alerting.residents (region_code text_pattern_ops) WHERE active;

-- a request to make a warning version public, and the approver's decision
CREATE TABLE alerting.publications (
    id           bigserial PRIMARY KEY,
    warning_id   text NOT NULL REFERENCES alerting.warnings (id),
    version      integer NOT NULL,
    state        text NOT NULL CHECK (state IN ('pending_approval', 'approved', 'rejected',
                                                'superseded')),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    note         text,
    decided_by   text,
    decided_at   timestamptz,
    reason       text,
    escalated_at timestamptz,
    recipients   integer,
    UNIQUE (warning_id, version)
);
CREATE INDEX publications_pending_idx ON alerting.publications (requested_at)
    WHERE state = 'pending_approval';

-- people and endpoints before residents: a broadcast to a million numbers must not hold up the
-- next warning to the responsible persons
ALTER TABLE alerting.deliveries ADD COLUMN priority smallint NOT NULL DEFAULT 0;
DROP INDEX alerting.deliveries_due_idx;
CREATE INDEX deliveries_due_idx ON alerting.deliveries (priority, next_attempt_at, id)
    WHERE state IN ('pending', 'sending');
