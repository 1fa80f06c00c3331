-- A broadcast to residents is claimed a provider request at a time, not a ledger row at a time.
--
-- Each resident's ledger row is still written at approval (one row per version, recipient and
-- channel), but 'queued' in a batch of up to 200 numbers, outside the due index. The delivery
-- worker claims batches (one row each, with a lease and the names of the requests made for them,
-- like ledger rows), sends each as one request, and updates its rows once: sent, or out of the
-- batch into the ordinary retry path when the provider refused a number. Claiming a million rows
-- one by one cost a million more updates, each walking the due index past the rows other rounds
-- held.
CREATE TABLE alerting.delivery_batches (
    id              bigserial PRIMARY KEY,
    warning_id      text NOT NULL,
    version         integer NOT NULL,
    channel         text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'done')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempt_keys    text[] NOT NULL DEFAULT '{}',
    priority        smallint NOT NULL DEFAULT 1,
    seq             integer NOT NULL,  -- its place in the broadcast
    size            integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_batches_due_idx ON alerting.delivery_batches (priority, next_attempt_at, id)
    WHERE state IN ('pending', 'sending');

ALTER TABLE alerting.deliveries ADD COLUMN batch_id bigint;
CREATE INDEX deliveries_batch_idx ON alerting.deliveries (batch_id) WHERE state = 'queued';

ALTER TABLE alerting.deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE alerting.deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('queued', 'pending', 'sending', 'sent', 'delivered', 'failed', 'confirmed',
                     'held', 'digested'));
