-- Causal edge intervals derived on read from the edge's activations and deactivations, instead
-- of a table the projection rewrote for every edge an event touched (read all of the edge's
-- events, delete its intervals, insert them again: a fifth of the projection's time, measured
-- on 200,000 events). The events table was already the truth; the intervals can no longer go
-- stale, and the projection writes one row per edge event.
--
-- The rule is core's edgeIntervals (packages/core/src/history.ts), which a test holds this view
-- to: walk an edge's events in time order, an activation before a deactivation at the same
-- instant; an activation opens an interval unless one is open; a deactivation closes the open
-- one, or stands alone as an interval of unknown (NULL) start. So an interval starts at each
-- activation whose predecessor is not an activation, and ends at the first deactivation at or
-- after it (NULL while none); a deactivation whose predecessor is not an activation is an
-- interval of its own. The first deactivation after each event is a running minimum over the
-- reversed order (linear in the edge's events, where a forward "following rows" frame would be
-- quadratic). The filters queries put on source_id, target_id and label reach the events
-- table's indexes: they are the windows' partition, so PostgreSQL pushes them down.
DROP TABLE history_edge;

CREATE INDEX history_edge_event_target_idx ON history_edge_event (target_id, label);

CREATE VIEW history_edge AS
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
WHERE previous_kind IS DISTINCT FROM 'a';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        GRANT SELECT ON history_edge TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON history_edge TO vitrage_persistor_reader;
    END IF;
END
$$;
