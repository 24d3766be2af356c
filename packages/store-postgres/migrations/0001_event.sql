-- The append-only event log (design §4).
--
-- id order is delivery order: the persistor inserts each batch with ORDER BY delivery position,
-- and identity values are drawn in that order. payload is the notification payload; the other
-- columns come from the oslo.messaging message around it.
CREATE TABLE event (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collector_timestamp timestamptz NOT NULL,
    payload             jsonb       NOT NULL,
    message_id          uuid        NOT NULL,
    event_type          text        NOT NULL,
    publisher_id        text,
    priority            text,
    persisted_at        timestamptz NOT NULL DEFAULT now(),
    -- Redelivery never stores twice.
    CONSTRAINT event_message_id_key UNIQUE (message_id),
    CONSTRAINT event_payload_is_object CHECK (jsonb_typeof(payload) = 'object')
);

-- "graph at time T" and history windows look events up by collector time.
CREATE INDEX event_collector_timestamp_idx ON event (collector_timestamp);

-- Gap-free reading. PostgreSQL hands out identity values before commit, so two concurrent
-- appenders can commit ids out of order, and a reader following by id would skip the late
-- lower id for ever. Every INSERT statement therefore first takes one transaction-scoped
-- advisory lock: the next appender draws its ids only after the previous one committed or
-- rolled back, so ids become visible in increasing order. A statement-level BEFORE trigger
-- fires before any identity value is drawn, and covers inserts from any client, not only ours.
CREATE FUNCTION event_serialize_appends() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- 0x76697472 = 'vitr': the key is arbitrary but fixed; docs/operations.md names it.
    PERFORM pg_advisory_xact_lock(1986622578);
    RETURN NULL;
END
$$;

CREATE TRIGGER event_serialize_appends
    BEFORE INSERT ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_serialize_appends();
