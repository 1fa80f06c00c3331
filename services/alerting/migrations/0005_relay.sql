-- warnings issued by others (the weather service, the city), relayed to our recipients
CREATE TABLE alerting.relayed (
    identifier   text PRIMARY KEY,
    sender       text NOT NULL,
    sent         timestamptz NOT NULL,
    msg_type     text NOT NULL,
    status       text NOT NULL,
    event        text NOT NULL,
    hazard       text NOT NULL,
    level        smallint NOT NULL,
    region_code  text NOT NULL,
    region_codes text[] NOT NULL,
    headline     text NOT NULL,
    refs         text[] NOT NULL DEFAULT '{}',
    relayed_at   timestamptz NOT NULL,
    recipients   integer NOT NULL DEFAULT 0
);
