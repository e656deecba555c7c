-- Run by the official postgres image when it creates its database (docker-entrypoint-initdb.d,
-- as POSTGRES_USER in POSTGRES_DB), and by scripts/test-package.sh. For a database created
-- earlier, run it once by hand:
--   psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f /docker-entrypoint-initdb.d/50-biomero-tracking.sql
CREATE EXTENSION IF NOT EXISTS biomero_tracking;
