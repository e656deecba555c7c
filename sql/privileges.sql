-- Privileges are granted, not assumed (see README, "Privileges"). Nothing in the schema is
-- usable by PUBLIC but the helpers the reads call, which read the tables with the caller's
-- rights and so reveal nothing the caller could not read: the argument checks, the read bound,
-- the live append state, the highest id handed out, the names of the lock kinds, and the name
-- of a registry id (for callers that may read the registry or biomero.locks). An administrator grants one of two sets:
--   writers: EXECUTE on record_event, record_events, record_tracking, claim
--   readers: SELECT on the tables and views, EXECUTE on the select_*, max_*, summary and
--            in_flight_appends
-- The write functions switch to the schema owner for their statements, so writers need no
-- INSERT or UPDATE on the tables: ids can only be assigned by record_event(s).
REVOKE ALL ON ALL TABLES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA biomero FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    biomero.check_name(text, text),
    biomero.check_limit(bigint),
    biomero.check_topics(text[]),
    biomero.readable_bound(text),
    biomero.append_state(text),
    biomero.last_taken_id(text),
    biomero.application_name_of(integer),
    biomero.lock_kinds()
TO PUBLIC;
