-- Live updates for the duty console: after a statement changes warnings, their requests and
-- publications, 叫应 tasks or deliveries, one notification on channel qianshao_live names the
-- warnings it touched and their regions (the gateway streams them to the operators who may see
-- those regions). A notification is delivered at commit, so it never announces what was rolled
-- back. The payload stays well under NOTIFY's 8,000 bytes: at most 40 warnings, then "more".
CREATE FUNCTION alerting.notify_live() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    items json;
    total integer;
BEGIN
    IF TG_TABLE_NAME = 'warnings' THEN
        SELECT json_agg(json_build_object('id', id, 'region', region_code)), count(*)
          INTO items, total
          FROM (SELECT id, region_code FROM changed ORDER BY id LIMIT 41) c;
    ELSIF TG_TABLE_NAME = 'deliveries' THEN
        -- claims (pending → sending) are no news; what was sent, delivered or failed is
        SELECT json_agg(json_build_object('id', w.id, 'region', w.region_code)), count(*)
          INTO items, total
          FROM (SELECT DISTINCT warning_id FROM changed
                 WHERE state IN ('sent', 'delivered', 'failed', 'confirmed')
                 ORDER BY warning_id LIMIT 41) c
          JOIN alerting.warnings w ON w.id = c.warning_id;
    ELSE
        SELECT json_agg(json_build_object('id', w.id, 'region', w.region_code)), count(*)
          INTO items, total
          FROM (SELECT DISTINCT warning_id FROM changed ORDER BY warning_id LIMIT 41) c
          JOIN alerting.warnings w ON w.id = c.warning_id;
    END IF;
    IF total > 0 THEN
        PERFORM pg_notify('qianshao_live', json_build_object(
            'kind', TG_ARGV[0],
            'warnings', (SELECT json_agg(x) FROM (SELECT x FROM json_array_elements(items) x
                                                   LIMIT 40) s),
            'more', total > 40)::text);
    END IF;
    RETURN NULL;
END $$;

-- a trigger with transition tables fires for one event, so inserts and updates have one each
CREATE TRIGGER warnings_live_ins AFTER INSERT ON alerting.warnings
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('warning');
CREATE TRIGGER warnings_live_upd AFTER UPDATE ON alerting.warnings
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('warning');
CREATE TRIGGER requests_live_ins AFTER INSERT ON alerting.warning_requests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('request');
CREATE TRIGGER requests_live_upd AFTER UPDATE ON alerting.warning_requests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('request');
CREATE TRIGGER publications_live_ins AFTER INSERT ON alerting.publications
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('publication');
CREATE TRIGGER publications_live_upd AFTER UPDATE ON alerting.publications
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('publication');
CREATE TRIGGER confirm_live_upd AFTER UPDATE ON alerting.confirm_tasks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('confirmation');
CREATE TRIGGER confirm_live_ins AFTER INSERT ON alerting.confirm_tasks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('confirmation');
CREATE TRIGGER deliveries_live_upd AFTER UPDATE ON alerting.deliveries
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION alerting.notify_live('delivery');
