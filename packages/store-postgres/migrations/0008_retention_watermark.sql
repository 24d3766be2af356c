-- Retention watermark: every event with an id below `pruned_below` has been deleted by
-- event_prune. State rebuilt from the log (the graph at a point in time, a history rebuild)
-- needs every event after its starting point; with the watermark a reader can tell "nothing
-- there" from "pruned" and refuse a replay over a deleted range instead of building, silently,
-- from part of the log. (Ids can have gaps below the first stored event without any prune: a
-- rolled-back append consumes ids. So the first id alone cannot tell.)
CREATE TABLE event_retention (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_below bigint      NOT NULL,
    pruned_at    timestamptz
);

-- Earlier versions left no record of a prune. Pruning needs a graph snapshot, so without one
-- nothing was pruned; with one, events missing below the first stored id are taken as pruned
-- (at worst this refuses a graph between a rolled-back first append and the oldest snapshot),
-- and an empty log with a snapshot was pruned up to the last id it ever gave.
INSERT INTO event_retention (pruned_below)
SELECT CASE WHEN EXISTS (SELECT 1 FROM projection_snapshot WHERE kind = 'graph')
            THEN coalesce((SELECT min(id) FROM event), pg_sequence_last_value(pg_get_serial_sequence('event', 'id')::regclass) + 1, 1)
            ELSE 1 END;

-- Earlier versions let a graph snapshot be saved under an event id past the head (a mistyped
-- --at-event); prune trusted it. Such a snapshot is no state of this log (and would be taken for
-- one once the log reaches its id), so it goes: after the watermark above, which counts it as
-- the snapshot an old prune went by.
DELETE FROM projection_snapshot
WHERE kind = 'graph'
  AND event_id > coalesce((SELECT max(id) FROM event), pg_sequence_last_value(pg_get_serial_sequence('event', 'id')::regclass), 0);

-- As in 0003, and it moves the watermark up when it deletes, and it only trusts snapshots of
-- stored events (none past the head).
CREATE OR REPLACE FUNCTION event_prune(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    watermark bigint;
    slowest   bigint;
    deleted   bigint;
BEGIN
    SELECT min(event_id) INTO watermark FROM projection_snapshot
    WHERE kind = 'graph' AND event_id <= (SELECT max(id) FROM event);
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
    IF deleted > 0 THEN
        UPDATE event_retention SET pruned_below = greatest(pruned_below, watermark), pruned_at = now();
    END IF;
    RETURN deleted;
END
$$;

-- history_edge (0006) again, with core's edgeIntervals as amended: a deactivation with no
-- activation open is an interval of unknown start only when it is the edge's first event. One
-- after a closed interval repeats a deactivation (Vitrage sends them again) and is no interval:
-- with a NULL start it made the edge active at every moment before it existed (`rca --at`).
CREATE OR REPLACE VIEW history_edge AS
SELECT source_id, target_id, label,
       CASE WHEN kind = 'a' THEN at END AS start_timestamp,
       CASE WHEN kind = 'a' THEN first_end ELSE at END AS end_timestamp,
       CASE WHEN kind = 'a' THEN payload END AS payload
FROM (
    SELECT source_id, target_id, label, kind, at, payload,
           lag(kind) OVER (PARTITION BY source_id, target_id, label ORDER BY at, kind) AS previous_kind,
           min(at) FILTER (WHERE kind = 'd') OVER (PARTITION BY source_id, target_id, label ORDER BY at DESC, kind DESC
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS first_end
    FROM history_edge_event
) points
WHERE (kind = 'a' AND previous_kind IS DISTINCT FROM 'a') OR (kind = 'd' AND previous_kind IS NULL);

-- The graph's snapshots under the name the design gives them (projection_snapshot holds every
-- projection's; 'graph' is the only kind so far).
CREATE VIEW graph_snapshot AS
    SELECT id, event_id, collector_timestamp, format, data, stats, created_at
    FROM projection_snapshot WHERE kind = 'graph';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        GRANT SELECT ON event_retention, graph_snapshot TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON event_retention, graph_snapshot TO vitrage_persistor_reader;
    END IF;
END
$$;
