//! Privileges are granted, not assumed; functions cannot be hijacked through search_path.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;

const APPEND: &str = "SELECT biomero.record_event($1, gen_random_uuid(), 0, 't', '')";

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
    admin
        .batch_execute(&format!(
            "CREATE ROLE {writer}; CREATE ROLE {reader}; CREATE ROLE {nobody}; \
             GRANT USAGE ON SCHEMA biomero TO {writer}, {reader}, {nobody}; \
             GRANT EXECUTE ON FUNCTION biomero.record_event, biomero.record_events, \
                 biomero.record_tracking, biomero.claim TO {writer}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA biomero TO {reader}; \
             GRANT EXECUTE ON FUNCTION biomero.select_notifications, biomero.select_events, \
                 biomero.max_notification_id, biomero.max_tracking_id, biomero.summary \
                 TO {reader};"
        ))
        .unwrap();
    admin.query_one(APPEND, &[&application]).unwrap();

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
        .map(|_| client.query_one(APPEND, &[&application]).unwrap().get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let head: i64 = client
        .query_one("SELECT biomero.max_notification_id($1)", &[&application])
        .unwrap()
        .get(0);
    assert_eq!(head, 3);
}
