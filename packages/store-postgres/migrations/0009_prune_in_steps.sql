-- Prune in steps. One DELETE of every event below the watermark ran as one statement under the
-- pool's statement timeout (60 s): a first prune of a long history (~37 million events on the
-- benchmark machine, 1.6 s a million) was cancelled on every attempt, and it wrote all its WAL
-- in one transaction. The store now asks where a prune may go (event_prune_watermark) and calls
-- event_prune with rising `below`s, each step its own statement and transaction; each step
-- still takes the lowest of the snapshots, the checkpoints and its `below` at that moment.

-- How far event_prune(below) would delete now: every event with an id below the result.
CREATE FUNCTION event_prune_watermark(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    watermark bigint;
    slowest   bigint;
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
    RETURN watermark;
END
$$;

-- As in 0008, with the watermark from the function above.
CREATE OR REPLACE FUNCTION event_prune(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    watermark bigint := event_prune_watermark(below);
    deleted   bigint;
BEGIN
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
