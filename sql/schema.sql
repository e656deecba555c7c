-- Storage of biomero_tracking. Ids are assigned only by biomero.record_event(s); clients get
-- no direct write privilege on these tables.

-- One row per stored event, as the eventsourcing library stores it, per application.
CREATE TABLE biomero.events (
    application_name   text   NOT NULL,
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
    application_name          text   NOT NULL,
    upstream_application_name text   NOT NULL,
    notification_id           bigint NOT NULL,
    CONSTRAINT tracking_pkey PRIMARY KEY (application_name, upstream_application_name),
    CONSTRAINT tracking_notification_id_positive CHECK (notification_id > 0)
);

-- pg_dump keeps the rows of extension tables only when they are registered.
SELECT pg_catalog.pg_extension_config_dump('biomero.events', '');
SELECT pg_catalog.pg_extension_config_dump('biomero.tracking', '');

-- Operator views. Counting events reads every row of an application: this is for looking,
-- not for polling.
CREATE VIEW biomero.applications AS
SELECT application_name,
       max(notification_id) AS head_notification_id,
       count(*)             AS event_count
FROM biomero.events
GROUP BY application_name;

CREATE VIEW biomero.followers AS
SELECT t.application_name,
       t.upstream_application_name,
       t.notification_id                              AS position,
       head.notification_id                           AS upstream_head,
       greatest(head.notification_id - t.notification_id, 0) AS lag
FROM biomero.tracking AS t
LEFT JOIN LATERAL (
    SELECT max(e.notification_id) AS notification_id
    FROM biomero.events AS e
    WHERE e.application_name = t.upstream_application_name
) AS head ON true;
