-- Privileges are granted, not assumed. Nothing in the schema is usable by PUBLIC; an
-- administrator grants one of two sets (see README, "Privileges"):
--   writers: EXECUTE on record_event, record_events, record_tracking, claim
--   readers: SELECT on the tables and views, EXECUTE on the select_*, max_* and summary
-- The write functions are SECURITY DEFINER so that writers need no INSERT or UPDATE on the
-- tables: ids can only be assigned by record_event(s).
REVOKE ALL ON ALL TABLES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA biomero FROM PUBLIC;
