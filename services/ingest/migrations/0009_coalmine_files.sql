-- The coal-mine networking files ingest has read from its landing directory: each (name, content)
-- once. A row is written after the file's stations are registered and its readings are on the
-- raw topic; a crash in between reads the file again, which changes nothing (stations are
-- upserted, readings de-duplicated by the consumer).
CREATE TABLE ingest.coalmine_files (
    name         text        NOT NULL,
    sha256       text        NOT NULL,
    field_map    text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('definitions', 'realtime', 'unreadable')),
    mine_code    text,
    records      integer     NOT NULL DEFAULT 0,
    stations     integer     NOT NULL DEFAULT 0,
    readings     integer     NOT NULL DEFAULT 0,
    ignored      integer     NOT NULL DEFAULT 0,
    faults       integer     NOT NULL DEFAULT 0,
    detail       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, sha256)
);
CREATE INDEX coalmine_files_recent ON ingest.coalmine_files (processed_at DESC);
