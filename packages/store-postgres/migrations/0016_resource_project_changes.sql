-- Every change_project_id of an alarm, so the history can answer "which project was the alarm's
-- resource in at T" (`history alarms --now T`, `history rca --at T`) when an alarm's resource
-- moved more than once. history_alarm keeps only the latest change (0011): with one change before
-- T and a later one after it, the answer as of T fell back to the activation's project.
-- One row per event, written by both writers of the projection (history.ts, history-range.ts)
-- beside the alarm's row, idempotently: a page applied again writes nothing new.
CREATE TABLE history_project_change (
    event_id   bigint      PRIMARY KEY,
    vitrage_id text        NOT NULL,
    at         timestamptz NOT NULL,
    project    text
);
-- The change in force at T: a backward scan from (vitrage_id, T) gives it first.
CREATE INDEX history_project_change_at_idx ON history_project_change (vitrage_id, at, event_id);

-- Alarms derived before this migration: their latest change, which is all the rows held. The
-- earlier ones are in the event log, read by `vitrage-persistor project history --rebuild`
-- (docs/operations.md); without a rebuild those alarms answer as before.
INSERT INTO history_project_change (event_id, vitrage_id, at, project)
SELECT resource_project_change_event_id, vitrage_id, resource_project_change_at, resource_project_change
FROM history_alarm
WHERE resource_project_change_at IS NOT NULL AND resource_project_change_event_id IS NOT NULL
ON CONFLICT (event_id) DO NOTHING;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON history_project_change TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON history_project_change TO vitrage_persistor_reader;
    END IF;
END
$$;
