-- Operator views. They read every event of an application to count them: for looking, not
-- for polling.

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
-- of it) or a follower's claim. End a stuck holder with pg_terminate_backend(pid). A name
-- whose first use has not committed yet is named too (biomero_internal.application_name_of).
CREATE VIEW biomero.locks AS
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
