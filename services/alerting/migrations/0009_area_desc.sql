-- The region of a version in words, as it was named when the version was issued (CAP areaDesc:
-- a document once sent does not change when the registry does). Null for versions written before
-- places had names, or for a code the registry did not know.
ALTER TABLE alerting.warning_versions ADD COLUMN area_desc text;
