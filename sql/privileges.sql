-- Privileges are granted, not assumed (see README, "Privileges"). Nothing in schema biomero is
-- usable by PUBLIC but the live append state and the highest id handed out (read by
-- followers), and nothing in schema biomero_internal but the helpers the reads and views
-- call. They read with the caller's rights and so reveal nothing the caller could not read:
-- the argument checks, the read bound, the names of the lock kinds, and the name of a registry
-- id (for callers that may read the registry or biomero.locks). The import's helpers are
-- granted to nobody, like the import. An administrator grants one of two sets:
--   writers: EXECUTE on record_event, record_events, record_tracking, claim
--   readers: SELECT on the tables and views, EXECUTE on the select_*, max_*, summary and
--            in_flight_appends
-- The write functions switch to the schema owner for their statements, so writers need no
-- INSERT or UPDATE on the tables: ids can only be assigned by record_event(s).
REVOKE ALL ON ALL TABLES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA biomero FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA biomero, biomero_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA biomero_internal TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    biomero.append_state(text),
    biomero.last_taken_id(text),
    biomero_internal.check_name(text, text),
    biomero_internal.check_limit(bigint),
    biomero_internal.check_topics(text[]),
    biomero_internal.readable_bound(text),
    biomero_internal.application_name_of(integer),
    biomero_internal.lock_kinds()
TO PUBLIC;
