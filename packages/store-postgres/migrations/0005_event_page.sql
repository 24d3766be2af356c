-- Reading the log a keyset page at a time, with a plan that cannot degrade.
--
-- The page query (id > after [AND id <= upto] [AND event_type = ANY(types)] ORDER BY id LIMIT n)
-- is only fast as an ordered scan of the primary key. Right after a large ingest the table's
-- statistics lag behind (autovacuum analyzes about once a minute), the planner underestimates
-- the rows a type filter keeps, and picks a bitmap scan plus a sort of the whole remaining
-- range: measured 450 ms instead of 15 ms per 5,000-row page over 200,000 rows. The function's
-- own settings rule that plan out whatever the statistics say.
CREATE FUNCTION event_page(after bigint, upto bigint, types text[], n integer)
RETURNS TABLE (
    id                  bigint,
    message_id          uuid,
    event_type          text,
    publisher_id        text,
    priority            text,
    collector_timestamp text,
    persisted_at        text,
    payload             text
)
LANGUAGE sql STABLE
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT e.id, e.message_id, e.event_type, e.publisher_id, e.priority,
           to_char(e.collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           to_char(e.persisted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           e.payload::text
    FROM event e
    WHERE e.id > after
      AND (upto IS NULL OR e.id <= upto)
      AND (types IS NULL OR e.event_type = ANY (types))
    ORDER BY e.id
    LIMIT n
$$;
