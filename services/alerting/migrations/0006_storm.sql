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
