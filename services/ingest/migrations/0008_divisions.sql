-- China's administrative divisions, as the National Bureau of Statistics codes them (统计用区划
-- 代码): every code 12 digits (a province 110000000000, a county 110101000000, a township
-- 110101001000, a village 110101001001), its name and the code above it. Loaded from a published
-- edition by `qianshao divisions load`; a reload keeps codes the new edition dropped, marked
-- retired, because old warnings still name them. A published read model: the other services
-- read names from it.
CREATE TABLE ingest.divisions (
    code       text PRIMARY KEY CHECK (code ~ '^\d{12}$'),
    name       text NOT NULL CHECK (name <> ''),
    level      smallint NOT NULL CHECK (level BETWEEN 1 AND 5), -- province, city, county, township, village
    parent     text CHECK (parent ~ '^\d{12}$'),
    edition    text NOT NULL,
    retired_in text
);
CREATE INDEX divisions_parent_idx ON ingest.divisions (parent);
CREATE INDEX divisions_name_idx ON ingest.divisions (name text_pattern_ops);

CREATE TABLE ingest.division_editions (
    edition   text PRIMARY KEY,
    source    text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    rows      integer NOT NULL
);
