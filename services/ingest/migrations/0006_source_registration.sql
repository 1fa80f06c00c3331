-- A source (an upstream platform or feed) may be allowed to register the stations it reports for
-- the first time, in its own region, with a default kind (else one inferred from the metric).
ALTER TABLE ingest.sources
    ADD COLUMN region_code  text CHECK (region_code ~ '^[0-9]{12}$'),
    ADD COLUMN station_kind text CHECK (station_kind ~ '^[a-z0-9_]+$'),
    ADD COLUMN interval_s   integer NOT NULL DEFAULT 300 CHECK (interval_s > 0),
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT sources_auto_register_needs_region
        CHECK (NOT auto_register OR region_code IS NOT NULL);
