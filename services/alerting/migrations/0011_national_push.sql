-- upper-level platforms that take the national release system's own message form (GB/T 35965.1
-- as the provincial and national platforms exchange it) rather than OASIS CAP
ALTER TABLE alerting.subscriptions DROP CONSTRAINT subscriptions_channel_check;
ALTER TABLE alerting.subscriptions ADD CONSTRAINT subscriptions_channel_check
    CHECK (channel IN ('webhook', 'wecom_robot', 'cap_push', 'national_push'));
