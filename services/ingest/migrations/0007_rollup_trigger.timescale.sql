-- TimescaleDB: continuous aggregates follow late data by themselves (their invalidation log);
-- nothing to mark. The plain-PostgreSQL path marks hours with a trigger.
SELECT 1;
