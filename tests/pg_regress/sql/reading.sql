-- Reading: notifications in id order with bounds and topics, one aggregate's events by
-- version, heads and positions.
\set SHOW_CONTEXT never

SELECT biomero.record_events('Reading',
         ARRAY['7f3c2a1e-0000-4000-8000-00000000000a', '7f3c2a1e-0000-4000-8000-00000000000a',
               '7f3c2a1e-0000-4000-8000-00000000000a', '7f3c2a1e-0000-4000-8000-00000000000b',
               '7f3c2a1e-0000-4000-8000-00000000000a']::uuid[],
         ARRAY[0, 1, 2, 0, 3],
         ARRAY['Task.TaskCreated', 'Task.StatusUpdated', 'Task.StatusUpdated',
               'Task.TaskCreated', 'Task.TaskCompleted'],
         ARRAY['\x01', '\x02', '\x03', '\x04', '\x05']::bytea[]);

-- From the beginning (start NULL), at most "limit".
SELECT notification_id, originator_version, topic, state
FROM biomero.select_notifications('Reading', NULL, 10);
-- From 2, inclusive by default; exclusive on request; up to stop (inclusive).
SELECT notification_id FROM biomero.select_notifications('Reading', 2, 2);
SELECT notification_id FROM biomero.select_notifications('Reading', 2, 10, inclusive_of_start => false);
SELECT notification_id FROM biomero.select_notifications('Reading', 1, 10, stop => 3);
-- Only some topics.
SELECT notification_id, topic
FROM biomero.select_notifications('Reading', NULL, 10, topics => ARRAY['Task.TaskCreated']);
SELECT count(*) FROM biomero.select_notifications('Reading', 1, 0);

-- One aggregate's events by version: after gt, up to lte, descending, at most "limit".
SELECT originator_version, notification_id
FROM biomero.select_events('Reading', '7f3c2a1e-0000-4000-8000-00000000000a');
SELECT originator_version FROM biomero.select_events('Reading',
    '7f3c2a1e-0000-4000-8000-00000000000a', gt => 1, lte => 2);
SELECT originator_version FROM biomero.select_events('Reading',
    '7f3c2a1e-0000-4000-8000-00000000000a', "desc" => true, "limit" => 2);

SELECT biomero.max_notification_id('Reading'), biomero.max_notification_id('Unknown');

-- Bad input.
SELECT * FROM biomero.select_notifications('Reading', 1, -1);
SELECT * FROM biomero.select_notifications('Reading', 1, NULL);
SELECT * FROM biomero.select_notifications('Reading', 1, 5, topics => ARRAY['t', NULL]);
SELECT * FROM biomero.select_notifications('Reading', 1, 5, topics => ARRAY['']);
SELECT * FROM biomero.select_notifications(repeat('é', 256), 1, 5);
SELECT * FROM biomero.select_events('Reading', '7f3c2a1e-0000-4000-8000-00000000000a', "limit" => -5);
SELECT * FROM biomero.select_events('Reading', NULL);
SELECT biomero.max_notification_id(NULL);
SELECT biomero.max_tracking_id('Reading', '');
