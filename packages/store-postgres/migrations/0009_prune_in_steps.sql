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

-- As in 0008, with three changes.
--
-- It deletes from the recorded watermark up, not from the start: while any transaction holds
-- an older snapshot (pg_dump, a long read), the rows earlier steps deleted cannot be marked dead,
-- and a DELETE from the start walked all of them again at every step (measured: a 100,000-id
-- step 90 ms first, 612 ms after 4 million). Everything below the recorded watermark is gone, so
-- the bound loses nothing, and a step held back by a checkpoint is caught up by the next one.
--
-- It always records its watermark when that is higher: everything below it is gone, whether
-- this call deleted it or the ids were never used (a rolled-back append consumes ids).
--
-- It holds a transaction-level advisory lock while it reads the checkpoints and deletes:
-- `checkpoint set` takes it too (shared) while it checks a position against the watermark and
-- moves the checkpoint, so that a prune which had read the checkpoints before the move cannot
-- delete the events the moved reader needs next. (An advisory lock, not a row lock on
-- event_retention: the service roles may read that table, not lock it.)
CREATE OR REPLACE FUNCTION event_prune(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recorded  bigint;
    watermark bigint;
    deleted   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1986622578, hashtext('event_retention'));
    SELECT pruned_below INTO recorded FROM event_retention;
    watermark := event_prune_watermark(below);
    PERFORM set_config('vitrage_persistor.retention', 'on', true);
    DELETE FROM event WHERE id >= recorded AND id < watermark;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('vitrage_persistor.retention', 'off', true);
    IF watermark > recorded THEN
        UPDATE event_retention SET pruned_below = watermark, pruned_at = now();
    END IF;
    RETURN deleted;
END
$$;
