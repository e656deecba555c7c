-- The reads that are better as SQL. select_notifications is PL/pgSQL: RETURN QUERY hands the
-- rows of one index scan to the caller as they are, where a Rust set-returning function
-- converts every column of every row to Rust and back (a 1,000-row page cost 2.6x a plain
-- SELECT from Rust). All of them run with the caller's snapshot, and read no further than
-- biomero_internal.readable_bound allows: nothing a later reader could find below what they returned.
-- Arguments are checked by the same rules as the Rust functions (biomero_internal.check_*).

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
    PERFORM biomero_internal.check_name(application, 'application_name');
    last_id := coalesce(biomero_internal.readable_bound(application), 9223372036854775807);
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
    PERFORM biomero_internal.check_name(follower, 'application_name');
    PERFORM biomero_internal.check_name(upstream, 'upstream_application_name');
    RETURN (SELECT t.notification_id
            FROM biomero.tracking AS t
            WHERE t.application_name = follower AND t.upstream_application_name = upstream);
END;
$function$;

COMMENT ON FUNCTION biomero.max_tracking_id(text, text) IS
'The last notification id of the upstream application the follower recorded; NULL when none.';
