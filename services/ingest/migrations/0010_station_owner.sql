-- An enterprise's stations: owner_enterprise names the enterprise by its unified social credit
-- code (atlas.enterprises.id); the online-monitoring KPI and offline notices look them up.
CREATE INDEX stations_owner_idx ON ingest.stations (owner_enterprise)
    WHERE owner_enterprise IS NOT NULL;
