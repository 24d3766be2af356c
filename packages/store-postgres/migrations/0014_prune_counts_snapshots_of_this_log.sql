-- A graph snapshot holds a prune back only while it is a state of this log. One that names the
-- message of its event (stats.eventMessageId, since the follower checks restores) is of another
-- history once the log holds another message at that id: the event table restored or failed over
-- without its snapshots hands the ids out again. Every reader passes such a snapshot over (graph,
-- follow, snapshot create), yet prune took it as the oldest kept one and deleted the events below
-- it: the graph could then not be built at all (review 57: 8,999 events deleted below a foreign
-- snapshot at 9,000; graph exit 1, follow retrying for ever). As 0009 otherwise.
CREATE OR REPLACE FUNCTION event_prune_watermark(below bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    watermark bigint;
    slowest   bigint;
BEGIN
    SELECT min(s.event_id) INTO watermark FROM projection_snapshot s
    WHERE s.kind = 'graph' AND s.event_id <= (SELECT max(id) FROM event)
      AND (jsonb_typeof(s.stats -> 'eventMessageId') IS DISTINCT FROM 'string'
           OR EXISTS (SELECT 1 FROM event e WHERE e.id = s.event_id AND e.message_id::text = s.stats ->> 'eventMessageId'));
    IF watermark IS NULL THEN
        RAISE EXCEPTION 'no graph snapshot of this log: nothing may be pruned' USING ERRCODE = 'object_not_in_prerequisite_state';
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
