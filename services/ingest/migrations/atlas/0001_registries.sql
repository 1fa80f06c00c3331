-- The 一张图: what a bureau can act with and must protect, on PostGIS. Positions are WGS 84
-- points (EPSG:4326; CGCS2000 taken as equal); each registry has a GiST index on its points and
-- one on their geography (metres) for distances and nearest-first searches. Written by ingest; a
-- published read model (alerting reads an enterprise's safety officer from it).
CREATE EXTENSION IF NOT EXISTS postgis;

-- the prefix a 12-digit division code's area covers (a county 511124000000 covers 511124)
CREATE FUNCTION atlas.region_prefix(code text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN right(code, 10) = '0000000000' THEN left(code, 2)
                WHEN right(code, 8) = '00000000' THEN left(code, 4)
                WHEN right(code, 6) = '000000' THEN left(code, 6)
                WHEN right(code, 3) = '000' THEN left(code, 9)
                ELSE code END
$$;

CREATE TABLE atlas.enterprises (
    id                   text PRIMARY KEY CHECK (id ~ '^[0-9A-HJ-NP-RTUWXY]{2}[0-9]{6}[0-9A-HJ-NP-RTUWXY]{10}$'),
    name                 text NOT NULL,
    region_code          text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom                 geometry(Point, 4326) NOT NULL,
    address              text,
    contact_name         text,
    contact_phone        text,
    sector               text NOT NULL,
    risk_grade           text,
    monitoring_required  boolean NOT NULL DEFAULT false,
    safety_officer_name  text,
    safety_officer_phone text,
    employees            integer,
    row_hash             text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    updated_by           text NOT NULL
);

CREATE TABLE atlas.major_hazards (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326) NOT NULL,
    address       text,
    contact_name  text,
    contact_phone text,
    enterprise_id text NOT NULL REFERENCES atlas.enterprises (id),
    grade         text NOT NULL CHECK (grade IN ('1', '2', '3', '4')),
    substances    text,
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);
CREATE INDEX major_hazards_enterprise_idx ON atlas.major_hazards (enterprise_id);

CREATE TABLE atlas.teams (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326) NOT NULL,
    address       text,
    contact_name  text,
    contact_phone text,
    team_type     text NOT NULL,
    members       integer NOT NULL CHECK (members >= 0),
    equipment     text,
    on_call_name  text NOT NULL,
    on_call_phone text NOT NULL,
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);

CREATE TABLE atlas.depots (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326) NOT NULL,
    address       text,
    contact_name  text,
    contact_phone text,
    depot_level   text,
    area_m2       double precision,
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);

CREATE TABLE atlas.stock (
    depot_id   text NOT NULL REFERENCES atlas.depots (id) ON DELETE CASCADE,
    item       text NOT NULL,
    quantity   double precision NOT NULL CHECK (quantity >= 0),
    unit       text NOT NULL,
    row_hash   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    PRIMARY KEY (depot_id, item)
);

CREATE TABLE atlas.shelters (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    region_code      text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom             geometry(Point, 4326) NOT NULL,
    address          text,
    contact_name     text,
    contact_phone    text,
    capacity_persons integer NOT NULL CHECK (capacity_persons >= 0),
    area_m2          double precision,
    is_open          boolean NOT NULL DEFAULT false,
    serves           text[],
    service_radius_m integer,
    row_hash         text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL
);

CREATE TABLE atlas.experts (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326),
    address       text,
    contact_name  text,
    contact_phone text,
    expertise     text NOT NULL,
    title         text,
    organisation  text,
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);

CREATE TABLE atlas.plans (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    region_code    text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    contact_name   text,
    contact_phone  text,
    hazard         text NOT NULL,
    response_level text,
    issuer         text,
    document       text,
    issued_on      text,
    row_hash       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text NOT NULL
);

CREATE TABLE atlas.targets (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326) NOT NULL,
    address       text,
    contact_name  text,
    contact_phone text,
    target_type   text NOT NULL,
    population    integer NOT NULL CHECK (population >= 0),
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);

CREATE TABLE atlas.hazard_sites (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL CHECK (region_code ~ '^[0-9]{12}$'),
    geom          geometry(Point, 4326) NOT NULL,
    address       text,
    contact_name  text,
    contact_phone text,
    site_type     text NOT NULL,
    households    integer,
    persons       integer NOT NULL CHECK (persons >= 0),
    monitor_name  text,
    monitor_phone text,
    row_hash      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL
);

-- spatial and region indexes, the same for every located registry
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['enterprises', 'major_hazards', 'teams', 'depots', 'shelters',
                             'experts', 'targets', 'hazard_sites'] LOOP
        EXECUTE format('CREATE INDEX %1$s_geom_idx ON atlas.%1$s USING gist (geom)', t);
        EXECUTE format('CREATE INDEX %1$s_geog_idx ON atlas.%1$s USING gist ((geom::geography))', t);
        EXECUTE format('CREATE INDEX %1$s_region_idx ON atlas.%1$s (region_code text_pattern_ops)', t);
    END LOOP;
END $$;
CREATE INDEX plans_region_idx ON atlas.plans (region_code text_pattern_ops);

-- every change to a registry: who, when, what it was and what it became
CREATE TABLE atlas.audit (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    registry  text NOT NULL,
    record_id text NOT NULL,
    action    text NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    via       text NOT NULL,  -- api, import:<file name>
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_record_idx ON atlas.audit (registry, record_id, id);
