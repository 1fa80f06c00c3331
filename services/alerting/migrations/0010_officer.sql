-- Warnings the bureau issues itself (officer-issued), beside those risk events raise: drafted,
-- approved by a second person where the level requires it, issued, updated and cancelled through
-- the same versions, ledger, 叫应 and CAP output. An officer may also take over a sensor warning.

ALTER TABLE alerting.warnings
    -- who raised it: risk events ('sensor') or a duty officer ('officer')
    ADD COLUMN origin         text NOT NULL DEFAULT 'sensor' CHECK (origin IN ('sensor', 'officer')),
    -- the GB/T 35965.1 event type (11B03 rainstorm …), where one is known for the hazard
    ADD COLUMN event_type     text CHECK (event_type ~ '^[0-9]{2}[A-Z][0-9]{2,3}$'),
    -- the divisions it covers; empty: its region_code alone (every sensor warning)
    ADD COLUMN areas          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN created_by     text,
    -- an officer decides this warning now: the automatic path records its stations' levels but
    -- issues no version of it (set for every officer warning, and for a sensor warning an
    -- officer took over)
    ADD COLUMN controlled_by  text,
    ADD COLUMN controlled_at  timestamptz;

-- A draft or a request awaiting approval holds no place in its group: only a standing warning is
-- the group's one open warning. (Sensor warnings are never drafts.)
DROP INDEX alerting.warnings_open_idx;
CREATE UNIQUE INDEX warnings_open_idx ON alerting.warnings (hazard, region_code)
    WHERE state IN ('issued', 'updated');

ALTER TABLE alerting.warning_versions
    -- what people should do, as the officer wrote it; null: the hazard's template
    ADD COLUMN instruction text,
    ADD COLUMN effective   timestamptz,
    -- the divisions and the CAP polygon of this version (an update may change the area)
    ADD COLUMN areas       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN polygon     text;

-- what an officer asks of a warning: issue its draft, update it, cancel it. The draft of a new
-- warning is its issue request, edited until it is submitted. A request whose level needs it
-- waits for an approver who is not its author; at most one is open per warning.
CREATE TABLE alerting.warning_requests (
    id           bigserial PRIMARY KEY,
    warning_id   text NOT NULL REFERENCES alerting.warnings (id),
    action       text NOT NULL CHECK (action IN ('issue', 'update', 'cancel')),
    state        text NOT NULL CHECK (state IN ('draft', 'pending_approval', 'done',
                                                'rejected', 'withdrawn')),
    content      jsonb NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    reason       text,
    -- the version it made
    version      integer
);
CREATE UNIQUE INDEX warning_requests_open_idx ON alerting.warning_requests (warning_id)
    WHERE state IN ('draft', 'pending_approval');
CREATE INDEX warning_requests_queue_idx ON alerting.warning_requests (requested_at)
    WHERE state = 'pending_approval';

-- An officer cancelled a warning risk raised: the same evidence does not raise it again until
-- the hold ends (a higher level still does).
CREATE TABLE alerting.officer_holds (
    hazard      text NOT NULL,
    region_code text NOT NULL,
    level       smallint NOT NULL,
    until       timestamptz NOT NULL,
    warning_id  text NOT NULL,
    author      text NOT NULL,
    PRIMARY KEY (hazard, region_code)
);
