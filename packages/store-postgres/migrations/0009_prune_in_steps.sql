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

-- As in 0008, with four changes, and a second argument (hence DROP: an overload beside the old
-- one would make `event_prune(90)` ambiguous; older versions' `event_prune()` and
-- `event_prune(below)` resolve to this one, from_id NULL).
--
-- It deletes from least(recorded watermark, from_id) up, not from the start: while any
-- transaction holds an older snapshot (pg_dump, a long read), the rows earlier steps deleted
-- cannot be marked dead, and a DELETE from the start walked all of them again at every step
-- (measured: a 100,000-id step 90 ms first, 612 ms after 4 million). A step held back by a
-- checkpoint is caught up by the next one, which starts at the recorded watermark. from_id NULL
-- (one-statement callers) or the store's first step (min(id)) start from the first stored event,
-- so rows restored below the watermark (a data-only restore writes their old ids) go too.
--
-- It always records its watermark when that is higher: everything below it is gone, whether
-- this call deleted it or the ids were never used (a rolled-back append consumes ids).
--
-- It holds a transaction-level advisory lock while it reads the checkpoints and deletes:
-- `checkpoint set` and `project history --rebuild` take it too (shared) while they check a
-- position against the watermark and move a checkpoint, so that a prune which had read the
-- checkpoints before the move cannot delete the events the moved reader needs next. (An
-- advisory lock, not a row lock on event_retention: the service roles may read that table, not
-- lock it.)
--
-- It runs only at READ COMMITTED: at REPEATABLE READ (or SERIALIZABLE) its snapshot would be
-- taken before the lock wait, and it would miss a move committed meanwhile (a database whose
-- default_transaction_isolation is higher: the store's steps pin READ COMMITTED).
DROP FUNCTION event_prune(bigint);
CREATE FUNCTION event_prune(below bigint DEFAULT NULL, from_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recorded  bigint;
    watermark bigint;
    deleted   bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'event_prune runs at READ COMMITTED only, this transaction is %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'BEGIN ISOLATION LEVEL READ COMMITTED; SELECT event_prune(...); COMMIT';
    END IF;
    PERFORM pg_advisory_xact_lock(1986622578, hashtext('event_retention'));
    SELECT pruned_below INTO recorded FROM event_retention;
    watermark := event_prune_watermark(below);
    PERFORM set_config('vitrage_persistor.retention', 'on', true);
    DELETE FROM event WHERE id >= least(recorded, coalesce(from_id, (SELECT min(id) FROM event))) AND id < watermark;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('vitrage_persistor.retention', 'off', true);
    IF watermark > recorded THEN
        UPDATE event_retention SET pruned_below = watermark, pruned_at = now();
    END IF;
    RETURN deleted;
END
$$;
