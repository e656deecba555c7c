-- biomero_tracking 0.3.0 -> 0.3.1
-- * the helpers of the SQL-language functions and views move to schema biomero_internal
--   (argument rules, the read bound, the lock kinds, the import's lock and checks), with
--   their privileges; the functions and views that call them follow;
-- * new: last_taken_id (what a follower prompted by a commit waits for in concurrent mode)
--   and biomero_internal.application_name_of (a registry id's name, also while its
--   registration has not committed), granted to PUBLIC like the other helpers;
-- * biomero.locks names the locks of a transaction whose first use of a name has not
--   committed yet, and leaves out those of a first use rolled back to a savepoint;
-- * import_eventsourcing refuses source rows the libraries never store (a NULL column, an id
--   below 1 or used twice, a negative version, an empty topic) instead of failing on a
--   constraint or skipping them.
-- The rest of 0.3.1 is in the library. The same definitions as sql/*.sql; tests/upgrade.rs
-- compares a database updated with this script to a fresh install, object by object.

CREATE SCHEMA biomero_internal;
GRANT USAGE ON SCHEMA biomero_internal TO PUBLIC;
ALTER FUNCTION biomero.check_name(text, text) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.check_limit(bigint) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.check_topics(text[]) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.readable_bound(text) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.lock_kinds() SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.lock_for_import(text) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.check_import_source(regclass, text) SET SCHEMA biomero_internal;
ALTER FUNCTION biomero.unexpected_columns(regclass, text[]) SET SCHEMA biomero_internal;

CREATE FUNCTION biomero.last_taken_id(
	"application_name" TEXT
) RETURNS bigint
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'last_taken_id_wrapper';

CREATE FUNCTION biomero_internal.application_name_of(
	"application_id" INT
) RETURNS TEXT
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'application_name_of_wrapper';

REVOKE ALL ON FUNCTION biomero.last_taken_id(text), biomero_internal.application_name_of(integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION biomero.last_taken_id(text),
                          biomero_internal.application_name_of(integer)
TO PUBLIC;

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
    last_id bigint;
BEGIN
    PERFORM biomero_internal.check_name(application, 'application_name');
    IF "limit" IS NULL THEN
        RAISE EXCEPTION '"limit" must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM biomero_internal.check_limit("limit");
    PERFORM biomero_internal.check_topics(topics);
    IF inclusive_of_start IS NULL THEN
        RAISE EXCEPTION 'inclusive_of_start must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- One exclusive lower bound and one inclusive upper bound, so the index scan starts and
    -- stops at the right place.
    after_id := CASE
        WHEN start IS NULL THEN -9223372036854775808
        WHEN inclusive_of_start AND start > -9223372036854775808 THEN start - 1
        ELSE start
    END;
    last_id := least(coalesce(stop, 9223372036854775807),
                     coalesce(biomero_internal.readable_bound(application), 9223372036854775807));
    RETURN QUERY
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM biomero.events AS e
    WHERE e.application_name = application
      AND e.notification_id > after_id
      AND e.notification_id <= last_id
      AND (cardinality(topics) = 0 OR e.topic = ANY (topics))
    ORDER BY e.notification_id
    LIMIT "limit";
END;
$function$;

CREATE OR REPLACE FUNCTION biomero.max_notification_id(application_name text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    application text := max_notification_id.application_name;
    last_id bigint;
BEGIN
    PERFORM biomero_internal.check_name(application, 'application_name');
    last_id := coalesce(biomero_internal.readable_bound(application), 9223372036854775807);
    RETURN (SELECT max(e.notification_id)
            FROM biomero.events AS e
            WHERE e.application_name = application AND e.notification_id <= last_id);
END;
$function$;

CREATE OR REPLACE FUNCTION biomero.max_tracking_id(application_name text, upstream_application_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    follower text := max_tracking_id.application_name;
    upstream text := max_tracking_id.upstream_application_name;
BEGIN
    PERFORM biomero_internal.check_name(follower, 'application_name');
    PERFORM biomero_internal.check_name(upstream, 'upstream_application_name');
    RETURN (SELECT t.notification_id
            FROM biomero.tracking AS t
            WHERE t.application_name = follower AND t.upstream_application_name = upstream);
END;
$function$;

CREATE OR REPLACE VIEW biomero.locks AS
SELECT l.pid,
       k.kind,
       coalesce(a.application_name,
                biomero_internal.application_name_of(l.classid::bigint::integer)) AS application_name,
       CASE WHEN k.kind = 'claim'
            THEN coalesce(u.application_name,
                          biomero_internal.application_name_of(l.objid::bigint::integer))
       END AS upstream_application_name,
       l.granted,
       l.waitstart
FROM pg_catalog.pg_locks AS l
JOIN biomero_internal.lock_kinds() AS k ON k.objsubid = l.objsubid
JOIN pg_catalog.pg_database AS d ON d.oid = l.database AND d.datname = current_database()
LEFT JOIN biomero.application_registry AS a ON a.application_id = l.classid::bigint
LEFT JOIN biomero.application_registry AS u
       ON k.kind = 'claim' AND u.application_id = l.objid::bigint
WHERE l.locktype = 'advisory'
  -- A lock taken for a name whose first use was rolled back (to a savepoint) holds an id
  -- no name has any more: it stands in nobody's way until its transaction ends.
  AND coalesce(a.application_name,
               biomero_internal.application_name_of(l.classid::bigint::integer)) IS NOT NULL;

CREATE OR REPLACE FUNCTION biomero.import_eventsourcing(
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
