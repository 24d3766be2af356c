-- The writer appends; it does not choose ids. GENERATED ALWAYS does not stop
-- `INSERT ... OVERRIDING SYSTEM VALUE`, and a table-wide INSERT let a writer's login put an event
-- at any id: at 2^63 - 10^18 every reader stopped (an id past what they take), at 2^52 followers
-- scanned empty ranges for ever and never applied the events stored after it. The writer keeps
-- INSERT on the columns an append writes (COPY with a column list needs no more); `id` and
-- `persisted_at` are the database's.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        REVOKE INSERT ON event FROM vitrage_persistor_writer;
        GRANT INSERT (message_id, event_type, publisher_id, priority, collector_timestamp, payload) ON event TO vitrage_persistor_writer;
    END IF;
END
$$;
