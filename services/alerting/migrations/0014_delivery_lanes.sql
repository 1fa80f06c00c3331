-- each delivery lane claims the due rows of its own channels (services/alerting/workers/
-- delivery.py), in the order the shared due index gives
CREATE INDEX deliveries_lane_due_idx ON alerting.deliveries (channel, priority, next_attempt_at, id)
    WHERE state IN ('pending', 'sending');
CREATE INDEX delivery_batches_lane_due_idx
    ON alerting.delivery_batches (channel, priority, next_attempt_at, id)
    WHERE state IN ('pending', 'sending');
