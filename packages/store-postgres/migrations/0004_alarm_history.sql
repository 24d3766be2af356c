-- Alarm and RCA history (design §6): the tables Vitrage's persistor keeps (alarms, edges,
-- changes), maintained by a checkpointed projection of the event log so that nothing is lost
-- under redelivery or reordering. Every write is idempotent and commutative (see
-- store-postgres/src/history.ts): applying the same events in another order, or twice, gives
-- the same rows.

-- One row per alarm (vitrage_id), one interval, as in Vitrage. start_timestamp is NULL until
-- the activation is seen (its deactivation may come first); end_timestamp is NULL while active.
-- resource_project_at orders the writes of vitrage_resource_project_id (activation and
-- change_project_id events): the latest in time wins, whatever the arrival order.
CREATE TABLE history_alarm (
    vitrage_id                   text PRIMARY KEY,
    start_timestamp              timestamptz,
    end_timestamp                timestamptz,
    name                         text,
    vitrage_type                 text,
    vitrage_aggregated_severity  text,
    vitrage_operational_severity text,
    project_id                   text,
    vitrage_resource_type        text,
    vitrage_resource_id          text,
    vitrage_resource_project_id  text,
    resource_project_at          timestamptz,
    payload                      jsonb,
    activation_event_id          bigint
);

-- The interval an alarm is active: [start, end], open-ended while active. Tolerates an end
-- before the start (clock skew between hosts) instead of failing the projection.
CREATE FUNCTION alarm_active_range(start_ts timestamptz, end_ts timestamptz) RETURNS tstzrange
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN end_ts IS NULL THEN tstzrange(start_ts, NULL, '[)')
                ELSE tstzrange(start_ts, greatest(start_ts, end_ts), '[]') END
$$;

-- "Alarms active at some moment in [T1, T2]" is an overlap query on that interval.
CREATE INDEX history_alarm_active_range_idx ON history_alarm
    USING gist (alarm_active_range(start_timestamp, end_timestamp)) WHERE start_timestamp IS NOT NULL;
CREATE INDEX history_alarm_open_idx ON history_alarm (vitrage_operational_severity) WHERE end_timestamp IS NULL;
CREATE INDEX history_alarm_start_idx ON history_alarm (start_timestamp, vitrage_id);

-- Severity changes, one per event (its message_id).
CREATE TABLE history_change (
    message_id uuid PRIMARY KEY,
    vitrage_id text        NOT NULL,
    at         timestamptz NOT NULL,
    severity   text        NOT NULL,
    payload    jsonb       NOT NULL,
    event_id   bigint      NOT NULL
);
CREATE INDEX history_change_alarm_idx ON history_change (vitrage_id, at);

-- Causal edge activations and deactivations as they arrived (kind 'a' or 'd'), and the
-- intervals derived from them per edge (source, target, label): recomputed from the events of
-- an edge whenever one arrives, so intervals do not depend on arrival order. An edge may be
-- active several times; an interval whose activation is unknown has a NULL start.
CREATE TABLE history_edge_event (
    source_id text        NOT NULL,
    target_id text        NOT NULL,
    label     text        NOT NULL,
    kind      char(1)     NOT NULL CHECK (kind IN ('a', 'd')),
    at        timestamptz NOT NULL,
    event_id  bigint      NOT NULL,
    payload   jsonb,
    PRIMARY KEY (source_id, target_id, label, kind, at)
);

CREATE TABLE history_edge (
    source_id       text NOT NULL,
    target_id       text NOT NULL,
    label           text NOT NULL,
    start_timestamp timestamptz,
    end_timestamp   timestamptz,
    payload         jsonb
);
CREATE INDEX history_edge_source_idx ON history_edge (source_id, label);
CREATE INDEX history_edge_target_idx ON history_edge (target_id, label);
CREATE INDEX history_edge_key_idx ON history_edge (source_id, target_id, label);

-- The service (writer role) runs the projections: it maintains these tables, its checkpoints
-- and snapshots. The event table itself stays append-only for it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON history_alarm, history_change, history_edge, history_edge_event,
            projection_checkpoint, projection_snapshot TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON history_alarm, history_change, history_edge, history_edge_event TO vitrage_persistor_reader;
    END IF;
END
$$;
