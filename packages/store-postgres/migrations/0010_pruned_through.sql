-- The newest time (see below) a prune has deleted. A message's dedup is its message_id in the
-- event table, so once its event is pruned a redelivered copy would be stored again, at the
-- tail: after newer history, and the graph replayed its old after-image over newer state
-- (measured by review 37: oslo's own queue, uncapped, drained with --compat-queue after a prune:
-- 559 duplicates recognised, the pruned ones stored again, 13 of 82 vertices wrong). The
-- persistor dead-letters a message whose collector_timestamp is at or before this (reason
-- `pruned-history`): a redelivery of a pruned event, or a message so late that its place in the
-- log is gone.
--
-- Each deleted event counts with the earlier of its collector_timestamp and its persisted_at: the
-- collector_timestamp is the publisher's clock (or the payload's vitrage_sample_date), and one
-- event stamped in the future (a fast clock; review 40: one stamped 2099) would otherwise, once
-- pruned, make every new message look older than the pruned history. A copy of such an event
-- then passes the check (it is stored again): the check is for copies with sane clocks.
ALTER TABLE event_retention ADD COLUMN pruned_through timestamptz;

-- A log pruned before this migration: the deleted events' times are gone; the first kept
-- event's is the nearest bound (in id order, which is delivery order).
UPDATE event_retention
   SET pruned_through = (SELECT least(collector_timestamp, persisted_at) FROM event ORDER BY id LIMIT 1)
 WHERE pruned_below > 1;

-- As in 0009, and it records the newest time it deleted (see above).
CREATE OR REPLACE FUNCTION event_prune(below bigint DEFAULT NULL, from_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recorded  bigint;
    watermark bigint;
    deleted   bigint;
    newest    timestamptz;
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
    WITH gone AS (
        DELETE FROM event WHERE id >= least(recorded, coalesce(from_id, (SELECT min(id) FROM event))) AND id < watermark
        RETURNING least(collector_timestamp, persisted_at) AS at
    )
    SELECT count(*), max(at) INTO deleted, newest FROM gone;
    PERFORM set_config('vitrage_persistor.retention', 'off', true);
    IF watermark > recorded THEN
        UPDATE event_retention SET pruned_below = watermark, pruned_at = now();
    END IF;
    -- greatest() passes over a NULL: the first prune records its newest.
    IF newest IS NOT NULL THEN
        UPDATE event_retention SET pruned_through = greatest(pruned_through, newest);
    END IF;
    RETURN deleted;
END
$$;
