//! Guarantees that broke when someone tried: a stale claim under REPEATABLE READ, an import
//! racing appends, reads that assigned transaction ids, non-UTF8 databases and id overflow.
//! (Lock keys are in guarantees.rs, authorization in security.rs, standbys in servers.rs.)

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::*;
use common::*;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn a_claim_never_returns_a_position_older_than_the_latest_committed() {
    for isolation in [IsolationLevel::RepeatableRead, IsolationLevel::Serializable] {
        let (follower, upstream) = (unique_name("F"), unique_name("U"));
        let mut b = connect();
        let mut a = connect();
        append_one(&mut a, &upstream);
        // B's snapshot predates A's first position of the pair: the tracking row does not
        // exist in it at all.
        let mut late = snapshot_transaction(&mut b, isolation);
        let mut first = a.transaction().unwrap();
        assert_eq!(claim(&mut first, &follower, &upstream), 0);
        first
            .execute(
                "SELECT biomero.record_tracking($1, $2, 1)",
                &[&follower, &upstream],
            )
            .unwrap();
        first.commit().unwrap();
        let error = late
            .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::T_R_SERIALIZATION_FAILURE),
            "{isolation:?}: {error}"
        );
        assert!(db_message(&error).ends_with("retry the transaction"));
        drop(late);
        // Retried, it starts from the latest position; READ COMMITTED always does.
        let mut retried = b
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .unwrap();
        assert_eq!(claim(&mut retried, &follower, &upstream), 1);
        retried.commit().unwrap();
    }
}

fn source_table(client: &mut Client, ids: &[i64]) -> String {
    let table = unique_name("source_events");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (notification_id bigint PRIMARY KEY, originator_id uuid, \
             originator_version bigint, topic text, state bytea)"
        ))
        .unwrap();
    for id in ids {
        client
            .execute(
                &format!("INSERT INTO {table} VALUES ($1, gen_random_uuid(), 0, 'imported', '')"),
                &[id],
            )
            .unwrap();
    }
    table
}

#[test]
fn an_import_and_appends_to_one_application_take_turns() {
    for (source, expected_next) in [(vec![1i64, 2, 3], 4i64), (vec![2, 3, 4], 5)] {
        let application = unique_name("Adopted");
        let mut admin = connect();
        let table = source_table(&mut admin, &source);
        let mut importer = connect();
        let mut import = importer.transaction().unwrap();
        import
            .query_one(
                "SELECT * FROM biomero.import_eventsourcing($1, $2::text::regclass)",
                &[&application, &table],
            )
            .unwrap();
        // An append during the import waits for it, then continues above the imported ids.
        let writer = {
            let application = application.clone();
            thread::spawn(move || {
                connect()
                    .query_one(APPEND, &[&application])
                    .map(|row| row.get::<_, i64>(0))
                    .map_err(|error| error.to_string())
            })
        };
        thread::sleep(Duration::from_millis(300));
        assert!(
            !writer.is_finished(),
            "an append did not wait for the import"
        );
        import.commit().unwrap();
        assert_eq!(
            writer.join().unwrap(),
            Ok(expected_next),
            "source {source:?}"
        );
        let mut expected = source.clone();
        expected.push(expected_next);
        assert_eq!(stored_ids(&mut admin, &application), expected);
    }

    // An import whose events would land at or below an id the application committed, in one
    // of its holes, is refused: readers may have passed it. A different event at an id it
    // has is a conflict.
    let application = unique_name("Adopted");
    let mut admin = connect();
    let holes = source_table(&mut admin, &[2, 4]);
    admin
        .query_one(
            "SELECT * FROM biomero.import_eventsourcing($1, $2::text::regclass)",
            &[&application, &holes],
        )
        .unwrap();
    for (ids, expected) in [
        (vec![1i64, 3], SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        (vec![4, 5], SqlState::INTEGRITY_CONSTRAINT_VIOLATION),
    ] {
        let table = source_table(&mut admin, &ids);
        let error = admin
            .query_one(
                "SELECT * FROM biomero.import_eventsourcing($1, $2::text::regclass)",
                &[&application, &table],
            )
            .unwrap_err();
        assert_eq!(error.code(), Some(&expected), "{ids:?}: {error}");
    }
    assert_eq!(stored_ids(&mut admin, &application), vec![2, 4]);
    let table = holes;
    // And into an application in concurrent mode, which has no append lock to take.
    let concurrent = unique_name("Adopted");
    set_append_mode(&mut admin, &concurrent, "concurrent");
    let error = admin
        .query_one(
            "SELECT * FROM biomero.import_eventsourcing($1, $2::text::regclass)",
            &[&concurrent, &table],
        )
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{error}"
    );
}

/// Every read function, of application `$1` and follower `$2`.
const READS: [&str; 6] = [
    "SELECT biomero.max_notification_id($1), $2::text",
    "SELECT biomero.max_tracking_id($2, $1)",
    "SELECT count(*), $2::text FROM biomero.select_notifications($1, NULL, 10)",
    "SELECT count(*), $2::text FROM biomero.select_events($1, gen_random_uuid())",
    "SELECT biomero_internal.readable_bound($1), $2::text",
    "SELECT count(*), $2::text FROM biomero.applications WHERE application_name = $1",
];

#[test]
fn reads_assign_no_transaction_id_and_use_the_callers_snapshot() {
    let (application, follower) = (unique_name("Read"), unique_name("F"));
    let mut client = connect();
    append_one(&mut client, &application);
    client
        .execute(
            "SELECT biomero.record_tracking($1, $2, 1)",
            &[&follower, &application],
        )
        .unwrap();
    for read in READS {
        let mut tx = client.transaction().unwrap();
        for _ in 0..50 {
            tx.query(read, &[&application, &follower]).unwrap();
        }
        let xid: Option<String> = tx
            .query_one("SELECT pg_current_xact_id_if_assigned()::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(xid, None, "{read} assigned a transaction id");
        tx.commit().unwrap();
    }

    // In parallel plans, run inside a parallel worker.
    let force: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .unwrap()
        .get(0);
    let setting = if force >= 160000 {
        "debug_parallel_query"
    } else {
        "force_parallel_mode"
    };
    client
        .batch_execute(&format!(
            "SET {setting} = on; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0"
        ))
        .unwrap();
    for read in READS {
        client
            .query(read, &[&application, &follower])
            .unwrap_or_else(|error| panic!("{read} in a parallel plan: {error}"));
    }
    client.batch_execute(&format!("RESET {setting}")).unwrap();

    // Within one statement, every call sees the statement's snapshot: an append committed
    // while the statement runs is not seen by its later calls.
    let pid = backend_pid(&mut client);
    let appender = {
        let application = application.clone();
        thread::spawn(move || {
            let mut other = connect();
            // The statement below has taken its snapshot once it sleeps.
            let deadline = Instant::now() + Duration::from_secs(30);
            while other
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
                    &[&pid],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 0
            {
                assert!(Instant::now() < deadline, "the statement never slept");
                thread::sleep(Duration::from_millis(10));
            }
            append_one(&mut other, &application);
            Instant::now()
        })
    };
    let row = client
        .query_one(
            "SELECT biomero.max_notification_id($1), pg_sleep(2), biomero.max_notification_id($1), \
             (SELECT count(*) FROM biomero.select_notifications($1, NULL, 10))",
            &[&application],
        )
        .unwrap();
    let returned = Instant::now();
    let appended = appender.join().unwrap();
    assert!(
        appended < returned,
        "the append did not commit while the statement ran"
    );
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3)
        ),
        (1, 1, 1)
    );
}

#[test]
fn reads_work_on_a_hot_standby() {
    let primary = Cluster::start("readsprimary", &[], &[]);
    let mut client = primary.database_with_extension("biomero");
    let (application, follower) = ("WorkflowTracker", "WorkflowProgress");
    append_one(&mut client, application);
    client
        .execute(
            "SELECT biomero.record_tracking($1, $2, 1)",
            &[&follower, &application],
        )
        .unwrap();
    let replica = Cluster::replica_of(&primary, &[]);
    let mut standby = replica.connect_when_ready("biomero");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while standby
        .query_one("SELECT biomero.max_notification_id($1)", &[&application])
        .unwrap()
        .get::<_, Option<i64>>(0)
        != Some(1)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not catch up"
        );
        thread::sleep(Duration::from_millis(50));
    }
    for read in READS {
        standby
            .query(read, &[&application, &follower])
            .unwrap_or_else(|error| panic!("{read} on a standby: {error}"));
    }
    let refused = standby.query_one(APPEND, &[&application]).unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{refused}"
    );
}

#[test]
fn only_utf8_databases_take_the_extension() {
    let mut admin = connect();
    for encoding in ["LATIN1", "SQL_ASCII"] {
        let database = unique_name(&encoding.to_lowercase());
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' \
                 TEMPLATE template0"
            ))
            .unwrap();
        let error = connect_to(&database)
            .batch_execute("CREATE EXTENSION biomero_tracking")
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::FEATURE_NOT_SUPPORTED),
            "{error}"
        );
        assert_eq!(
            db_message(&error),
            format!(
                "biomero_tracking needs a UTF8 database; database \"{database}\" uses {encoding}"
            )
        );
        admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .unwrap();
    }
    // One length rule, in characters, for every function.
    let mut client = connect();
    let suffix = unique_name("");
    let longest = format!("{}{suffix}", "é".repeat(255 - suffix.len()));
    assert_eq!(longest.chars().count(), 255);
    assert_eq!(append_one(&mut client, &longest), 1);
    let read: i64 = client
        .query_one(
            "SELECT count(*) FROM biomero.select_notifications($1, NULL, 10)",
            &[&longest],
        )
        .unwrap()
        .get(0);
    assert_eq!(read, 1);
    let too_long = "é".repeat(256);
    for call in [
        APPEND,
        "SELECT count(*) FROM biomero.select_notifications($1, NULL, 10)",
    ] {
        let error = client.query_one(call, &[&too_long]).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INVALID_PARAMETER_VALUE),
            "{call}"
        );
        assert_eq!(
            db_message(&error),
            "application_name is 256 characters long; the limit is 255"
        );
    }
}

#[test]
fn the_last_notification_id_is_a_clear_error() {
    let application = unique_name("Full");
    let mut admin = connect();
    append_one(&mut admin, &application);
    admin
        .execute(
            "INSERT INTO biomero.events VALUES ($1, 9223372036854775806, gen_random_uuid(), 0, 't', '')",
            &[&application],
        )
        .unwrap();
    let last = append_one(&mut admin, &application);
    assert_eq!(last, i64::MAX);
    for call in [
        APPEND,
        "SELECT biomero.record_events($1, ARRAY[gen_random_uuid()], ARRAY[0], ARRAY['t'], \
         ARRAY[''::bytea])",
    ] {
        let error = admin.query_one(call, &[&application]).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
            "{error}"
        );
        assert_eq!(
            db_message(&error),
            format!(
                "application \"{application}\" has no notification ids left: the next would \
                 exceed 9223372036854775807"
            )
        );
    }
    // A batch that would cross the end writes nothing either.
    let crossing = unique_name("Crossing");
    admin
        .execute(
            "INSERT INTO biomero.events VALUES ($1, 9223372036854775806, gen_random_uuid(), 0, 't', '')",
            &[&crossing],
        )
        .unwrap();
    let error = admin
        .query_one(
            "SELECT biomero.record_events($1, ARRAY[gen_random_uuid(), gen_random_uuid()], \
             ARRAY[0, 0], ARRAY['t', 't'], ARRAY[''::bytea, ''])",
            &[&crossing],
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE));
    assert_eq!(stored_ids(&mut admin, &crossing), vec![9223372036854775806]);
}

#[test]
fn a_first_claim_that_fails_leaves_the_callers_transaction_as_it_was() {
    // claim(wait => false) registers a new name in a subtransaction of its own; an error in it
    // (here: a read-only transaction) must end that subtransaction before reaching the caller.
    let (follower, upstream) = (unique_name("F"), unique_name("U"));
    let mut client = connect();
    client
        .batch_execute("SET default_transaction_read_only = on")
        .unwrap();
    client
        .batch_execute(&format!(
            "DO $$ BEGIN \
               BEGIN PERFORM biomero.claim('{follower}', '{upstream}', false); \
               EXCEPTION WHEN read_only_sql_transaction THEN NULL; END; \
             END $$"
        ))
        .unwrap();
    client
        .batch_execute("RESET default_transaction_read_only")
        .unwrap();
    // The session is outside any transaction again: a savepoint has nothing to belong to.
    let error = client.batch_execute("SAVEPOINT x").unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION));
}
