-- Trial of an inlinable select_notifications (LANGUAGE sql, no SET clause, not SECURITY
-- DEFINER), for comparing with the shipped one on a throwaway cluster:
--   BENCH_SETUP_SQL=bench/experiments/select_notifications_sql.sql BENCH_ONLY=read \
--   BENCH_OUT=bench/results/trial bash scripts/bench.sh
-- It leaves out the argument checks of the shipped function (a proposal would call them in
-- the WHERE clause as a qual without columns, evaluated once).
CREATE OR REPLACE FUNCTION biomero.select_notifications(
    application_name text, start bigint, "limit" bigint, stop bigint DEFAULT NULL,
    topics text[] DEFAULT '{}', inclusive_of_start boolean DEFAULT true)
RETURNS TABLE (notification_id bigint, originator_id uuid, originator_version bigint,
               topic text, state bytea)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM biomero.events AS e
    WHERE e.application_name OPERATOR(pg_catalog.=) $1
      AND e.notification_id OPERATOR(pg_catalog.>) coalesce(
            CASE WHEN $6 THEN $2 OPERATOR(pg_catalog.-) 1 ELSE $2 END,
            '-9223372036854775808'::bigint)
      AND e.notification_id OPERATOR(pg_catalog.<=) coalesce($4, '9223372036854775807'::bigint)
      AND (pg_catalog.cardinality($5) OPERATOR(pg_catalog.=) 0
           OR e.topic OPERATOR(pg_catalog.=) ANY ($5))
    ORDER BY e.notification_id
    LIMIT $3
$$;
