-- Operating: the views, the summary, append modes, restrictions, and what every function
-- pins.
\set SHOW_CONTEXT never

SELECT biomero.record_events('Operated', ARRAY[gen_random_uuid(), gen_random_uuid(),
         gen_random_uuid()], ARRAY[0, 0, 0], ARRAY['t', 't', 't'],
         ARRAY['\x00', '\x00', '\x00']::bytea[]);
SELECT biomero.record_tracking('OperatedFollower', 'Operated', 1);

-- Per application (followers too): mode, head, horizon, events, restriction.
SELECT * FROM biomero.applications
WHERE application_name IN ('Operated', 'OperatedFollower') ORDER BY application_name;
SELECT * FROM biomero.followers WHERE application_name = 'OperatedFollower';
SELECT jsonb_pretty(jsonb_path_query_first(biomero.summary(),
    '$.followers[*] ? (@.application_name == "OperatedFollower")'));

-- Concurrent mode (with the library in shared_preload_libraries): writers never wait for each
-- other; readers read up to the horizon. The previous mode is returned.
SELECT biomero.set_append_mode('Operated', 'concurrent');
SELECT biomero.record_event('Operated', gen_random_uuid(), 0, 't', '');
SELECT notification_id FROM biomero.select_notifications('Operated', 3, 10);
SELECT application_name, append_mode, head_notification_id, horizon
FROM biomero.applications WHERE application_name = 'Operated';
SELECT count(*) AS in_flight FROM biomero.appends_in_flight WHERE application_name = 'Operated';
SELECT biomero.set_append_mode('Operated', 'serialized');
SELECT biomero.record_event('Operated', gen_random_uuid(), 0, 't', '');
SELECT biomero.set_append_mode('Operated', 'fast');

-- The extension's locks in this database, by name: here this session's claim and append lock
-- (in serialized mode, an open transaction holding an append lock holds up every writer of
-- the application; pg_terminate_backend(pid) ends it).
BEGIN;
SELECT biomero.claim('OperatedFollower', 'Operated');
SELECT biomero.record_event('Operated', gen_random_uuid(), 0, 't', '');
SELECT kind, application_name, upstream_application_name, granted, pid = pg_backend_pid() AS mine
FROM biomero.locks ORDER BY kind;
COMMIT;
SELECT count(*) AS held_after_commit FROM biomero.locks;

-- Restricting an application to a role: its non-members may not append, record positions or
-- claim as it.
CREATE ROLE regress_trackers;
CREATE ROLE regress_outsider;
GRANT USAGE ON SCHEMA biomero TO regress_outsider;
GRANT EXECUTE ON FUNCTION biomero.record_event TO regress_outsider;
SELECT biomero.restrict_application('Operated', 'regress_trackers');
SET ROLE regress_outsider;
SELECT biomero.record_event('Operated', gen_random_uuid(), 0, 't', '');
RESET ROLE;
-- An administrator's reset of a restricted follower's position is for members too.
SELECT biomero.record_tracking('OperatedFollower', 'Operated', 2);
SELECT biomero.restrict_application('OperatedFollower', 'regress_trackers');
GRANT EXECUTE ON FUNCTION biomero.reset_position TO regress_outsider;
SET ROLE regress_outsider;
SELECT biomero.reset_position('OperatedFollower', 'Operated', 1);
RESET ROLE;
SELECT biomero.max_tracking_id('OperatedFollower', 'Operated');
SELECT biomero.reset_position('OperatedFollower', 'Operated', 1);
SELECT biomero.restrict_application('OperatedFollower', NULL);
SELECT biomero.restrict_application('Operated', NULL);
DROP OWNED BY regress_outsider;
DROP ROLE regress_outsider;
DROP ROLE regress_trackers;

-- Importing an eventsourcing store (its events table, and a follower's tracking table):
-- events keep their notification ids, the highest tracked id per upstream becomes the
-- position; a second import finds everything present.
CREATE TABLE legacy_events (notification_id bigint PRIMARY KEY, originator_id uuid,
                            originator_version bigint, topic text, state bytea);
INSERT INTO legacy_events VALUES
    (1, 'a3c4e1f0-0000-4000-8000-000000000001', 0, 'legacy:Created', ''),
    (3, 'a3c4e1f0-0000-4000-8000-000000000001', 1, 'legacy:Updated', '');
CREATE TABLE legacy_tracking (application_name text, notification_id bigint,
                              PRIMARY KEY (application_name, notification_id));
INSERT INTO legacy_tracking VALUES ('LegacyUpstream', 1), ('LegacyUpstream', 2),
                                   ('__migration__', 1);
SELECT * FROM biomero.import_eventsourcing('Legacy', 'legacy_events', 'legacy_tracking');
SELECT * FROM biomero.import_eventsourcing('Legacy', 'legacy_events', 'legacy_tracking');
SELECT notification_id, topic FROM biomero.select_notifications('Legacy', 1, 10);
SELECT biomero.max_tracking_id('Legacy', 'LegacyUpstream');
-- A tracked upstream whose name the extension cannot take is refused, and nothing is written.
INSERT INTO legacy_tracking VALUES (repeat('x', 256), 4);
SELECT * FROM biomero.import_eventsourcing('Legacy2', 'legacy_events', 'legacy_tracking');
SELECT count(*) AS imported FROM biomero.events WHERE application_name = 'Legacy2';
DELETE FROM legacy_tracking WHERE notification_id = 4;
-- Rows the libraries never store are refused (22023), all or nothing: a NULL id, an id used
-- twice, an empty topic; and a tracking row without a position.
CREATE TABLE malformed_events (notification_id bigint, originator_id uuid,
                               originator_version bigint, topic text, state bytea);
INSERT INTO malformed_events VALUES
    (1, 'a3c4e1f0-0000-4000-8000-000000000002', 0, 'legacy:Created', ''),
    (NULL, 'a3c4e1f0-0000-4000-8000-000000000002', 1, 'legacy:Updated', ''),
    (2, 'a3c4e1f0-0000-4000-8000-000000000003', 0, 'legacy:Created', ''),
    (2, 'a3c4e1f0-0000-4000-8000-000000000004', 0, '', '');
SELECT * FROM biomero.import_eventsourcing('Malformed', 'malformed_events');
DELETE FROM malformed_events WHERE notification_id IS NULL OR topic = '';
ALTER TABLE legacy_tracking DROP CONSTRAINT legacy_tracking_pkey,
    ALTER COLUMN notification_id DROP NOT NULL;
INSERT INTO legacy_tracking VALUES ('LegacyUpstream', NULL);
SELECT * FROM biomero.import_eventsourcing('Malformed', 'malformed_events', 'legacy_tracking');
SELECT count(*) AS imported FROM biomero.events WHERE application_name = 'Malformed';
DROP TABLE legacy_events, legacy_tracking, malformed_events;

-- Every function pins its search_path; nothing is granted to PUBLIC but what followers read
-- of a concurrent upstream and the helpers of the reads (schema biomero_internal, which
-- PUBLIC may use): no table or view (biomero.locks included), and these functions.
SELECT count(*) AS unpinned FROM pg_proc
WHERE pronamespace IN ('biomero'::regnamespace, 'biomero_internal'::regnamespace)
  AND NOT coalesce(proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp'];
SELECT p.oid::regprocedure AS granted_to_public
FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.pronamespace IN ('biomero'::regnamespace, 'biomero_internal'::regnamespace)
  AND a.grantee = 0
ORDER BY p.oid::regprocedure::text;
SELECT n.nspname AS schema_usable_by_public
FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
WHERE n.nspname LIKE 'biomero%' AND a.grantee = 0 AND a.privilege_type = 'USAGE';
SELECT c.oid::regclass AS relation_granted_to_public
FROM pg_class AS c, aclexplode(c.relacl) AS a
WHERE c.relnamespace = 'biomero'::regnamespace AND a.grantee = 0;
