//! Privileges are granted, not assumed; functions cannot be hijacked through search_path.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;

fn code(client: &mut Client, query: &str, application: &str) -> Option<SqlState> {
    match client.query(query, &[&application]) {
        Ok(_) => None,
        Err(error) => Some(error.code().cloned().expect("a database error")),
    }
}

#[test]
fn roles_get_only_what_they_are_granted() {
    let application = unique_name("Privileges");
    let (writer, reader, nobody) = (
        unique_name("writer"),
        unique_name("reader"),
        unique_name("nobody"),
    );
    let mut admin = connect();
    grant_in_turn(
        &mut admin,
        &format!(
            "CREATE ROLE {writer}; CREATE ROLE {reader}; CREATE ROLE {nobody}; \
             GRANT USAGE ON SCHEMA biomero TO {writer}, {reader}, {nobody}; \
             GRANT EXECUTE ON FUNCTION biomero.record_event, biomero.record_events, \
                 biomero.record_tracking, biomero.claim TO {writer}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA biomero TO {reader}; \
             GRANT EXECUTE ON FUNCTION biomero.select_notifications, biomero.select_events, \
                 biomero.max_notification_id, biomero.max_tracking_id, biomero.summary \
                 TO {reader};"
        ),
    );
    append_one(&mut admin, &application);

    let denied = Some(SqlState::INSUFFICIENT_PRIVILEGE);
    let read = "SELECT * FROM biomero.select_notifications($1, NULL, 10)";
    let insert = "INSERT INTO biomero.events VALUES ($1, 99, gen_random_uuid(), 0, 't', '')";
    let track = "SELECT biomero.record_tracking($1, 'U', 1)";
    let claim = "SELECT biomero.claim($1, 'U')";
    let table = "SELECT count(*) FROM biomero.events WHERE application_name = $1";
    let tracking_table =
        "UPDATE biomero.tracking SET notification_id = 1 WHERE application_name = $1";

    let mut session = connect();
    session
        .batch_execute(&format!("SET ROLE {writer}"))
        .unwrap();
    assert_eq!(
        code(&mut session, APPEND, &application),
        None,
        "writers append"
    );
    assert_eq!(
        code(&mut session, track, &application),
        None,
        "writers track"
    );
    assert_eq!(
        code(&mut session, claim, &application),
        None,
        "writers claim"
    );
    for query in [read, insert, table, tracking_table] {
        assert_eq!(
            code(&mut session, query, &application),
            denied,
            "writer: {query}"
        );
    }

    session
        .batch_execute(&format!("RESET ROLE; SET ROLE {reader}"))
        .unwrap();
    assert_eq!(code(&mut session, read, &application), None, "readers read");
    assert_eq!(
        code(&mut session, table, &application),
        None,
        "readers select"
    );
    assert_eq!(
        code(
            &mut session,
            "SELECT * FROM biomero.followers WHERE application_name = $1",
            &application
        ),
        None
    );
    for query in [APPEND, track, claim, insert, tracking_table] {
        assert_eq!(
            code(&mut session, query, &application),
            denied,
            "reader: {query}"
        );
    }

    session
        .batch_execute(&format!("RESET ROLE; SET ROLE {nobody}"))
        .unwrap();
    for query in [APPEND, track, claim, read, insert, table, tracking_table] {
        assert_eq!(
            code(&mut session, query, &application),
            denied,
            "nobody: {query}"
        );
    }
    session.batch_execute("RESET ROLE").unwrap();
    // What the writer did is stored; nothing else reached the tables.
    assert_eq!(stored_ids(&mut admin, &application), vec![1, 2]);
}

#[test]
fn objects_in_the_callers_search_path_cannot_hijack_the_functions() {
    let application = unique_name("Hijack");
    let schema = unique_name("hijack");
    let mut client = connect();
    // An aggregate max(bigint) that always answers 1000, and a coalesce-free path to it.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; \
             CREATE FUNCTION {schema}.always_1000(bigint, bigint) RETURNS bigint \
                 LANGUAGE sql AS 'SELECT 1000::bigint'; \
             CREATE AGGREGATE {schema}.max(bigint) (sfunc = {schema}.always_1000, stype = bigint); \
             CREATE FUNCTION {schema}.pg_notify(text, text) RETURNS void \
                 LANGUAGE sql AS $$ SELECT 1 / 0 $$;"
        ))
        .unwrap();
    client
        .batch_execute(&format!("SET search_path = {schema}, pg_catalog, public"))
        .unwrap();
    // The hijacking objects do work for unpinned SQL in this session...
    let hijacked: i64 = client
        .query_one("SELECT max(x) FROM (VALUES (1::bigint)) v(x)", &[])
        .unwrap()
        .get(0);
    assert_eq!(hijacked, 1000);
    // ... but not inside the extension's functions.
    let ids: Vec<i64> = (0..3)
        .map(|_| append_one(&mut client, &application))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let head: i64 = client
        .query_one("SELECT biomero.max_notification_id($1)", &[&application])
        .unwrap()
        .get(0);
    assert_eq!(head, 3);
}

const WRITER_FUNCTIONS: &str =
    "biomero.record_event, biomero.record_events, biomero.record_tracking, biomero.claim";

#[test]
fn restricted_applications_admit_only_members_of_their_role() {
    let (restricted, open) = (unique_name("Tracker"), unique_name("Open"));
    let (owners, member, outsider) = (
        unique_name("owners"),
        unique_name("member"),
        unique_name("outsider"),
    );
    let mut admin = connect();
    grant_in_turn(
        &mut admin,
        &format!(
            "CREATE ROLE {owners}; CREATE ROLE {member} IN ROLE {owners}; CREATE ROLE {outsider}; \
             GRANT USAGE ON SCHEMA biomero TO {member}, {outsider}; \
             GRANT EXECUTE ON FUNCTION {WRITER_FUNCTIONS} TO {member}, {outsider}; \
             GRANT CREATE ON SCHEMA public TO {outsider};"
        ),
    );
    admin
        .execute(
            "SELECT biomero.restrict_application($1, $2::text::regrole)",
            &[&restricted, &owners],
        )
        .unwrap();

    let calls = [
        (
            "SELECT biomero.record_event($1, gen_random_uuid(), 0, 't', '')",
            "append to",
        ),
        (
            "SELECT biomero.record_events($1, ARRAY[gen_random_uuid()], ARRAY[0], ARRAY['t'], \
             ARRAY[''::bytea])",
            "append to",
        ),
        (
            "SELECT biomero.record_tracking($1, 'Upstream', 9223372036854775807)",
            "record positions of",
        ),
        ("SELECT biomero.claim($1, 'Upstream')", "claim as"),
    ];
    let mut session = connect();
    session
        .batch_execute(&format!("SET ROLE {outsider}"))
        .unwrap();
    for (call, action) in calls {
        let error = session.query(call, &[&restricted]).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{call}"
        );
        let db = error.as_db_error().unwrap();
        assert_eq!(
            db.message(),
            format!("permission denied to {action} application \"{restricted}\"")
        );
        assert!(db.detail().unwrap().contains(&owners), "{:?}", db.detail());
        // An application never restricted keeps admitting every writer.
        session.query(call, &[&open]).unwrap();
    }
    // A wrapper of the outsider's own, SECURITY DEFINER or not, is still the outsider calling.
    session
        .batch_execute(&format!(
            "CREATE FUNCTION public.{outsider}_append(text) RETURNS bigint LANGUAGE sql \
             SECURITY DEFINER AS $$ SELECT biomero.record_event($1, gen_random_uuid(), 0, 't', '') $$"
        ))
        .unwrap();
    let error = session
        .query(
            &format!("SELECT public.{outsider}_append($1)"),
            &[&restricted],
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // The administrator's functions are not granted to writers.
    for call in [
        "SELECT biomero.restrict_application($1, NULL)",
        "SELECT biomero.set_append_mode($1, 'serialized')",
        "SELECT biomero.reset_position($1, 'Upstream', 0)",
        "SELECT biomero_internal.lock_for_import($1)",
    ] {
        let error = session.query(call, &[&restricted]).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{call}"
        );
    }

    session
        .batch_execute(&format!("RESET ROLE; SET ROLE {member}"))
        .unwrap();
    for (call, _) in calls {
        session.query(call, &[&restricted]).unwrap();
    }
    session.batch_execute("RESET ROLE").unwrap();
    assert_eq!(stored_ids(&mut admin, &restricted), vec![1, 2]);

    // The member moved the position to the end of the ids: an administrator moves it back,
    // after the follower's current processor (holding the claim) is done.
    let position = "SELECT biomero.max_tracking_id($1, 'Upstream')";
    let max: i64 = admin.query_one(position, &[&restricted]).unwrap().get(0);
    assert_eq!(max, i64::MAX);
    let replaced: Option<i64> = admin
        .query_one(
            "SELECT biomero.reset_position($1, 'Upstream', 1)",
            &[&restricted],
        )
        .unwrap()
        .get(0);
    assert_eq!(replaced, Some(i64::MAX));
    let now: i64 = admin.query_one(position, &[&restricted]).unwrap().get(0);
    assert_eq!(now, 1);
    let forgotten: Option<i64> = admin
        .query_one(
            "SELECT biomero.reset_position($1, 'Upstream', 0)",
            &[&restricted],
        )
        .unwrap()
        .get(0);
    assert_eq!(forgotten, Some(1));
    assert_eq!(
        admin
            .query_one(position, &[&restricted])
            .unwrap()
            .get::<_, Option<i64>>(0),
        None
    );
    // Lifting the restriction admits the outsider again.
    admin
        .execute(
            "SELECT biomero.restrict_application($1, NULL)",
            &[&restricted],
        )
        .unwrap();
    session
        .batch_execute(&format!("SET ROLE {outsider}"))
        .unwrap();
    session.query(calls[0].0, &[&restricted]).unwrap();
    session.batch_execute("RESET ROLE").unwrap();
}

#[test]
fn an_import_never_runs_the_source_owners_code() {
    let role = unique_name("hostile");
    let schema = unique_name("hostile");
    let mut admin = connect();
    // A role's events tables, each with a way for planning a read of it to call the role's
    // code: a view; row-level security; a domain type; an index on an expression, a partial
    // index; statistics on an expression; a partitioned table (its key is an expression); a
    // CHECK constraint; a generated column. (Operator classes need a superuser to create.)
    // The function records that it ran with the caller's rights by copying a secret (run as
    // the role itself it cannot read it, and swallows the error).
    let columns = "originator_id uuid, originator_version bigint, topic text, state bytea";
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role}; CREATE SCHEMA {schema} AUTHORIZATION {role}; \
             CREATE TABLE {schema}_secret (value text); INSERT INTO {schema}_secret VALUES ('s3cret'); \
             SET ROLE {role}; \
             CREATE TABLE {schema}.loot (value text); \
             CREATE FUNCTION {schema}.steal() RETURNS bigint LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO {schema}.loot SELECT value FROM public.{schema}_secret; RETURN 1; \
               EXCEPTION WHEN OTHERS THEN RETURN 1; END $$; \
             CREATE FUNCTION {schema}.k(bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$ \
               BEGIN RETURN $1 + {schema}.steal(); END $$; \
             CREATE VIEW {schema}.events AS SELECT {schema}.steal() AS notification_id, \
               gen_random_uuid() AS originator_id, 0::bigint AS originator_version, \
               't'::text AS topic, ''::bytea AS state; \
             CREATE TABLE {schema}.policed (notification_id bigint, {columns}); \
             ALTER TABLE {schema}.policed ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY steal ON {schema}.policed USING ({schema}.steal() = 1); \
             CREATE DOMAIN {schema}.id AS bigint CHECK ({schema}.steal() = 1); \
             CREATE TABLE {schema}.typed (notification_id {schema}.id, {columns}); \
             CREATE TABLE {schema}.indexed (notification_id bigint, {columns}); \
             CREATE INDEX ON {schema}.indexed (({schema}.k(notification_id))); \
             CREATE TABLE {schema}.partial (notification_id bigint, {columns}); \
             CREATE INDEX ON {schema}.partial (notification_id) WHERE notification_id > {schema}.k(1); \
             CREATE TABLE {schema}.counted (notification_id bigint, {columns}); \
             CREATE STATISTICS {schema}.counted_stats ON ({schema}.k(notification_id)), \
               originator_version FROM {schema}.counted; \
             CREATE TABLE {schema}.partitioned (notification_id bigint, {columns}) \
               PARTITION BY RANGE (({schema}.k(notification_id))); \
             CREATE TABLE {schema}.checked (notification_id bigint \
               CHECK (notification_id > {schema}.k(-100)), {columns}); \
             CREATE TABLE {schema}.generated (notification_id bigint, {columns}, \
               extra bigint GENERATED ALWAYS AS ({schema}.k(notification_id)) STORED); \
             RESET ROLE;"
        ))
        .unwrap();
    for table in [
        "policed",
        "indexed",
        "partial",
        "counted",
        "checked",
        "generated",
    ] {
        admin
            .execute(
                &format!("INSERT INTO {schema}.{table} (notification_id, originator_id, \
                          originator_version, topic, state) VALUES (1, gen_random_uuid(), 0, 't', '')"),
                &[],
            )
            .unwrap();
    }
    admin
        .batch_execute(&format!(
            "TRUNCATE {schema}.loot; SET constraint_exclusion = on"
        ))
        .unwrap();
    for (table, expected) in [
        ("events", SqlState::WRONG_OBJECT_TYPE),
        ("policed", SqlState::WRONG_OBJECT_TYPE),
        ("typed", SqlState::UNDEFINED_COLUMN),
        ("indexed", SqlState::WRONG_OBJECT_TYPE),
        ("partial", SqlState::WRONG_OBJECT_TYPE),
        ("counted", SqlState::WRONG_OBJECT_TYPE),
        ("partitioned", SqlState::WRONG_OBJECT_TYPE),
        ("checked", SqlState::WRONG_OBJECT_TYPE),
        ("generated", SqlState::WRONG_OBJECT_TYPE),
    ] {
        let error = admin
            .query(
                "SELECT * FROM biomero.import_eventsourcing($1, $2::text::regclass)",
                &[&unique_name("Imported"), &format!("{schema}.{table}")],
            )
            .unwrap_err();
        assert_eq!(error.code(), Some(&expected), "{table}: {error}");
    }
    admin.batch_execute("RESET constraint_exclusion").unwrap();
    let loot = count(&mut admin, &format!("SELECT count(*) FROM {schema}.loot"));
    assert_eq!(loot, 0, "the role's function ran inside the import");
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP TABLE {schema}_secret; DROP ROLE {role}"
        ))
        .unwrap();
}

#[test]
fn an_import_needs_select_and_a_lock_privilege_on_the_source() {
    let importer = unique_name("importer");
    let table = unique_name("source_events");
    let mut admin = connect();
    grant_in_turn(
        &mut admin,
        &format!(
            "CREATE TABLE {table} (notification_id bigint PRIMARY KEY, originator_id uuid, \
               originator_version bigint, topic text, state bytea); \
             INSERT INTO {table} VALUES (1, gen_random_uuid(), 0, 't', ''); \
             CREATE ROLE {importer}; \
             GRANT USAGE ON SCHEMA biomero TO {importer}; \
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA biomero TO {importer}; \
             GRANT EXECUTE ON FUNCTION biomero.import_eventsourcing, \
               biomero_internal.lock_for_import, biomero_internal.check_import_source, \
               biomero_internal.unexpected_columns TO {importer}; \
             GRANT SELECT ON {table} TO {importer};"
        ),
    );
    let mut session = connect();
    session
        .batch_execute(&format!("SET ROLE {importer}"))
        .unwrap();
    let import = "SELECT events_imported FROM biomero.import_eventsourcing($1, $2::text::regclass)";
    let application = unique_name("Imported");
    let error = session
        .query_one(import, &[&application, &table])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let db = error.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        format!("permission denied to import public.{table}")
    );
    assert!(db
        .detail()
        .unwrap()
        .contains("SELECT and one of UPDATE, DELETE or TRUNCATE"));
    admin
        .batch_execute(&format!("GRANT UPDATE ON {table} TO {importer}"))
        .unwrap();
    let imported: i64 = session
        .query_one(import, &[&application, &table])
        .unwrap()
        .get(0);
    assert_eq!(imported, 1);
    session.batch_execute("RESET ROLE").unwrap();
}

#[test]
fn the_horizon_publisher_runs_no_code_of_a_database_owner() {
    let owner = unique_name("dbowner");
    let database = unique_name("owned");
    let mut admin = connect();
    admin
        .batch_execute(&format!("CREATE ROLE {owner} LOGIN"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}"))
        .unwrap();
    let mut owned = connect_to(&database);
    owned
        .batch_execute(&format!(
            "CREATE EXTENSION biomero_tracking; CREATE TABLE public.loot (value text); \
             GRANT INSERT ON public.loot TO {owner}"
        ))
        .unwrap();
    // The database owner's own `=` for integers, first in the database's search_path: it
    // records the user it runs as. The publisher (a superuser) compares integers.
    owned
        .batch_execute(&format!(
            "SET ROLE {owner}; CREATE SCHEMA evil; \
             CREATE FUNCTION evil.eq(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO public.{database}_loot VALUES (current_user); \
               RETURN $1 OPERATOR(pg_catalog.=) $2; END $$; \
             CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.eq); \
             ALTER DATABASE {database} SET search_path = evil, pg_catalog; RESET ROLE;"
        ))
        .unwrap();
    owned
        .execute("SELECT biomero.set_append_mode('Owned', 'concurrent')", &[])
        .unwrap();
    let id: i64 = owned
        .query_one(
            "SELECT biomero.record_event('Owned', gen_random_uuid(), 0, 't', '')",
            &[],
        )
        .unwrap()
        .get(0);
    // Wait until the publisher has published that id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let published: Option<i64> = owned
            .query_one(
                "SELECT published_horizon FROM biomero.application_registry \
                 WHERE application_name = 'Owned'",
                &[],
            )
            .unwrap()
            .get(0);
        if published == Some(id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was published"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let loot: Vec<String> = owned
        .query("SELECT value FROM public.loot", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(loot.is_empty(), "the owner's operator ran as {loot:?}");
    drop(owned);
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .unwrap();
    admin.batch_execute(&format!("DROP ROLE {owner}")).unwrap();
}

#[test]
fn a_restriction_applies_to_sessions_that_wrote_before_it() {
    let application = unique_name("Restricted");
    let (owners, outsider) = (unique_name("owners"), unique_name("outsider"));
    let mut admin = connect();
    grant_in_turn(
        &mut admin,
        &format!(
            "CREATE ROLE {owners}; CREATE ROLE {outsider}; \
             GRANT USAGE ON SCHEMA biomero TO {outsider}; \
             GRANT EXECUTE ON FUNCTION {WRITER_FUNCTIONS} TO {outsider}"
        ),
    );
    let mut session = connect();
    session
        .batch_execute(&format!("SET ROLE {outsider}"))
        .unwrap();
    // The outsider writes first (its backend now knows the application) ...
    assert_eq!(append_one(&mut session, &application), 1);
    admin
        .execute(
            "SELECT biomero.restrict_application($1, $2::text::regrole)",
            &[&application, &owners],
        )
        .unwrap();
    // ... and its next transaction is refused all the same.
    let error = session.query(APPEND, &[&application]).unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    session.batch_execute("RESET ROLE").unwrap();
    admin
        .execute(
            "SELECT biomero.restrict_application($1, NULL)",
            &[&application],
        )
        .unwrap();
}
