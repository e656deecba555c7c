-- Rebuilding a follower's read model: biomero.reset_table_name names a table the follower's
-- role creates; dropping it forgets every position of the follower in the dropping
-- transaction, together with the read-model tables dropped beside it (what BIOMERO's
-- init_slurm does with the tracking tables of eventsourcing-sqlalchemy).
\set SHOW_CONTEXT never

SELECT biomero.record_tracking('Rebuilt', 'FirstUpstream', 4),
       biomero.record_tracking('Rebuilt', 'SecondUpstream', 9),
       biomero.record_tracking('NotRebuilt', 'FirstUpstream', 4);
SELECT biomero.reset_table_name('Rebuilt') AS reset_table \gset
SELECT :'reset_table' ~ '^biomero_reset_[0-9]+$' AS named_by_registry_id,
       biomero.reset_table_name('Rebuilt') = :'reset_table' AS the_same_every_time;
SELECT format('CREATE TABLE %I ()', :'reset_table') \gexec
CREATE TABLE rebuilt_view (id integer);

-- Rolled back, the drop forgets nothing.
BEGIN;
SELECT format('DROP TABLE %I, rebuilt_view', :'reset_table') \gexec
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream') AS first,
       biomero.max_tracking_id('Rebuilt', 'SecondUpstream') AS second;
ROLLBACK;
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream') AS first,
       biomero.max_tracking_id('Rebuilt', 'SecondUpstream') AS second;

-- Committed, the follower starts over on every upstream; other followers keep theirs.
SELECT format('DROP TABLE %I, rebuilt_view', :'reset_table') \gexec
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream') AS first,
       biomero.max_tracking_id('Rebuilt', 'SecondUpstream') AS second,
       biomero.max_tracking_id('NotRebuilt', 'FirstUpstream') AS not_rebuilt;

-- Resetting is an administrator's grant: without EXECUTE on forget_positions a role's drop
-- of its own reset table fails and forgets nothing; a restricted follower is reset by the
-- members of its role only.
CREATE ROLE regress_rebuilder;
CREATE ROLE regress_trackers;
GRANT USAGE ON SCHEMA biomero TO regress_rebuilder;
GRANT CREATE ON SCHEMA public TO regress_rebuilder;
GRANT EXECUTE ON FUNCTION biomero.reset_table_name, biomero.record_tracking
    TO regress_rebuilder;
SET ROLE regress_rebuilder;
SELECT biomero.record_tracking('Rebuilt', 'FirstUpstream', 5);
SELECT format('CREATE TABLE %I ()', :'reset_table') \gexec
SELECT format('DROP TABLE %I', :'reset_table') \gexec
RESET ROLE;
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream');
GRANT EXECUTE ON FUNCTION biomero_internal.forget_positions TO regress_rebuilder;
SELECT biomero.restrict_application('Rebuilt', 'regress_trackers');
SET ROLE regress_rebuilder;
SELECT format('DROP TABLE %I', :'reset_table') \gexec
RESET ROLE;
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream');
GRANT regress_trackers TO regress_rebuilder;
SET ROLE regress_rebuilder;
SELECT format('DROP TABLE %I', :'reset_table') \gexec
RESET ROLE;
SELECT biomero.max_tracking_id('Rebuilt', 'FirstUpstream');
SELECT biomero.restrict_application('Rebuilt', NULL);
DROP OWNED BY regress_rebuilder;
DROP ROLE regress_rebuilder;
DROP ROLE regress_trackers;

-- Other tables are dropped as always, names like a reset table's included.
CREATE TABLE biomero_reset_x ();
DROP TABLE biomero_reset_x;
CREATE TABLE biomero_reset_999999 ();
DROP TABLE biomero_reset_999999;

-- Bad input.
SELECT biomero.reset_table_name('');
SELECT biomero.reset_table_name(NULL);
SELECT biomero_internal.forget_positions('rebuilt_view');
SELECT biomero_internal.forget_positions('biomero_reset_99999999999');
SELECT biomero_internal.forget_positions(NULL);
