-- biomero_tracking 0.1.0 -> 0.2.0
-- * adds biomero.import_eventsourcing, the adoption path for existing eventsourcing and
--   eventsourcing-sqlalchemy stores (the same definition as sql/adopt.sql);
-- * select_notifications becomes PL/pgSQL (the same definition as
--   sql/read.sql), with the same arguments, results and errors.
-- tests/upgrade.rs compares a database updated with this script to a fresh install.

CREATE FUNCTION biomero.import_eventsourcing(
    application_name text,
    events_table regclass,
    tracking_table regclass DEFAULT NULL,
    upstream_application_name text DEFAULT NULL
) RETURNS TABLE (
    events_imported bigint,
    events_already_present bigint,
    positions_advanced bigint
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    target text := import_eventsourcing.application_name;
    upstream text := import_eventsourcing.upstream_application_name;
    id_column name;
    missing text;
    statement text;
    source_rows bigint;
    conflicting bigint;
BEGIN
    IF target IS NULL OR events_table IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'application_name and events_table must not be NULL';
    END IF;
    IF target = '' OR length(target) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'application_name must be 1 to 255 characters long';
    END IF;
    IF events_table = 'biomero.events'::regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'events_table must be an eventsourcing events table, not biomero.events';
    END IF;

    -- The notification id column: notification_id (eventsourcing) or id
    -- (eventsourcing-sqlalchemy).
    SELECT a.attname INTO id_column
    FROM pg_attribute AS a
    WHERE a.attrelid = events_table AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN ('notification_id', 'id')
    ORDER BY a.attname = 'notification_id' DESC
    LIMIT 1;
    SELECT string_agg(c.column_name, ', ' ORDER BY c.column_name) INTO missing
    FROM unnest(ARRAY['originator_id', 'originator_version', 'topic', 'state']) AS c(column_name)
    WHERE NOT EXISTS (
        SELECT FROM pg_attribute AS a
        WHERE a.attrelid = events_table AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname = c.column_name
    );
    IF id_column IS NULL OR missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = format('%s is not an eventsourcing events table', events_table),
            DETAIL = format('Missing columns: %s.',
                concat_ws(', ', CASE WHEN id_column IS NULL THEN 'notification_id or id' END,
                          missing));
    END IF;

    LOCK TABLE biomero.events IN SHARE ROW EXCLUSIVE MODE;
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', events_table);

    -- Two fixed statements, one per id column name, so that no name is pasted.
    IF id_column = 'notification_id' THEN
        statement := 'INSERT INTO biomero.events (application_name, notification_id,
                          originator_id, originator_version, topic, state)
                      SELECT $1, s.notification_id, s.originator_id::text::uuid,
                             s.originator_version, s.topic, s.state
                      FROM %s AS s
                      ORDER BY s.notification_id
                      ON CONFLICT DO NOTHING';
    ELSE
        statement := 'INSERT INTO biomero.events (application_name, notification_id,
                          originator_id, originator_version, topic, state)
                      SELECT $1, s.id, s.originator_id::text::uuid,
                             s.originator_version, s.topic, s.state
                      FROM %s AS s
                      ORDER BY s.id
                      ON CONFLICT DO NOTHING';
    END IF;
    EXECUTE format(statement, events_table) USING target;
    GET DIAGNOSTICS events_imported = ROW_COUNT;

    -- Every source event must now be in biomero.events, identical, at its own id: a row
    -- skipped above for holding a different event is a conflict.
    IF id_column = 'notification_id' THEN
        statement := 'SELECT count(*), count(*) FILTER (WHERE e.notification_id IS NULL
                          OR e.originator_id <> s.originator_id::text::uuid
                          OR e.originator_version <> s.originator_version
                          OR e.topic <> s.topic OR e.state <> s.state)
                      FROM %s AS s
                      LEFT JOIN biomero.events AS e
                        ON e.application_name = $1 AND e.notification_id = s.notification_id';
    ELSE
        statement := 'SELECT count(*), count(*) FILTER (WHERE e.notification_id IS NULL
                          OR e.originator_id <> s.originator_id::text::uuid
                          OR e.originator_version <> s.originator_version
                          OR e.topic <> s.topic OR e.state <> s.state)
                      FROM %s AS s
                      LEFT JOIN biomero.events AS e
                        ON e.application_name = $1 AND e.notification_id = s.id';
    END IF;
    EXECUTE format(statement, events_table) USING target INTO source_rows, conflicting;
    IF conflicting > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
            MESSAGE = format('%s of the %s events in %s conflict with events application %L '
                             'already has', conflicting, source_rows, events_table, target),
            HINT = 'Another table was imported into this application, or it has recorded '
                   'events of its own since: import into an application name of its own.';
    END IF;
    events_already_present := source_rows - events_imported;

    positions_advanced := 0;
    IF tracking_table IS NOT NULL THEN
        SELECT string_agg(c.column_name, ', ' ORDER BY c.column_name) INTO missing
        FROM unnest(ARRAY['application_name', 'notification_id']) AS c(column_name)
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute AS a
            WHERE a.attrelid = tracking_table AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attname = c.column_name
        );
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_column',
                MESSAGE = format('%s is not an eventsourcing tracking table', tracking_table),
                DETAIL = format('Missing columns: %s.', missing);
        END IF;
        LOCK TABLE biomero.tracking IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', tracking_table);
        -- Multi-row tables hold one row per processed notification, single-row ones one
        -- row per upstream: the highest id per upstream is the position either way.
        -- eventsourcing 9.4 and later also keep a '__migration__' row: not an upstream.
        EXECUTE format(
            'INSERT INTO biomero.tracking AS t
                 (application_name, upstream_application_name, notification_id)
             SELECT $1, s.application_name, max(s.notification_id)
             FROM %s AS s
             WHERE s.notification_id > 0 AND length(s.application_name) > 0
               AND s.application_name <> $3
               AND ($2::text IS NULL OR s.application_name = $2)
             GROUP BY s.application_name
             ON CONFLICT (application_name, upstream_application_name) DO UPDATE
                 SET notification_id = excluded.notification_id
                 WHERE t.notification_id < excluded.notification_id',
            tracking_table)
        USING target, upstream, '__migration__';
        GET DIAGNOSTICS positions_advanced = ROW_COUNT;
    END IF;

    RETURN NEXT;
END;
$function$;

COMMENT ON FUNCTION biomero.import_eventsourcing(text, regclass, regclass, text) IS
'Imports an eventsourcing (or eventsourcing-sqlalchemy) events table, and optionally the '
'tracking table of the same application as a follower, into biomero''s tables for the named '
'application; idempotent, all or nothing.';

REVOKE ALL ON FUNCTION biomero.import_eventsourcing(text, regclass, regclass, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION biomero.select_notifications(
    application_name text,
    start bigint,
    "limit" bigint,
    stop bigint DEFAULT NULL,
    topics text[] DEFAULT '{}',
    inclusive_of_start boolean DEFAULT true
) RETURNS TABLE (
    notification_id bigint,
    originator_id uuid,
    originator_version bigint,
    topic text,
    state bytea
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_column
DECLARE
    application text := select_notifications.application_name;
    after_id bigint;
    wanted text;
    position integer := 0;
BEGIN
    IF application IS NULL THEN
        RAISE EXCEPTION 'application_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF application = '' THEN
        RAISE EXCEPTION 'application_name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF length(application) > 255 THEN
        RAISE EXCEPTION 'application_name is % characters long; the limit is 255', length(application)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF "limit" IS NULL THEN
        RAISE EXCEPTION '"limit" must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF "limit" < 0 THEN
        RAISE EXCEPTION '"limit" must be >= 0, got %', "limit" USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topics IS NULL THEN
        RAISE EXCEPTION 'topics must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOREACH wanted IN ARRAY topics LOOP
        position := position + 1;
        IF wanted IS NULL THEN
            RAISE EXCEPTION 'topics[%] must not be NULL', position USING ERRCODE = 'null_value_not_allowed';
        ELSIF wanted = '' THEN
            RAISE EXCEPTION 'topics[%] must not be empty', position USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF inclusive_of_start IS NULL THEN
        RAISE EXCEPTION 'inclusive_of_start must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- One exclusive lower bound, so the index scan starts at the right place.
    after_id := CASE
        WHEN start IS NULL THEN -9223372036854775808
        WHEN inclusive_of_start AND start > -9223372036854775808 THEN start - 1
        ELSE start
    END;
    RETURN QUERY
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM biomero.events AS e
    WHERE e.application_name = application
      AND e.notification_id > after_id
      AND e.notification_id <= coalesce(stop, 9223372036854775807)
      AND (cardinality(topics) = 0 OR e.topic = ANY (topics))
    ORDER BY e.notification_id
    LIMIT "limit";
END;
$function$;

COMMENT ON FUNCTION biomero.select_notifications(text, bigint, bigint, bigint, text[], boolean) IS
'Notifications of an application in id order: from start (NULL: the beginning; exclusive when '
'inclusive_of_start is false) up to stop (inclusive), at most "limit", only the given topics '
'when the array is not empty.';
