-- Declared here so that its role argument is a regrole (pgrx would declare an oid).
CREATE FUNCTION biomero.restrict_application(application_name text, role regrole)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'restrict_application_wrapper';

COMMENT ON FUNCTION biomero.restrict_application(text, regrole) IS
'From now on only members of role may append to, record positions of, or claim as the '
'application; NULL lifts the restriction.';
