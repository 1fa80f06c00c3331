-- The regions each shelter serves, one row each, kept by a trigger from shelters.serves: "which
-- shelters serve this area" becomes two index searches (a served code equal to one of the area's
-- codes or the codes above them, or inside the area's prefix) instead of a scan of every shelter.
CREATE TABLE atlas.shelter_serves (
    shelter_id  text NOT NULL REFERENCES atlas.shelters (id) ON DELETE CASCADE,
    region_code text NOT NULL,
    PRIMARY KEY (shelter_id, region_code)
);
CREATE INDEX shelter_serves_region_idx ON atlas.shelter_serves (region_code text_pattern_ops);

CREATE FUNCTION atlas.keep_shelter_serves() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM atlas.shelter_serves WHERE shelter_id = NEW.id;
    INSERT INTO atlas.shelter_serves (shelter_id, region_code)
    SELECT DISTINCT NEW.id, c FROM unnest(coalesce(NEW.serves, '{}'::text[])) AS c;
    RETURN NULL;
END $$;

CREATE TRIGGER shelter_serves_kept AFTER INSERT OR UPDATE OF serves ON atlas.shelters
    FOR EACH ROW EXECUTE FUNCTION atlas.keep_shelter_serves();

INSERT INTO atlas.shelter_serves (shelter_id, region_code)
SELECT DISTINCT s.id, c FROM atlas.shelters s, unnest(coalesce(s.serves, '{}'::text[])) AS c;
