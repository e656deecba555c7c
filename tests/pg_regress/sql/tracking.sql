-- Follower positions: record_tracking moves a position forward or answers false, and never
-- raises a unique violation; claim lets the processes of one follower take turns.
\set SHOW_CONTEXT never

SELECT biomero.record_tracking('JobProgress', 'WorkflowTracker', 3);   -- advanced
SELECT biomero.record_tracking('JobProgress', 'WorkflowTracker', 3);   -- already there
SELECT biomero.record_tracking('JobProgress', 'WorkflowTracker', 2);   -- behind: no change
SELECT biomero.record_tracking('JobProgress', 'WorkflowTracker', 7);
SELECT biomero.record_tracking('JobProgress', 'JobAccounting', 1);     -- another upstream
SELECT biomero.max_tracking_id('JobProgress', 'WorkflowTracker'),
       biomero.max_tracking_id('JobProgress', 'JobAccounting'),
       biomero.max_tracking_id('WorkflowAnalytics', 'WorkflowTracker');

-- The claim is held until the end of the transaction and returns the position its last
-- holder committed (0 when none). It is re-entrant within the holder's transaction.
BEGIN;
SELECT biomero.claim('JobProgress', 'WorkflowTracker');
SELECT biomero.claim('JobProgress', 'WorkflowTracker', wait => false);
SELECT biomero.claim('WorkflowAnalytics', 'WorkflowTracker');
SELECT count(*) AS claims_held FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SELECT count(*) AS claims_held FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();

-- An administrator moves a position back (0 forgets it); it returns the position replaced.
SELECT biomero.reset_position('JobProgress', 'WorkflowTracker', 5);
SELECT biomero.max_tracking_id('JobProgress', 'WorkflowTracker');
SELECT biomero.reset_position('JobProgress', 'JobAccounting', 0);
SELECT biomero.max_tracking_id('JobProgress', 'JobAccounting');

-- Bad input.
SELECT biomero.record_tracking('JobProgress', 'WorkflowTracker', -4);
SELECT biomero.record_tracking('JobProgress', '', 1);
SELECT biomero.record_tracking(NULL, 'WorkflowTracker', 1);
SELECT biomero.claim('JobProgress', 'WorkflowTracker', NULL);
SELECT biomero.claim('', 'WorkflowTracker');
SELECT biomero.reset_position('JobProgress', 'WorkflowTracker', -1);
