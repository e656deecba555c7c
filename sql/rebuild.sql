-- Rebuilding a follower: eventsourcing-sqlalchemy's callers reset a follower's read model by
-- dropping its tracking table together with the read-model tables (BIOMERO's init_slurm does,
-- in one transaction, then processes the log again). A follower on this extension names a
-- reset table instead (biomero.reset_table_name); dropping it forgets every position of the
-- follower in the dropping transaction, so the read model and the positions start over
-- together or not at all.
CREATE FUNCTION biomero_internal.forget_positions_of_dropped_reset_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    dropped record;
BEGIN
    -- Every DROP in the database comes here; only reset tables reach the extension.
    FOR dropped IN
        SELECT object_identity, object_name
        FROM pg_catalog.pg_event_trigger_dropped_objects()
        WHERE object_type = 'table' AND object_name ~ '^biomero_reset_[0-9]+$'
    LOOP
        BEGIN
            PERFORM biomero_internal.forget_positions(dropped.object_name);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'dropping % would forget the positions of a follower: %',
                    dropped.object_identity, SQLERRM
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'An administrator lets a role reset its followers with GRANT '
                             'EXECUTE ON FUNCTION biomero_internal.forget_positions(text).';
        END;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION biomero_internal.forget_positions_of_dropped_reset_tables() IS
'Event trigger: a dropped reset table (biomero_reset_<id>) forgets its follower''s positions.';

CREATE EVENT TRIGGER biomero_forget_positions ON sql_drop
    EXECUTE FUNCTION biomero_internal.forget_positions_of_dropped_reset_tables();
