-- storm mode: messages beyond a person's limit wait, held, and go out together as one digest
ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE alerting.deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'sending', 'sent', 'delivered', 'failed', 'confirmed',
                     'held', 'digested'));
ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_purpose_check;
ALTER TABLE alerting.deliveries ADD CONSTRAINT deliveries_purpose_check
    CHECK (purpose IN ('warning', 'voice', 'escalation', 'relay', 'reminder', 'digest'));
CREATE INDEX deliveries_held_idx ON alerting.deliveries (recipient, channel) WHERE state = 'held';
CREATE INDEX deliveries_recent_idx ON alerting.deliveries (recipient, created_at)
    WHERE recipient LIKE 'person:%';

-- a warning row is unique by (version, recipient, channel), which its key is made of: only the
-- other rows (escalations, digests …) need the key index, and a broadcast to a million residents
-- maintains one index fewer on each of its writes
ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_idempotency_key_key;
CREATE UNIQUE INDEX deliveries_key_idx ON alerting.deliveries (idempotency_key)
    WHERE purpose <> 'warning';

-- upper-level platforms subscribe to CAP documents
ALTER TABLE alerting.subscriptions DROP CONSTRAINT subscriptions_channel_check;
ALTER TABLE alerting.subscriptions ADD CONSTRAINT subscriptions_channel_check
    CHECK (channel IN ('webhook', 'wecom_robot', 'cap_push'));
