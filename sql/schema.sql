-- Storage of biomero_tracking. Ids are assigned only by biomero.record_event(s); clients get
-- no direct write privilege on these tables.

-- Names, topics and lengths are checked as text, in characters: one rule needs one encoding.
DO $encoding$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'biomero_tracking needs a UTF8 database; database "%" uses %',
                pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create the database with ENCODING ''UTF8'' TEMPLATE template0.';
    END IF;
END
$encoding$;

-- The helpers of the SQL-language functions and views (argument rules, the read bound, the
-- lock kinds, the import's checks): used by the API in schema biomero, not part of it.
CREATE SCHEMA biomero_internal;

-- One row per application name, follower and upstream alike: a small id assigned once, which
-- keys the extension's locks and shared memory, and the application's settings.
CREATE SEQUENCE biomero.application_id_seq AS integer;

CREATE TABLE biomero.application_registry (
    application_id    integer NOT NULL DEFAULT nextval('biomero.application_id_seq'),
    application_name  text COLLATE "C" NOT NULL,
    -- 'serialized': gapless ids in commit order; 'concurrent': writers never wait (holes).
    append_mode       text    NOT NULL DEFAULT 'serialized',
    -- Only members of this role may append to, record positions of or claim as it.
    restricted_to     regrole,
    -- The horizon the primary published for standbys (NULL: read everything).
    published_horizon bigint,
    CONSTRAINT application_registry_pkey PRIMARY KEY (application_id),
    CONSTRAINT application_registry_application_name_key UNIQUE (application_name),
    CONSTRAINT application_registry_append_mode_check
        CHECK (append_mode IN ('serialized', 'concurrent'))
);

ALTER SEQUENCE biomero.application_id_seq OWNED BY biomero.application_registry.application_id;

-- One row per stored event, as the eventsourcing library stores it, per application.
-- Names compare byte by byte (COLLATE "C"): equality is the same in every deterministic
-- collation, and index lookups and inserts skip the locale's comparison.
CREATE TABLE biomero.events (
    application_name   text COLLATE "C" NOT NULL,
    notification_id    bigint NOT NULL,
    originator_id      uuid   NOT NULL,
    originator_version bigint NOT NULL,
    topic              text   NOT NULL,
    state              bytea  NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (application_name, notification_id),
    -- The aggregate's optimistic-concurrency key: a second event for a version is a conflict.
    CONSTRAINT events_aggregate_version_key
        UNIQUE (application_name, originator_id, originator_version),
    CONSTRAINT events_notification_id_positive CHECK (notification_id > 0),
    CONSTRAINT events_originator_version_not_negative CHECK (originator_version >= 0)
);

-- One row per (follower application, upstream application): the last upstream notification
-- the follower has processed.
CREATE TABLE biomero.tracking (
    application_name          text COLLATE "C" NOT NULL,
    upstream_application_name text COLLATE "C" NOT NULL,
    notification_id           bigint NOT NULL,
    CONSTRAINT tracking_pkey PRIMARY KEY (application_name, upstream_application_name),
    CONSTRAINT tracking_notification_id_positive CHECK (notification_id > 0)
);

-- pg_dump keeps the rows of extension tables (and the value of sequences) only when they are
-- registered.
SELECT pg_catalog.pg_extension_config_dump('biomero.application_registry', '');
SELECT pg_catalog.pg_extension_config_dump('biomero.application_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biomero.events', '');
SELECT pg_catalog.pg_extension_config_dump('biomero.tracking', '');
