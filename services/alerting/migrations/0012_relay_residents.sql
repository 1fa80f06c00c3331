-- An earthquake early warning relayed to the residents of its area: its people's rows are
-- committed first, then its residents part by part, each part going out as it commits. Until the
-- last part is written the message is marked, so that a re-delivery after a crash finishes it.
ALTER TABLE alerting.relayed
    ADD COLUMN residents_pending boolean NOT NULL DEFAULT false,
    -- the text relayed (【转发·sender】 …), which the residents' rows carry too
    ADD COLUMN text text;
