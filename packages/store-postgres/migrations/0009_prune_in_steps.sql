-- Prune in steps. One DELETE of every event below the watermark ran as one statement under the
-- pool's statement timeout (60 s): a first prune of a long history (~37 million events on the
-- benchmark machine, 1.6 s a million) was cancelled on every attempt, and it wrote all its WAL
-- in one transaction. The store now asks where a prune may go (event_prune_watermark) and calls
-- event_prune_step over consecutive id ranges, each its own statement and transaction; each
-- step still takes the lowest of the snapshots, the checkpoints and its `below` at that moment.

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

-- Deletes the events in [from_id, watermark), where the watermark is event_prune_watermark(below)
-- computed under a lock on the retention row; from_id NULL: from the start. The lower bound is
-- what keeps the steps linear: while any transaction holds an older snapshot (pg_dump, a long
-- read), the rows earlier steps deleted cannot be marked dead, and a DELETE from the start walked
-- all of them again at every step (measured: a 100,000-id step 90 ms first, 612 ms after 4
-- million). Every event below from_id must be gone already (the store starts from min(id)).
--
-- The lock: `checkpoint set` takes the same row (FOR SHARE) while it checks a position against
-- the watermark and moves the checkpoint; otherwise a prune that had read the checkpoints before
-- the move deleted the events the moved reader needs next.
CREATE FUNCTION event_prune_step(from_id bigint, below bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    watermark bigint;
    deleted   bigint;
    recorded  bigint;
BEGIN
    SELECT pruned_below INTO recorded FROM event_retention FOR UPDATE;
    watermark := event_prune_watermark(below);
    PERFORM set_config('vitrage_persistor.retention', 'on', true);
    IF from_id IS NULL THEN
        DELETE FROM event WHERE id < watermark;
    ELSE
        DELETE FROM event WHERE id >= from_id AND id < watermark;
    END IF;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('vitrage_persistor.retention', 'off', true);
    -- A step that deleted nothing still moves the watermark when everything below its range was
    -- pruned before (ids with gaps: a rolled-back append consumes ids).
    IF deleted > 0 OR recorded >= from_id THEN
        UPDATE event_retention SET pruned_below = greatest(pruned_below, watermark), pruned_at = now();
    END IF;
    RETURN deleted;
END
$$;

-- As in 0008, in one statement (older versions' `prune`, and SQL callers).
CREATE OR REPLACE FUNCTION event_prune(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$ SELECT event_prune_step(NULL, below) $$;
