-- Appending: record_event and record_events assign consecutive notification ids per
-- application, in commit order, and refuse bad input with a clear message.
\set SHOW_CONTEXT never

-- One event; returns its notification id. Each application has its own ids.
SELECT biomero.record_event('WorkflowTracker', '7f3c2a1e-0000-4000-8000-000000000001', 0,
                            'biomero.eventsourcing:WorkflowRun.WorkflowInitiated',
                            convert_to('{"name": "cellpose"}', 'UTF8'));
SELECT biomero.record_event('WorkflowTracker', '7f3c2a1e-0000-4000-8000-000000000001', 1,
                            'biomero.eventsourcing:WorkflowRun.TaskAdded', '\x7b7d');
SELECT biomero.record_event('JobAccounting', '7f3c2a1e-0000-4000-8000-000000000002', 0,
                            'biomero.views:JobAccounting.Started', '\x7b7d');

-- What is stored is what was given.
SELECT application_name, notification_id, originator_version, topic,
       convert_from(state, 'UTF8') AS state
FROM biomero.events
WHERE application_name IN ('WorkflowTracker', 'JobAccounting')
ORDER BY application_name, notification_id;

-- Several events of one application, all or nothing; ids in order.
SELECT biomero.record_events('WorkflowTracker',
         ARRAY['7f3c2a1e-0000-4000-8000-000000000001', '7f3c2a1e-0000-4000-8000-000000000001']::uuid[],
         ARRAY[2, 3], ARRAY['biomero.eventsourcing:WorkflowRun.WorkflowStarted',
                            'biomero.eventsourcing:WorkflowRun.WorkflowCompleted'],
         ARRAY['\x7b7d', '\x7b7d']::bytea[]);
SELECT biomero.max_notification_id('WorkflowTracker');

-- A second event for an aggregate version is an optimistic-concurrency conflict (23505), the
-- only unique violation any function raises; within one batch too, and the batch is not kept.
SELECT biomero.record_event('WorkflowTracker', '7f3c2a1e-0000-4000-8000-000000000001', 3,
                            'biomero.eventsourcing:WorkflowRun.WorkflowFailed', '\x7b7d');
SELECT biomero.record_events('WorkflowTracker',
         ARRAY['7f3c2a1e-0000-4000-8000-000000000003', '7f3c2a1e-0000-4000-8000-000000000003']::uuid[],
         ARRAY[0, 0], ARRAY['t', 't'], ARRAY['\x00', '\x00']::bytea[]);
SELECT biomero.max_notification_id('WorkflowTracker');

-- A follower's commit: its position and its new events together. When the position was
-- already recorded, nothing is written and the result is NULL; empty arrays record just the
-- position.
SELECT biomero.record_events('WorkflowProgress',
         ARRAY['7f3c2a1e-0000-4000-8000-000000000004']::uuid[], ARRAY[0],
         ARRAY['biomero.views:WorkflowProgress.Updated'], ARRAY['\x7b7d']::bytea[],
         'WorkflowTracker', 4);
SELECT biomero.record_events('WorkflowProgress',
         ARRAY['7f3c2a1e-0000-4000-8000-000000000004']::uuid[], ARRAY[1],
         ARRAY['biomero.views:WorkflowProgress.Updated'], ARRAY['\x7b7d']::bytea[],
         'WorkflowTracker', 4);
SELECT biomero.record_events('WorkflowProgress', '{}', '{}', '{}', '{}', 'WorkflowTracker', 5);
SELECT biomero.max_tracking_id('WorkflowProgress', 'WorkflowTracker'),
       biomero.max_notification_id('WorkflowProgress');

-- Bad input: NULLs raise 22004, values outside their domain 22023; nothing is written.
SELECT biomero.record_event(NULL, gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event('', gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event(repeat('x', 256), gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event('WorkflowTracker', NULL, 0, 't', '');
SELECT biomero.record_event('WorkflowTracker', gen_random_uuid(), -1, 't', '');
SELECT biomero.record_event('WorkflowTracker', gen_random_uuid(), 0, '', '');
SELECT biomero.record_event('WorkflowTracker', gen_random_uuid(), 0, 't', NULL);
SELECT biomero.record_events('WorkflowTracker', ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[0], ARRAY['t', 't'], ARRAY['\x00', '\x00']::bytea[]);
SELECT biomero.record_events('WorkflowTracker', ARRAY[gen_random_uuid(), gen_random_uuid()],
         ARRAY[0, NULL]::bigint[], ARRAY['t', 't'], ARRAY['\x00', '\x00']::bytea[]);
SELECT biomero.record_events('WorkflowProgress', '{}', '{}', '{}', '{}', 'WorkflowTracker', NULL);
SELECT biomero.record_events('WorkflowProgress', '{}', '{}', '{}', '{}', 'WorkflowTracker', 0);
SELECT biomero.max_notification_id('WorkflowTracker');

-- The last notification id is bigint's largest; past it, 22003 names the application.
INSERT INTO biomero.events
VALUES ('Full', 9223372036854775806, gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event('Full', gen_random_uuid(), 0, 't', '');
SELECT biomero.record_event('Full', gen_random_uuid(), 0, 't', '');
