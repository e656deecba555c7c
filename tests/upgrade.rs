//! `ALTER EXTENSION biomero_tracking UPDATE` from the first release keeps the data, ends with
//! the same objects as a fresh install, and keeps the guarantees.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;

const FIRST_RELEASE: &str = "0.1.0";

/// Every object of schema biomero, described so that two databases can be compared.
fn catalog(client: &mut Client) -> Vec<String> {
    let queries = [
        "SELECT format('function %s returns %s definer=%s volatility=%s config=%s acl=%s body=%s', \
             p.oid::regprocedure, pg_get_function_result(p.oid), p.prosecdef, p.provolatile, \
             p.proconfig, p.proacl, md5(p.prosrc)) \
         FROM pg_proc p WHERE p.pronamespace = 'biomero'::regnamespace",
        "SELECT format('relation %s kind=%s acl=%s', c.oid::regclass, c.relkind, c.relacl) \
         FROM pg_class c WHERE c.relnamespace = 'biomero'::regnamespace",
        "SELECT format('column %s.%s %s notnull=%s', c.relname, a.attname, \
             format_type(a.atttypid, a.atttypmod), a.attnotnull) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.relnamespace = 'biomero'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped",
        "SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid)) \
         FROM pg_constraint WHERE connamespace = 'biomero'::regnamespace",
        "SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid)) \
         FROM pg_class c WHERE c.relnamespace = 'biomero'::regnamespace AND c.relkind = 'v'",
        "SELECT format('dumped %s', c.oid::regclass) FROM pg_extension e, \
             unnest(e.extconfig) AS config(oid) JOIN pg_class c ON c.oid = config.oid \
         WHERE e.extname = 'biomero_tracking'",
    ];
    let mut objects: Vec<String> = queries
        .iter()
        .flat_map(|query| client.query(*query, &[]).unwrap())
        .map(|row| row.get(0))
        .collect();
    objects.sort();
    objects
}

#[test]
fn update_from_the_first_release_keeps_data_objects_and_guarantees() {
    let mut admin = connect();
    // Put the first release's install script beside the current version's files.
    let sharedir: String = admin
        .query_one("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'", &[])
        .unwrap()
        .get(0);
    let script = format!("biomero_tracking--{FIRST_RELEASE}.sql");
    std::fs::copy(
        format!("{}/sql/archive/{script}", env!("CARGO_MANIFEST_DIR")),
        format!("{sharedir}/extension/{script}"),
    )
    .expect("copy the first release's script into the extension directory");

    let (old, fresh) = (unique_name("upgraded"), unique_name("fresh"));
    for database in [&old, &fresh] {
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
    }
    let mut upgraded = connect_to(&old);
    upgraded
        .batch_execute(&format!(
            "CREATE EXTENSION biomero_tracking VERSION '{FIRST_RELEASE}'"
        ))
        .unwrap();
    let aggregate = random_uuid();
    for version in 0..5i64 {
        upgraded
            .query_one(
                "SELECT biomero.record_event('WorkflowTracker', $1::text::uuid, $2, 't', '\\x01')",
                &[&aggregate, &version],
            )
            .unwrap();
    }
    upgraded
        .batch_execute("SELECT biomero.record_tracking('WorkflowProgress', 'WorkflowTracker', 3)")
        .unwrap();
    let rows = "SELECT application_name, notification_id, originator_id::text, \
                originator_version, topic, state FROM biomero.events ORDER BY 1, 2";
    let before: Vec<(String, i64, String, i64, String, Vec<u8>)> = upgraded
        .query(rows, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();

    // Before the update, a function whose implementation moved out of the library says what
    // to do rather than failing on a missing symbol.
    let stale = upgraded
        .query(
            "SELECT * FROM biomero.select_notifications('WorkflowTracker', NULL, 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        stale.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    let message = stale.as_db_error().unwrap().message().to_string();
    assert!(
        message.ends_with("run ALTER EXTENSION biomero_tracking UPDATE"),
        "{message}"
    );

    upgraded
        .batch_execute("ALTER EXTENSION biomero_tracking UPDATE")
        .unwrap();
    let page: Vec<i64> = upgraded
        .query(
            "SELECT originator_version FROM biomero.select_notifications('WorkflowTracker', NULL, 10)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(page, vec![0, 1, 2, 3, 4]);

    let version: String = upgraded
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'biomero_tracking'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let after: Vec<(String, i64, String, i64, String, Vec<u8>)> = upgraded
        .query(rows, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(after, before, "every event survives the update unchanged");
    let position: i64 = upgraded
        .query_one(
            "SELECT biomero.max_tracking_id('WorkflowProgress', 'WorkflowTracker')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(position, 3);

    // The updated extension has exactly the objects of a fresh install.
    let mut installed = connect_to(&fresh);
    installed
        .batch_execute("CREATE EXTENSION biomero_tracking")
        .unwrap();
    assert_eq!(catalog(&mut upgraded), catalog(&mut installed));

    // And the guarantees hold: the next id follows, a duplicate version is a 23505 conflict,
    // tracking never raises.
    let next: i64 = upgraded
        .query_one(
            "SELECT biomero.record_event('WorkflowTracker', $1::text::uuid, 5, 't', '')",
            &[&aggregate],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 6);
    let duplicate = upgraded
        .query_one(
            "SELECT biomero.record_event('WorkflowTracker', $1::text::uuid, 5, 't', '')",
            &[&aggregate],
        )
        .unwrap_err();
    assert_eq!(duplicate.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let advanced: bool = upgraded
        .query_one(
            "SELECT biomero.record_tracking('WorkflowProgress', 'WorkflowTracker', 3)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!advanced);
    drop((upgraded, installed));
    for database in [&old, &fresh] {
        admin
            .batch_execute(&format!("DROP DATABASE {database}"))
            .unwrap();
    }
}
