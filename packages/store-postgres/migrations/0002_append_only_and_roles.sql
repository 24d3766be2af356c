-- The event log is append-only, and the service needs no more than appending and reading.
--
-- 1. A trigger refuses UPDATE, DELETE and TRUNCATE on event for every role, owner and
--    superuser included. The one exception is retention: a routine (added with snapshots) that
--    deletes events below a snapshot watermark sets the transaction-local setting
--    vitrage_persistor.retention to 'on' before its DELETE. Nothing else sets it.
CREATE FUNCTION event_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('vitrage_persistor.retention', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the event table is append-only: % is refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'events are removed only by retention below a snapshot watermark (vitrage-persistor prune)';
END
$$;

CREATE TRIGGER event_refuse_update
    BEFORE UPDATE ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_refuse_change();
CREATE TRIGGER event_refuse_delete
    BEFORE DELETE ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_refuse_change();
CREATE TRIGGER event_refuse_truncate
    BEFORE TRUNCATE ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_refuse_change();

-- 2. Roles (cluster-wide, so created only if missing, and only when the migrating role may
--    create roles; otherwise an administrator creates them, see docs/operations.md):
--    vitrage_persistor_writer: what `vitrage-persistor run` needs: INSERT and SELECT on event
--    (COPY FROM STDIN is an INSERT; identity values need no sequence privilege; the staging
--    table is a temporary table, allowed to PUBLIC by default), SELECT on schema_migration
--    (to check the schema is current).
--    vitrage_persistor_reader: SELECT only, for history queries and replay.
--    Both are NOLOGIN groups: grant them to the login roles the services use.
DO $$
DECLARE
    may_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['vitrage_persistor_writer', 'vitrage_persistor_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            IF may_create THEN
                BEGIN
                    EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL; -- created concurrently by a migration of another database
                END;
            ELSE
                RAISE NOTICE 'role % does not exist and % may not create roles: create it, then grant as in migration 0002', r, current_user;
            END IF;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        GRANT SELECT, INSERT ON event TO vitrage_persistor_writer;
        GRANT SELECT ON schema_migration TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON event TO vitrage_persistor_reader;
        GRANT SELECT ON schema_migration TO vitrage_persistor_reader;
    END IF;
END
$$;
