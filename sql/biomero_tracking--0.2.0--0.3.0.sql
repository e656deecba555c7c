-- biomero_tracking 0.2.0 -> 0.3.0
-- * refuses databases that are not UTF8, as CREATE EXTENSION now does;
-- * adds biomero.application_registry (ids that key locks and shared memory, append modes,
--   restrictions, horizons for standbys), registering every name already stored;
-- * the write functions check the caller against restrictions and switch to the schema owner
--   themselves instead of being SECURITY DEFINER;
-- * max_notification_id, max_tracking_id and summary become SQL; select_notifications and the
--   max_* read no further than biomero.readable_bound;
-- * import_eventsourcing takes the application's append lock and accepts only plain tables;
-- * new: set_append_mode, restrict_application, reset_position, in_flight_appends,
--   lock_kinds and the views biomero.appends_in_flight and biomero.locks.
-- The same definitions as sql/*.sql; tests/upgrade.rs compares a database updated with this
-- script to a fresh install, object by object.

DO $encoding$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'biomero_tracking needs a UTF8 database; database "%" uses %',
                pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create the database with ENCODING ''UTF8'' TEMPLATE template0.';
    END IF;
END
$encoding$;

CREATE SEQUENCE biomero.application_id_seq AS integer;

CREATE TABLE biomero.application_registry (
    application_id    integer NOT NULL DEFAULT nextval('biomero.application_id_seq'),
    application_name  text COLLATE "C" NOT NULL,
    -- 'serialized': gapless ids in commit order; 'concurrent': writers never wait (holes).
    append_mode       text    NOT NULL DEFAULT 'serialized',
    -- Only members of this role may append to, record positions of or claim as it.
    restricted_to     regrole,
    -- The horizon the primary published for standbys (NULL: read everything).
    published_horizon bigint,
    CONSTRAINT application_registry_pkey PRIMARY KEY (application_id),
    CONSTRAINT application_registry_application_name_key UNIQUE (application_name),
    CONSTRAINT application_registry_append_mode_check
        CHECK (append_mode IN ('serialized', 'concurrent'))
);

ALTER SEQUENCE biomero.application_id_seq OWNED BY biomero.application_registry.application_id;


SELECT pg_catalog.pg_extension_config_dump('biomero.application_registry', '');
SELECT pg_catalog.pg_extension_config_dump('biomero.application_id_seq', '');

-- Every name already stored, in name order.
INSERT INTO biomero.application_registry (application_name)
SELECT name FROM (
    SELECT application_name FROM biomero.events
    UNION SELECT application_name FROM biomero.tracking
    UNION SELECT upstream_application_name FROM biomero.tracking
) AS stored(name)
ORDER BY name;

ALTER FUNCTION biomero.record_event(text, uuid, bigint, text, bytea) SECURITY INVOKER;
ALTER FUNCTION biomero.record_events(text, uuid[], bigint[], text[], bytea[], text, bigint)
    SECURITY INVOKER;
ALTER FUNCTION biomero.record_tracking(text, text, bigint) SECURITY INVOKER;
ALTER FUNCTION biomero.claim(text, text, boolean) SECURITY INVOKER;

CREATE FUNCTION biomero.check_name(
    "value" TEXT,
    "argument" TEXT
) RETURNS VOID
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_name_wrapper';
CREATE FUNCTION biomero.check_limit(
    "value" bigint
) RETURNS VOID
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_limit_wrapper';
CREATE FUNCTION biomero.check_topics(
    "topics" TEXT[]
) RETURNS VOID
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_topics_wrapper';
CREATE FUNCTION biomero.readable_bound(
    "application_name" TEXT
) RETURNS bigint
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'readable_bound_wrapper';
CREATE FUNCTION biomero.append_state(
    "application_name" TEXT
) RETURNS TABLE (
    "append_mode" TEXT,
    "horizon" bigint
)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'append_state_wrapper';
CREATE FUNCTION biomero.in_flight_appends() RETURNS TABLE (
    "application_name" TEXT,
    "pid" INT,
    "transaction_start" timestamp with time zone,
    "lowest_id" bigint
)
STRICT VOLATILE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'in_flight_appends_wrapper';
CREATE FUNCTION biomero.lock_kinds() RETURNS TABLE (
    "kind" TEXT,
    "objsubid" smallint
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_kinds_wrapper';
CREATE FUNCTION biomero.set_append_mode(
    "application_name" TEXT,
    "mode" TEXT
) RETURNS TEXT
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_append_mode_wrapper';
CREATE FUNCTION biomero.reset_position(
    "application_name" TEXT,
    "upstream_application_name" TEXT,
    "notification_id" bigint
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'reset_position_wrapper';
CREATE FUNCTION biomero.lock_for_import(
    "application_name" TEXT
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_for_import_wrapper';

-- Declared here so that its role argument is a regrole (pgrx would declare an oid).
CREATE FUNCTION biomero.restrict_application(application_name text, role regrole)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'restrict_application_wrapper';

COMMENT ON FUNCTION biomero.restrict_application(text, regrole) IS
'From now on only members of role may append to, record positions of, or claim as the '
'application; NULL lifts the restriction.';

DROP FUNCTION biomero.max_notification_id(text);
DROP FUNCTION biomero.max_tracking_id(text, text);
DROP FUNCTION biomero.select_notifications(text, bigint, bigint, bigint, text[], boolean);
CREATE FUNCTION biomero.select_notifications(
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
    PERFORM biomero.check_name(application, 'application_name');
    IF "limit" IS NULL THEN
        RAISE EXCEPTION '"limit" must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM biomero.check_limit("limit");
    PERFORM biomero.check_topics(topics);
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
                     coalesce(biomero.readable_bound(application), 9223372036854775807));
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

COMMENT ON FUNCTION biomero.select_notifications(text, bigint, bigint, bigint, text[], boolean) IS
'Notifications of an application in id order: from start (NULL: the beginning; exclusive when '
'inclusive_of_start is false) up to stop (inclusive), at most "limit", only the given topics '
'when the array is not empty; never past what is settled for the caller''s snapshot.';

CREATE FUNCTION biomero.max_notification_id(application_name text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    application text := max_notification_id.application_name;
    last_id bigint;
BEGIN
    PERFORM biomero.check_name(application, 'application_name');
    last_id := coalesce(biomero.readable_bound(application), 9223372036854775807);
    RETURN (SELECT max(e.notification_id)
            FROM biomero.events AS e
            WHERE e.application_name = application AND e.notification_id <= last_id);
END;
$function$;

COMMENT ON FUNCTION biomero.max_notification_id(text) IS
'The highest notification id of the application a reader with the caller''s snapshot may '
'read; NULL when there is none.';

CREATE FUNCTION biomero.max_tracking_id(application_name text, upstream_application_name text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    follower text := max_tracking_id.application_name;
    upstream text := max_tracking_id.upstream_application_name;
BEGIN
    PERFORM biomero.check_name(follower, 'application_name');
    PERFORM biomero.check_name(upstream, 'upstream_application_name');
    RETURN (SELECT t.notification_id
            FROM biomero.tracking AS t
            WHERE t.application_name = follower AND t.upstream_application_name = upstream);
END;
$function$;

COMMENT ON FUNCTION biomero.max_tracking_id(text, text) IS
'The last notification id of the upstream application the follower recorded; NULL when none.';

DROP FUNCTION biomero.import_eventsourcing(text, regclass, regclass, text);
-- The source's columns that are not what the libraries create, as text; NULL when all are.
-- `expected` pairs a column name with the types accepted for it.
CREATE FUNCTION biomero.unexpected_columns(source regclass, expected text[][])
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
CREATE FUNCTION biomero.check_import_source(source regclass, what text)
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
    source_upstream text;
BEGIN
    PERFORM biomero.check_name(target, 'application_name');
    IF events_table IS NULL THEN
        RAISE EXCEPTION 'events_table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF upstream IS NOT NULL THEN
        PERFORM biomero.check_name(upstream, 'upstream_application_name');
    END IF;
    IF events_table = 'biomero.events'::regclass THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'events_table must be an eventsourcing events table, not biomero.events';
    END IF;

    PERFORM biomero.check_import_source(events_table, 'events');
    -- The notification id column: notification_id (eventsourcing) or id
    -- (eventsourcing-sqlalchemy); one of two fixed expressions, never a name from input.
    source_id := CASE WHEN EXISTS (
            SELECT FROM pg_attribute AS a
            WHERE a.attrelid = events_table AND a.attname = 'notification_id' AND a.attnum > 0
              AND NOT a.attisdropped)
        THEN 's.notification_id' ELSE 's.id' END;
    wrong := biomero.unexpected_columns(events_table, ARRAY[
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

    head := biomero.lock_for_import(target);
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', events_table);

    -- Every source event must be absent or identical at its own id, and an absent one must
    -- carry an aggregate version the application does not have (at another id, or twice in
    -- the source) and land above every id the application has committed, or a reader may
    -- already have passed it.
    EXECUTE format(
        'SELECT count(*),
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
    INTO source_rows, present, conflicting, passed;
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
        PERFORM biomero.check_import_source(tracking_table, 'tracking');
        wrong := biomero.unexpected_columns(tracking_table, ARRAY[
            ['application_name', 'text or character varying'],
            ['notification_id', 'bigint or integer']]);
        IF wrong IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'undefined_column',
                MESSAGE = format('%s is not an eventsourcing tracking table', tracking_table),
                DETAIL = format('Missing or of another type: %s.', wrong);
        END IF;
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', tracking_table);
        -- eventsourcing 9.4 and later also keep a '__migration__' row: not an upstream.
        -- Every other upstream's name must be one the extension takes: refused, not skipped.
        FOR source_upstream IN EXECUTE format(
            'SELECT DISTINCT s.application_name FROM ONLY %1$s AS s
             WHERE s.notification_id > 0 AND s.application_name <> $2
               AND ($1::text IS NULL OR s.application_name = $1)',
            tracking_table)
        USING upstream, '__migration__'
        LOOP
            PERFORM biomero.check_name(source_upstream,
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

DROP FUNCTION biomero.summary();
DROP VIEW biomero.applications;
DROP VIEW biomero.followers;
-- Names compare byte by byte (the views that read these columns are dropped above).
ALTER TABLE biomero.events ALTER COLUMN application_name TYPE text COLLATE "C";
ALTER TABLE biomero.tracking
    ALTER COLUMN application_name TYPE text COLLATE "C",
    ALTER COLUMN upstream_application_name TYPE text COLLATE "C";
-- Per application (followers included): live append mode, head, horizon (the highest id
-- readers may read: below every id still in flight), events stored, restriction.
CREATE VIEW biomero.applications AS
SELECT r.application_name,
       s.append_mode,
       e.head_notification_id,
       coalesce(s.horizon, e.head_notification_id) AS horizon,
       e.event_count,
       r.restricted_to
FROM biomero.application_registry AS r
CROSS JOIN LATERAL biomero.append_state(r.application_name) AS s
CROSS JOIN LATERAL (
    SELECT max(events.notification_id) AS head_notification_id,
           count(*)                    AS event_count
    FROM biomero.events
    WHERE events.application_name = r.application_name
) AS e;

-- Per (follower, upstream) pair: its position, the upstream head and the lag.
CREATE VIEW biomero.followers AS
SELECT t.application_name,
       t.upstream_application_name,
       t.notification_id                                      AS position,
       head.notification_id                                   AS upstream_head,
       greatest(head.notification_id - t.notification_id, 0) AS lag
FROM biomero.tracking AS t
LEFT JOIN LATERAL (
    SELECT max(e.notification_id) AS notification_id
    FROM biomero.events AS e
    WHERE e.application_name = t.upstream_application_name
) AS head ON true;

-- Transactions holding concurrent ids not yet committed: the one with the lowest id of an
-- application holds its horizon back. A stuck one is ended with pg_terminate_backend(pid), or
-- by idle_in_transaction_session_timeout.
CREATE VIEW biomero.appends_in_flight AS
SELECT f.application_name,
       f.pid,
       f.transaction_start,
       f.lowest_id,
       f.lowest_id = min(f.lowest_id) OVER (PARTITION BY f.application_name) AS holds_horizon
FROM biomero.in_flight_appends() AS f;

-- The extension's locks held or awaited in this database, by name: who holds an
-- application's append lock (in serialized mode a transaction left open holds up every writer
-- of it) or a follower's claim. End a stuck holder with pg_terminate_backend(pid).
CREATE VIEW biomero.locks AS
SELECT l.pid,
       k.kind,
       a.application_name,
       u.application_name AS upstream_application_name,
       l.granted,
       l.waitstart
FROM pg_catalog.pg_locks AS l
JOIN biomero.lock_kinds() AS k ON k.objsubid = l.objsubid
JOIN pg_catalog.pg_database AS d ON d.oid = l.database AND d.datname = current_database()
LEFT JOIN biomero.application_registry AS a ON a.application_id = l.classid::bigint
LEFT JOIN biomero.application_registry AS u
       ON k.kind = 'claim' AND u.application_id = l.objid::bigint
WHERE l.locktype = 'advisory';

CREATE FUNCTION biomero.summary() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $function$
SELECT jsonb_build_object(
    'applications', coalesce((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.application_name)
                              FROM biomero.applications AS a), '[]'),
    'followers', coalesce((SELECT jsonb_agg(to_jsonb(f) ORDER BY f.application_name,
                                                              f.upstream_application_name)
                           FROM biomero.followers AS f), '[]'))
$function$;

COMMENT ON FUNCTION biomero.summary() IS
'The operator views biomero.applications and biomero.followers as one jsonb document.';

REVOKE ALL ON ALL TABLES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON FUNCTION
    biomero.check_name(text, text), biomero.check_limit(bigint), biomero.check_topics(text[]),
    biomero.readable_bound(text), biomero.append_state(text), biomero.in_flight_appends(),
    biomero.set_append_mode(text, text), biomero.restrict_application(text, regrole),
    biomero.reset_position(text, text, bigint), biomero.lock_for_import(text),
    biomero.max_notification_id(text), biomero.max_tracking_id(text, text),
    biomero.select_notifications(text, bigint, bigint, bigint, text[], boolean),
    biomero.unexpected_columns(regclass, text[]), biomero.check_import_source(regclass, text),
    biomero.import_eventsourcing(text, regclass, regclass, text), biomero.summary(),
    biomero.lock_kinds()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    biomero.check_name(text, text),
    biomero.check_limit(bigint),
    biomero.check_topics(text[]),
    biomero.readable_bound(text),
    biomero.append_state(text),
    biomero.lock_kinds()
TO PUBLIC;
