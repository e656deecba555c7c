//! Backups: a database with the extension, dumped with pg_dump (custom and plain format) and
//! restored with pg_restore or psql into new databases, keeps every event (ids, aggregates,
//! versions, topics, state bytes) and every follower position, and appends after the restore
//! continue with the next ids and positions.

mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The constraints and indexes of the extension's tables, by name and definition.
fn schema_objects(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE connamespace = 'biomero'::regnamespace \
             UNION ALL \
             SELECT indexrelid::regclass::text || ' ' || pg_get_indexdef(indexrelid) \
             FROM pg_index WHERE indrelid IN ('biomero.events'::regclass, 'biomero.tracking'::regclass) \
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn run(program: &str, args: &[String]) -> String {
    let output = Command::new(format!("{}/{program}", pg_bin()))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stderr}"
    );
    stderr
}

fn recreate_database(admin: &mut Client, name: &str) {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
}

fn append(
    client: &mut Client,
    application: &str,
    aggregate: &str,
    version: i64,
    state: &[u8],
) -> i64 {
    client
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, $3, \
             'biomero.eventsourcing:WorkflowRun.TaskAdded', $4)",
            &[&application, &aggregate, &version, &state],
        )
        .unwrap()
        .get(0)
}

/// Writes what a BIOMERO database holds: several applications (one with a hostile name),
/// aggregates with many versions, states with every byte value and one of 1 MB, followers
/// that record positions alone or with their own events, and a rolled-back append.
fn populate(client: &mut Client) -> (usize, usize) {
    let applications = [
        "WorkflowTracker",
        "JobAccounting",
        "WorkflowProgress",
        "Ünïcødé 名前 🧪",
        "x'); DROP TABLE biomero.events; --",
    ];
    let every_byte: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253) as u8).collect();
    for (index, application) in applications.iter().enumerate() {
        for n in 0..(10 + index as i64 * 3) {
            let aggregate = random_uuid();
            for version in 0..(n % 5 + 1) {
                let state = format!("{{\"version\": {version}, \"name\": \"cellpose\"}}");
                append(client, application, &aggregate, version, state.as_bytes());
            }
        }
        append(client, application, &random_uuid(), 0, &every_byte);
        append(client, application, &random_uuid(), 0, b"");
    }
    append(client, applications[0], &random_uuid(), 0, &large);
    // Bulk: 5,000 more events of the first application in batches of 100.
    for _ in 0..50 {
        client
            .query_one(
                "SELECT biomero.record_events($1, array_agg(gen_random_uuid()), \
                 array_agg(0::int8), array_agg('biomero.eventsourcing:WorkflowRun.TaskAdded'::text), \
                 array_agg(convert_to('{\"n\": ' || n || '}', 'UTF8'))) \
                 FROM generate_series(1, 100) AS n",
                &[&applications[0]],
            )
            .unwrap();
    }
    // A rolled-back append leaves no hole, before or after the dump.
    client.batch_execute("BEGIN").unwrap();
    append(client, applications[0], &random_uuid(), 0, b"rolled back");
    client.batch_execute("ROLLBACK").unwrap();
    // Followers: a position with the follower's own events, one without, one far ahead.
    let follower_commit = client
        .query_one(
            "SELECT biomero.record_events('JobAccounting', ARRAY[gen_random_uuid()], ARRAY[0::int8], \
             ARRAY['biomero.eventsourcing:JobAccounting.Recorded'], ARRAY['\\x7b7d'::bytea], \
             'WorkflowTracker', 12)",
            &[],
        )
        .unwrap()
        .get::<_, Option<Vec<i64>>>(0);
    assert!(follower_commit.is_some());
    for (follower, upstream, id) in [
        ("WorkflowProgress", "WorkflowTracker", 25i64),
        ("WorkflowAnalytics", "WorkflowTracker", 7),
        ("WorkflowAnalytics", "JobAccounting", 3),
        ("Ünïcødé 名前 🧪", "x'); DROP TABLE biomero.events; --", 9),
    ] {
        let advanced: bool = client
            .query_one(
                "SELECT biomero.record_tracking($1, $2, $3)",
                &[&follower, &upstream, &id],
            )
            .unwrap()
            .get(0);
        assert!(advanced);
    }
    (stored_events(client).len(), stored_positions(client).len())
}

/// In a restored database: everything equal to the source, and the log goes on.
fn check_restored(
    target: &mut Client,
    source_events: &[EventRow],
    source_positions: &[PositionRow],
    source_schema: &[String],
    how: &str,
) {
    let restored_events = stored_events(target);
    assert_eq!(
        restored_events.len(),
        source_events.len(),
        "{how}: event count"
    );
    for (restored, original) in restored_events.iter().zip(source_events) {
        assert!(
            restored == original,
            "{how}: event {} {} differs after the restore",
            original.0,
            original.1
        );
    }
    assert_eq!(
        stored_positions(target),
        source_positions,
        "{how}: positions"
    );
    assert_eq!(
        schema_objects(target),
        source_schema,
        "{how}: constraints and indexes"
    );
    assert_store_invariants(target);

    // Appends continue with the next ids, per application.
    let mut heads: Vec<(String, i64)> = Vec::new();
    for (application, id, ..) in source_events {
        match heads.last_mut() {
            Some((name, head)) if name == application => *head = (*head).max(*id),
            _ => heads.push((application.clone(), *id)),
        }
    }
    for (application, head) in &heads {
        let id = append(target, application, &random_uuid(), 0, b"after restore");
        assert_eq!(id, head + 1, "{how}: next id of {application}");
        let ids: Vec<i64> = target
            .query_one(
                "SELECT biomero.record_events($1, ARRAY[gen_random_uuid(), gen_random_uuid()], \
                 ARRAY[0, 0]::int8[], ARRAY['t', 't'], ARRAY[''::bytea, ''::bytea])",
                &[application],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            ids,
            vec![head + 2, head + 3],
            "{how}: next batch of {application}"
        );
    }
    // An aggregate version stored before the dump is still taken.
    let (application, _, aggregate, version, ..) = &source_events[0];
    let conflict = target
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, $3, 't', '')",
            &[application, aggregate, version],
        )
        .unwrap_err();
    assert_eq!(conflict.code(), Some(&SqlState::UNIQUE_VIOLATION), "{how}");
    // Positions continue: claim returns the restored one, an old one is not recorded again,
    // the next one advances.
    for (follower, upstream, position) in source_positions {
        target.batch_execute("BEGIN").unwrap();
        let claimed = claim(target, follower, upstream);
        assert_eq!(
            claimed, *position,
            "{how}: claim of {follower} on {upstream}"
        );
        let again: Option<Vec<i64>> = target
            .query_one(
                "SELECT biomero.record_events($1, ARRAY[gen_random_uuid()], ARRAY[0::int8], \
                 ARRAY['t'], ARRAY[''::bytea], $2, $3)",
                &[follower, upstream, position],
            )
            .unwrap()
            .get(0);
        assert_eq!(again, None, "{how}: a recorded position is recorded again");
        let next = position + 1;
        let advanced: bool = target
            .query_one(
                "SELECT biomero.record_tracking($1, $2, $3)",
                &[follower, upstream, &next],
            )
            .unwrap()
            .get(0);
        assert!(advanced, "{how}: position of {follower} on {upstream}");
        target.batch_execute("COMMIT").unwrap();
    }
    assert_store_invariants(target);
}

#[test]
fn backup_pg_dump_and_restore_keep_every_event_and_position() {
    let started = Instant::now();
    let mut admin = connect();
    let server = test_server();
    let user = pgrx_tests::get_pg_user();
    let id = std::process::id();
    let (source, custom, plain) = (
        format!("backup_source_{id}"),
        format!("backup_custom_{id}"),
        format!("backup_plain_{id}"),
    );
    recreate_database(&mut admin, &source);
    let mut client = connect_to(&source);
    client
        .batch_execute("CREATE EXTENSION biomero_tracking")
        .unwrap();
    let (event_count, position_count) = populate(&mut client);
    let source_events = stored_events(&mut client);
    let source_positions = stored_positions(&mut client);
    let source_schema = schema_objects(&mut client);
    let applications = count(
        &mut client,
        "SELECT count(DISTINCT application_name) FROM biomero.events",
    );

    let directory = std::env::temp_dir().join(format!("biomero-backup-{id}"));
    std::fs::create_dir_all(&directory).unwrap();
    let file = |name: &str| directory.join(name).to_str().unwrap().to_string();
    let port = server.port.to_string();
    let connection = [
        "-h",
        server.socket_directory.as_str(),
        "-p",
        port.as_str(),
        "-U",
        user.as_str(),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        connection
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect()
    };

    // Custom format, restored with pg_restore into a new database.
    let (dump, script) = (file("source.dump"), file("source.sql"));
    run("pg_dump", &with(&["-Fc", "-d", &source, "-f", &dump]));
    recreate_database(&mut admin, &custom);
    let warnings = run(
        "pg_restore",
        &with(&["--exit-on-error", "-d", &custom, &dump]),
    );
    assert!(warnings.is_empty(), "pg_restore said: {warnings}");
    // Plain format, restored with psql into another new database.
    run("pg_dump", &with(&["-Fp", "-d", &source, "-f", &script]));
    recreate_database(&mut admin, &plain);
    let warnings = run(
        "psql",
        &with(&[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &plain,
            "-f",
            &script,
        ]),
    );
    assert!(warnings.is_empty(), "psql said: {warnings}");
    let dump_bytes = std::fs::metadata(Path::new(&dump)).unwrap().len();

    for (database, how) in [
        (&custom, "pg_dump -Fc | pg_restore"),
        (&plain, "pg_dump -Fp | psql"),
    ] {
        let mut target = connect_to(database);
        check_restored(
            &mut target,
            &source_events,
            &source_positions,
            &source_schema,
            how,
        );
    }
    // The source is unchanged by the dumps and goes on too.
    assert_eq!(stored_events(&mut client), source_events);
    drop(client);
    for database in [&source, &custom, &plain] {
        admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .unwrap();
    }
    std::fs::remove_dir_all(&directory).unwrap();
    eprintln!(
        "backup: {event_count} events of {applications} applications and {position_count} \
         positions, dumped ({dump_bytes} bytes custom format) and restored twice (pg_restore, \
         psql): all equal, next ids and positions continue; {:.1?}",
        started.elapsed()
    );
}
