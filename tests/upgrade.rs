//! `ALTER EXTENSION biomero_tracking UPDATE` from every earlier release keeps the data, ends
//! with the same objects as a fresh install, and keeps the guarantees.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;

/// The earlier releases whose install scripts are kept in `sql/archive`.
const EARLIER_RELEASES: [&str; 4] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1"];
/// The earlier releases whose tables are the current ones (the library runs on them as is).
const RELEASES_WITH_REGISTRY: [&str; 2] = ["0.3.0", "0.3.1"];

/// Every object of schema biomero, described so that two databases can be compared.
fn catalog(client: &mut Client) -> Vec<String> {
    let queries = [
        "SELECT format('function %s returns %s definer=%s volatility=%s strict=%s parallel=%s \
             config=%s acl=%s body=%s comment=%s', \
             p.oid::regprocedure, pg_get_function_result(p.oid), p.prosecdef, p.provolatile, \
             p.proisstrict, p.proparallel, p.proconfig, p.proacl, md5(p.prosrc), \
             obj_description(p.oid, 'pg_proc')) \
         FROM pg_proc p WHERE p.pronamespace::regnamespace::text IN ('biomero', 'biomero_internal')",
        "SELECT format('relation %s kind=%s acl=%s', c.oid::regclass, c.relkind, c.relacl) \
         FROM pg_class c WHERE c.relnamespace = 'biomero'::regnamespace",
        "SELECT format('column %s.%s %s collation=%s notnull=%s default=%s', c.relname, a.attname, \
             format_type(a.atttypid, a.atttypmod), a.attcollation::regcollation, a.attnotnull, \
             pg_get_expr(d.adbin, d.adrelid)) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE c.relnamespace = 'biomero'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped",
        "SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid)) \
         FROM pg_constraint WHERE connamespace = 'biomero'::regnamespace",
        "SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid)) \
         FROM pg_class c WHERE c.relnamespace = 'biomero'::regnamespace AND c.relkind = 'v'",
        "SELECT format('dumped %s', c.oid::regclass) FROM pg_extension e, \
             unnest(e.extconfig) AS config(oid) JOIN pg_class c ON c.oid = config.oid \
         WHERE e.extname = 'biomero_tracking'",
        // Members of the extension, but for the unit tests' schema `tests` of the test build.
        "SELECT format('member %s', description) FROM ( \
             SELECT pg_describe_object(classid, objid, objsubid) AS description FROM pg_depend \
             WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e' \
               AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'biomero_tracking')) m \
         WHERE description NOT LIKE '% tests.%' AND description <> 'schema tests'",
    ];
    let mut objects: Vec<String> = queries
        .iter()
        .flat_map(|query| client.query(*query, &[]).unwrap())
        .map(|row| row.get(0))
        .collect();
    objects.sort();
    objects
}

fn update_keeps_data_objects_and_guarantees(release: &str) {
    let mut admin = connect();
    // Put the release's install script beside the current version's files.
    let sharedir: String = admin
        .query_one("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'", &[])
        .unwrap()
        .get(0);
    let script = format!("biomero_tracking--{release}.sql");
    std::fs::copy(
        format!("{}/sql/archive/{script}", env!("CARGO_MANIFEST_DIR")),
        format!("{sharedir}/extension/{script}"),
    )
    .expect("copy the release's install script into the extension directory");

    let (old, fresh) = (unique_name("upgraded"), unique_name("fresh"));
    for database in [&old, &fresh] {
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
    }
    let mut upgraded = connect_to(&old);
    upgraded
        .batch_execute(&format!(
            "CREATE EXTENSION biomero_tracking VERSION '{release}'"
        ))
        .unwrap();
    // What that release stored. Releases with the application registry (0.3.0 on) share the
    // installed library's tables, so their data is written with the functions, which
    // register the names; older ones as rows, as their library is not the installed one.
    let has_registry = RELEASES_WITH_REGISTRY.contains(&release);
    let aggregate = random_uuid();
    if has_registry {
        upgraded
            .batch_execute(
                "SELECT biomero.record_event('JobAccounting', gen_random_uuid(), 0, 'u', ''); \
                 SELECT biomero.record_tracking('WorkflowProgress', 'WorkflowTracker', 3)",
            )
            .unwrap();
        append_versions(
            &mut upgraded,
            "WorkflowTracker",
            &aggregate,
            0..5,
            "t",
            |_| vec![1],
        )
        .unwrap();
    } else {
        upgraded
            .execute(
                "INSERT INTO biomero.events SELECT 'WorkflowTracker', v + 1, $1::text::uuid, v, \
                 't', '\\x01' FROM generate_series(0, 4) AS v",
                &[&aggregate],
            )
            .unwrap();
        upgraded
            .batch_execute(
                "INSERT INTO biomero.events VALUES ('JobAccounting', 1, gen_random_uuid(), 0, \
                 'u', ''); \
                 INSERT INTO biomero.tracking VALUES ('WorkflowProgress', 'WorkflowTracker', 3)",
            )
            .unwrap();
    }
    let before = stored_events(&mut upgraded);

    if !has_registry {
        // Before the update, a function of the installed library that needs the new tables
        // says what to do rather than failing on a missing table or symbol.
        let stale = upgraded
            .query(
                "SELECT biomero.record_event('WorkflowTracker', gen_random_uuid(), 9, 't', '')",
                &[],
            )
            .unwrap_err();
        assert_eq!(
            stale.code(),
            Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{stale}"
        );
        let message = stale.as_db_error().unwrap().message().to_string();
        assert_eq!(
            message,
            "biomero.record_event needs the extension's update: run ALTER EXTENSION \
             biomero_tracking UPDATE"
        );
    }

    upgraded
        .batch_execute("ALTER EXTENSION biomero_tracking UPDATE")
        .unwrap();
    let version: String = upgraded
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'biomero_tracking'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        stored_events(&mut upgraded),
        before,
        "every event survives the update unchanged"
    );
    let registered: Vec<String> = upgraded
        .query(
            "SELECT application_name FROM biomero.application_registry ORDER BY application_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        registered,
        ["JobAccounting", "WorkflowProgress", "WorkflowTracker"],
        "every stored name is registered"
    );
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
    let (updated, fresh_objects) = (catalog(&mut upgraded), catalog(&mut installed));
    let only_updated: Vec<_> = updated
        .iter()
        .filter(|o| !fresh_objects.contains(o))
        .collect();
    let only_fresh: Vec<_> = fresh_objects
        .iter()
        .filter(|o| !updated.contains(o))
        .collect();
    assert!(
        only_updated.is_empty() && only_fresh.is_empty(),
        "from {release}: only after the update {only_updated:#?}\nonly in a fresh install {only_fresh:#?}"
    );

    // And the guarantees hold: the next id follows, a duplicate version is a 23505 conflict,
    // tracking never raises, new names get new ids.
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
    let id: i64 = upgraded
        .query_one(
            "SELECT biomero.record_event('JobProgress', gen_random_uuid(), 0, 't', '')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, 1);
    let new_id: i32 = upgraded
        .query_one(
            "SELECT application_id FROM biomero.application_registry \
             WHERE application_name = 'JobProgress'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(new_id, 4);
    drop((upgraded, installed));
    for database in [&old, &fresh] {
        admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .unwrap();
    }
}

#[test]
fn update_from_every_earlier_release_keeps_data_objects_and_guarantees() {
    for release in EARLIER_RELEASES {
        update_keeps_data_objects_and_guarantees(release);
    }
}
