-- Snapshots, checkpoints, wake-ups and retention (design §2, §4; issue "entity graph").

-- Projection state as of an event id, compressed. `kind` names the projection ('graph'), so
-- other projections can keep snapshots too; `format` names the encoding so a newer reader can
-- refuse an older layout instead of misreading it.
CREATE TABLE projection_snapshot (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text        NOT NULL,
    event_id            bigint      NOT NULL,
    collector_timestamp timestamptz,
    format              text        NOT NULL,
    data                bytea       NOT NULL,
    stats               jsonb       NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_snapshot_kind_event_key UNIQUE (kind, event_id)
);

-- Where each checkpointed reader of the log is: the last event id it has fully processed.
CREATE TABLE projection_checkpoint (
    name       text PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Followers wake up on a notification instead of polling: one per appending statement (a
-- batch), delivered when it commits. The payload is empty; followers read by id.
CREATE FUNCTION event_notify_appended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vitrage_persistor_event', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER event_notify_appended
    AFTER INSERT ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_notify_appended();

-- Retention: the only way events leave the log. Deletes events below the oldest kept graph
-- snapshot (so the graph can still be rebuilt), never past a checkpointed reader that has not
-- processed them yet, and never past `below` when given. Returns the number of events deleted.
CREATE FUNCTION event_prune(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    watermark bigint;
    slowest   bigint;
    deleted   bigint;
BEGIN
    SELECT min(event_id) INTO watermark FROM projection_snapshot WHERE kind = 'graph';
    IF watermark IS NULL THEN
        RAISE EXCEPTION 'no graph snapshot: nothing may be pruned' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT min(position) INTO slowest FROM projection_checkpoint;
    IF slowest IS NOT NULL THEN
        watermark := least(watermark, slowest + 1);
    END IF;
    IF below IS NOT NULL THEN
        watermark := least(watermark, below);
    END IF;
    PERFORM set_config('vitrage_persistor.retention', 'on', true);
    DELETE FROM event WHERE id < watermark;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('vitrage_persistor.retention', 'off', true);
    RETURN deleted;
END
$$;

-- The reader role reads snapshots and checkpoints too.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON projection_snapshot, projection_checkpoint TO vitrage_persistor_reader;
    END IF;
END
$$;
