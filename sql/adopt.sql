-- Adoption of an existing eventsourcing store: biomero.import_eventsourcing copies the events
-- table of one application, made by eventsourcing's PostgreSQL recorder (notification_id
-- column) or by eventsourcing-sqlalchemy (id column), into biomero.events, keeping each
-- event's notification id, topic and state; and, when given, the tracking table of that
-- application as a follower (multi-row, eventsourcing up to 9.3, or single-row, 9.4 and
-- later), as one position per upstream application: the highest it recorded.
--
-- It is idempotent: events already imported are skipped, positions only move forward. It
-- runs in the caller's transaction, so it imports all or nothing. It holds the application's
-- append lock (biomero_internal.lock_for_import), so appends to the application wait for it
-- and it waits for appends in progress, and it refuses any event that would land at or below an id
-- the application already committed, which a reader may have passed: a different event at an
-- imported id is a conflict too. It holds the source tables in SHARE mode, so their old
-- writers wait: it is a one-off step, to run before the applications switch over.
--
-- It is an administrator's function (SECURITY INVOKER). It reads the source tables with the
-- caller's rights, so the caller needs SELECT on them and, for the SHARE lock, UPDATE, DELETE
-- or TRUNCATE; and INSERT and UPDATE on biomero's tables and EXECUTE on the helpers
-- biomero_internal.lock_for_import, check_import_source and unexpected_columns. Only ordinary
-- tables with the columns and built-in types those libraries create are accepted (see
-- check_import_source): reading them runs no code of the table's owner. Table names reach the statements only as regclass values,
-- rendered by format('%s'); values only as parameters (USING).

-- The source's columns that are not what the libraries create, as text; NULL when all are.
-- `expected` pairs a column name with the types accepted for it.
CREATE FUNCTION biomero_internal.unexpected_columns(source regclass, expected text[][])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
SELECT string_agg(format('%s (%s expected)', x.column_name, x.accepted), ', '
                  ORDER BY x.column_name)
FROM (SELECT expected[i][1] AS column_name, expected[i][2] AS accepted
      FROM generate_subscripts(expected, 1) AS i) AS x
LEFT JOIN pg_attribute AS a
       ON a.attrelid = source AND a.attname = x.column_name AND a.attnum > 0
      AND NOT a.attisdropped
WHERE a.atttypid IS NULL
   OR format_type(a.atttypid, NULL) <> ALL (string_to_array(x.accepted, ' or '))
$function$;

-- Refuses a source that is not a plain table as the libraries create it, or that the caller
-- may not read and lock. Planning a read of a table evaluates code its owner can define
-- (index and statistics expressions, index predicates, CHECK constraints, generated columns,
-- row-level security policies), which would run as the caller: a source with any of these
-- is refused. (Operator classes, the other way, need a superuser to create.)
CREATE FUNCTION biomero_internal.check_import_source(source regclass, what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    reason text;
BEGIN
    SELECT CASE
        WHEN c.relkind <> 'r' THEN 'it is not an ordinary table'
        WHEN c.relrowsecurity THEN 'it has row-level security'
        WHEN EXISTS (SELECT FROM pg_attribute AS a
                     WHERE a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attgenerated <> '') THEN 'it has generated columns'
        WHEN EXISTS (SELECT FROM pg_constraint AS k
                     WHERE k.conrelid = source AND k.contype = 'c') THEN 'it has CHECK constraints'
        WHEN EXISTS (SELECT FROM pg_index AS i
                     WHERE i.indrelid = source
                       AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL))
            THEN 'it has an index on expressions or a partial index'
        WHEN EXISTS (SELECT FROM pg_statistic_ext AS x
                     WHERE x.stxrelid = source AND x.stxexprs IS NOT NULL)
            THEN 'it has statistics on expressions'
    END
    INTO reason
    FROM pg_class AS c WHERE c.oid = source;
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'wrong_object_type',
            MESSAGE = format('%s is not a table as eventsourcing creates its %s table: %s',
                             source, what, reason);
    END IF;
    IF NOT has_table_privilege(source, 'SELECT')
       OR NOT (has_table_privilege(source, 'UPDATE') OR has_table_privilege(source, 'DELETE')
               OR has_table_privilege(source, 'TRUNCATE')) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('permission denied to import %s', source),
            DETAIL = 'The import reads the table and holds it in SHARE mode: it needs SELECT '
                     'and one of UPDATE, DELETE or TRUNCATE on it.';
    END IF;
END;
$function$;

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
    source_id text;
    wrong text;
    head bigint;
    source_rows bigint;
    present bigint;
    conflicting bigint;
    passed bigint;
    with_null bigint;
    below_one bigint;
    negative_version bigint;
    empty_topic bigint;
    duplicate_id bigint;
    source_upstream text;
BEGIN
    PERFORM biomero_internal.check_name(target, 'application_name');
    IF events_table IS NULL THEN
        RAISE EXCEPTION 'events_table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF upstream IS NOT NULL THEN
        PERFORM biomero_internal.check_name(upstream, 'upstream_application_name');
    END IF;
    IF events_table = 'biomero.events'::regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'events_table must be an eventsourcing events table, not biomero.events';
    END IF;

    PERFORM biomero_internal.check_import_source(events_table, 'events');
    -- The notification id column: notification_id (eventsourcing) or id
    -- (eventsourcing-sqlalchemy); one of two fixed expressions, never a name from input.
    source_id := CASE WHEN EXISTS (
            SELECT FROM pg_attribute AS a
            WHERE a.attrelid = events_table AND a.attname = 'notification_id' AND a.attnum > 0
              AND NOT a.attisdropped)
        THEN 's.notification_id' ELSE 's.id' END;
    wrong := biomero_internal.unexpected_columns(events_table, ARRAY[
        [CASE source_id WHEN 's.id' THEN 'id' ELSE 'notification_id' END, 'bigint or integer'],
        ['originator_id', 'uuid or text or character varying'],
        ['originator_version', 'bigint or integer'],
        ['topic', 'text or character varying'],
        ['state', 'bytea']]);
    IF wrong IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_column',
            MESSAGE = format('%s is not an eventsourcing events table', events_table),
            DETAIL = format('Missing or of another type: %s.', wrong);
    END IF;

    head := biomero_internal.lock_for_import(target);
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', events_table);

    -- Every source row must be an event as the libraries store it (no NULL, an id above 0
    -- used once, a version of at least 0, a topic), so that the import takes all of them or
    -- refuses. Every source event must be absent or identical at its own id, and an absent
    -- one must carry an aggregate version the application does not have (at another id, or
    -- twice in the source) and land above every id the application has committed, or a
    -- reader may already have passed it.
    EXECUTE format(
        'SELECT count(*),
                count(*) FILTER (WHERE s.id IS NULL OR s.originator_id IS NULL
                                    OR s.originator_version IS NULL OR s.topic IS NULL
                                    OR s.state IS NULL),
                count(*) FILTER (WHERE s.id < 1),
                count(*) FILTER (WHERE s.originator_version < 0),
                count(*) FILTER (WHERE s.topic = ''''),
                count(s.id) - count(DISTINCT s.id),
                count(*) FILTER (WHERE e.notification_id IS NOT NULL AND e.same),
                count(*) FILTER (WHERE (e.notification_id IS NOT NULL AND NOT e.same)
                                    OR (e.notification_id IS NULL AND (s.taken OR s.copies > 1))),
                count(*) FILTER (WHERE e.notification_id IS NULL AND s.id <= $2)
         FROM (SELECT %2$s AS id, s.originator_id::text::uuid AS originator_id,
                      s.originator_version, s.topic, s.state,
                      count(*) OVER (PARTITION BY s.originator_id, s.originator_version) AS copies,
                      EXISTS (SELECT FROM biomero.events AS v
                              WHERE v.application_name = $1
                                AND v.originator_id = s.originator_id::text::uuid
                                AND v.originator_version = s.originator_version) AS taken
               FROM ONLY %1$s AS s) AS s
         LEFT JOIN LATERAL (
             SELECT e.notification_id,
                    e.originator_id = s.originator_id AND e.originator_version = s.originator_version
                        AND e.topic = s.topic AND e.state = s.state AS same
             FROM biomero.events AS e
             WHERE e.application_name = $1 AND e.notification_id = s.id) AS e ON true',
        events_table, source_id)
    USING target, head
    INTO source_rows, with_null, below_one, negative_version, empty_topic, duplicate_id,
         present, conflicting, passed;
    IF with_null + below_one + negative_version + empty_topic + duplicate_id > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s holds rows that are not events as eventsourcing stores them',
                             events_table),
            DETAIL = format('Of its %s rows: %s with a NULL column, %s with a notification id '
                            'below 1, %s with a negative version, %s with an empty topic, %s '
                            'repeating the notification id of another row.', source_rows,
                            with_null, below_one, negative_version, empty_topic, duplicate_id),
            HINT = 'Nothing was imported: correct or remove those rows, then import again.';
    END IF;
    IF conflicting > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
            MESSAGE = format('%s of the %s events in %s conflict with events application %L '
                             'already has, or with each other', conflicting, source_rows,
                             events_table, target),
            HINT = 'Another table was imported into this application, or it has recorded '
                   'events of its own since: import into an application name of its own.';
    END IF;
    IF passed > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s of the %s events in %s would get ids at or below %s, the '
                             'highest application %L has committed', passed, source_rows,
                             events_table, head, target),
            HINT = 'Readers may have passed those ids: import into an application name of its '
                   'own, before anything appends to it.';
    END IF;
    EXECUTE format(
        'INSERT INTO biomero.events (application_name, notification_id,
                                     originator_id, originator_version, topic, state)
         SELECT $1, %2$s, s.originator_id::text::uuid, s.originator_version, s.topic, s.state
         FROM ONLY %1$s AS s
         WHERE %2$s > $2
         ORDER BY %2$s',
        events_table, source_id)
    USING target, head;
    GET DIAGNOSTICS events_imported = ROW_COUNT;
    events_already_present := present;

    positions_advanced := 0;
    IF tracking_table IS NOT NULL THEN
        PERFORM biomero_internal.check_import_source(tracking_table, 'tracking');
        wrong := biomero_internal.unexpected_columns(tracking_table, ARRAY[
            ['application_name', 'text or character varying'],
            ['notification_id', 'bigint or integer']]);
        IF wrong IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_column',
                MESSAGE = format('%s is not an eventsourcing tracking table', tracking_table),
                DETAIL = format('Missing or of another type: %s.', wrong);
        END IF;
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', tracking_table);
        EXECUTE format(
            'SELECT count(*) FILTER (WHERE s.application_name IS NULL
                                        OR s.notification_id IS NULL)
             FROM ONLY %1$s AS s', tracking_table)
        INTO with_null;
        IF with_null > 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('%s holds rows that are not positions as eventsourcing '
                                 'stores them', tracking_table),
                DETAIL = format('%s rows have a NULL application_name or notification_id.',
                                with_null),
                HINT = 'Nothing was imported: correct or remove those rows, then import again.';
        END IF;
        -- eventsourcing 9.4 and later also keep a '__migration__' row: not an upstream.
        -- Every other upstream's name must be one the extension takes: refused, not skipped.
        FOR source_upstream IN EXECUTE format(
            'SELECT DISTINCT s.application_name FROM ONLY %1$s AS s
             WHERE s.notification_id > 0 AND s.application_name <> $2
               AND ($1::text IS NULL OR s.application_name = $1)',
            tracking_table)
        USING upstream, '__migration__'
        LOOP
            PERFORM biomero_internal.check_name(source_upstream,
                                       format('application_name in %s', tracking_table));
        END LOOP;
        -- Multi-row tables hold one row per processed notification, single-row ones one
        -- row per upstream: the highest id per upstream is the position either way.
        EXECUTE format(
            'INSERT INTO biomero.tracking AS t
                 (application_name, upstream_application_name, notification_id)
             SELECT $1, s.application_name, max(s.notification_id)
             FROM ONLY %1$s AS s
             WHERE s.notification_id > 0
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
