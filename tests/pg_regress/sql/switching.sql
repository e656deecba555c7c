-- Switching append modes. A switch takes effect when its transaction commits: appends of the
-- same transaction still go the serialized way, and the ids handed out after the commit
-- start above them. An import in the transaction of a switch is refused.
\set SHOW_CONTEXT never

SELECT biomero.record_event('Switched', gen_random_uuid(), 0, 't', '');
BEGIN;
SELECT biomero.set_append_mode('Switched', 'concurrent');
SELECT biomero.record_event('Switched', gen_random_uuid(), 0, 't', '');
SELECT biomero.record_events('Switched', ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[0, 0], ARRAY['t', 't'], ARRAY['\x00', '\x00']::bytea[]);
CREATE TABLE switched_source (id bigint PRIMARY KEY, originator_id uuid,
                              originator_version bigint, topic text, state bytea);
SELECT * FROM biomero.import_eventsourcing('Switched', 'switched_source');
ROLLBACK;

BEGIN;
SELECT biomero.set_append_mode('Switched', 'concurrent');
SELECT biomero.record_event('Switched', gen_random_uuid(), 0, 't', '');
SELECT biomero.record_events('Switched', ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[0, 0], ARRAY['t', 't'], ARRAY['\x00', '\x00']::bytea[]);
COMMIT;
-- Concurrent from here on, above the ids of that transaction.
SELECT biomero.record_event('Switched', gen_random_uuid(), 0, 't', '');
SELECT append_mode, head_notification_id, horizon, event_count
FROM biomero.applications WHERE application_name = 'Switched';

-- What standbys read up to (the published horizon) is set by the switch too: with nothing in
-- flight, everything committed.
SELECT biomero.set_append_mode('Switched', 'concurrent');
SELECT published_horizon FROM biomero.application_registry
WHERE application_name = 'Switched';

-- Switching to serialized needs no shared memory for an application that has none.
SELECT biomero.set_append_mode('NeverConcurrent', 'serialized');

-- Concurrent mode hands out bigint's largest id too; the next append is a clear 22003.
INSERT INTO biomero.application_registry (application_name) VALUES ('Last');
INSERT INTO biomero.events VALUES ('Last', 9223372036854775806, gen_random_uuid(), 0, 't', '');
SELECT biomero.set_append_mode('Last', 'concurrent');
SELECT biomero.record_event('Last', gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event('Last', gen_random_uuid(), 0, 't', '');
SELECT notification_id FROM biomero.select_notifications('Last', NULL, 10);
