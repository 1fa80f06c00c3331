-- Upstream warnings received as CAP 1.2 / GB/T 35965.1 XML: each message once (by identifier),
-- the XML as received, and the state an Update or Cancel left it in.
CREATE TABLE ingest.upstream_warnings (
    identifier    text PRIMARY KEY,
    sender        text NOT NULL,
    sent          timestamptz NOT NULL,
    status        text NOT NULL,
    msg_type      text NOT NULL CHECK (msg_type IN ('Alert', 'Update', 'Cancel')),
    event         text NOT NULL,
    level         text NOT NULL,
    region_codes  text[] NOT NULL,
    refs          text[] NOT NULL DEFAULT '{}',
    expires       timestamptz,
    state         text NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'updated', 'cancelled')),
    replaced_by   text,
    source        text NOT NULL,
    xml           text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upstream_warnings_active ON ingest.upstream_warnings (sent DESC) WHERE state = 'active';
