-- biomero_tracking 0.3.1 -> 0.3.2
-- * new: reset tables. biomero.reset_table_name(follower) names the table whose DROP forgets
--   every position of the follower, in the dropping transaction (an event trigger on
--   sql_drop calls biomero_internal.forget_positions, which waits for each pair's current
--   processor); both are granted to nobody.
-- The same definitions as sql/*.sql; tests/upgrade.rs compares a database updated with this
-- script to a fresh install, object by object.

CREATE FUNCTION biomero.reset_table_name(
	"application_name" TEXT
) RETURNS TEXT
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'reset_table_name_wrapper';

CREATE FUNCTION biomero_internal.forget_positions(
	"reset_table" TEXT
) RETURNS INT
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'forget_positions_wrapper';

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

REVOKE ALL ON FUNCTION biomero.reset_table_name(text), biomero_internal.forget_positions(text),
    biomero_internal.forget_positions_of_dropped_reset_tables() FROM PUBLIC;
