//! The Debian package, installed as an operator installs it: run by `scripts/test-package.sh`
//! against a cluster of its own (started with `shared_preload_libraries = biomero_tracking`,
//! database `biomero` with the extension created) whose installation holds the package's files
//! and nothing of the test build. Its URL comes in `BIOMERO_PACKAGE_URL`; the tests are ignored
//! in the ordinary suite, which has no such server.
//!
//! * the packaged version is the one created, and an update from 0.1.0 keeps the data;
//! * the follower race: competing writers and processes of one follower, in serialized and in
//!   concurrent append mode: every notification processed exactly once;
//! * a pg_dump / pg_restore round trip keeps every event and position, and the log goes on.

mod common;

use common::{assert_store_invariants, random_uuid, stored_events, stored_positions, unique_name};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn config() -> postgres::Config {
    let url = std::env::var("BIOMERO_PACKAGE_URL")
        .expect("BIOMERO_PACKAGE_URL names the packaged server (scripts/test-package.sh)");
    url.parse()
        .expect("BIOMERO_PACKAGE_URL is a connection URL")
}

/// A session to `database` of the packaged server.
fn connect(database: &str) -> Client {
    config()
        .dbname(database)
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .unwrap_or_else(|error| panic!("connect to {database}: {error}"))
}

fn admin() -> Client {
    connect("postgres")
}

/// A new database of its own for one test, with or without the extension created.
fn new_database(prefix: &str, create_extension: bool) -> String {
    let name = unique_name(prefix);
    admin()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    if create_extension {
        connect(&name)
            .batch_execute("CREATE EXTENSION biomero_tracking")
            .unwrap();
    }
    name
}

fn drop_database(name: &str) {
    admin()
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

fn version(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'biomero_tracking'",
            &[],
        )
        .unwrap()
        .get(0)
}

fn append(client: &mut Client, application: &str, aggregate: &str, version: i64) -> i64 {
    client
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, $3, \
             'biomero.eventsourcing:WorkflowRun.TaskAdded', '\\x7b7d')",
            &[&application, &aggregate, &version],
        )
        .unwrap()
        .get(0)
}

#[test]
#[ignore = "needs a server with the packaged extension: scripts/test-package.sh"]
fn package_creates_its_version_and_updates_from_0_1_0() {
    // The database the cluster was started with: the extension as created there.
    let mut biomero = connect("biomero");
    assert_eq!(version(&mut biomero), env!("CARGO_PKG_VERSION"));
    let preloaded: String = biomero
        .query_one("SHOW shared_preload_libraries", &[])
        .unwrap()
        .get(0);
    assert!(
        preloaded.split(',').any(|l| l.trim() == "biomero_tracking"),
        "the server preloads the library: {preloaded}"
    );
    let paths: i64 = biomero
        .query_one(
            "SELECT count(*) FROM pg_extension_update_paths('biomero_tracking') \
             WHERE source = '0.1.0' AND target = $1 AND path IS NOT NULL",
            &[&env!("CARGO_PKG_VERSION")],
        )
        .unwrap()
        .get(0);
    assert_eq!(paths, 1, "the package's update scripts lead from 0.1.0");

    // A database created by 0.1.0 (its install script is put beside the package's files by
    // the test script), with what 0.1.0 stored, then updated.
    let old = new_database("package_from_010", false);
    let mut client = connect(&old);
    client
        .batch_execute("CREATE EXTENSION biomero_tracking VERSION '0.1.0'")
        .unwrap();
    let aggregate = random_uuid();
    client
        .execute(
            "INSERT INTO biomero.events SELECT 'WorkflowTracker', v + 1, $1::text::uuid, v, 't', \
             '\\x01' FROM generate_series(0, 4) AS v",
            &[&aggregate],
        )
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO biomero.tracking VALUES ('WorkflowProgress', 'WorkflowTracker', 3)",
        )
        .unwrap();
    let before = stored_events(&mut client);
    client
        .batch_execute("ALTER EXTENSION biomero_tracking UPDATE")
        .unwrap();
    assert_eq!(version(&mut client), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        stored_events(&mut client),
        before,
        "the update keeps every event"
    );
    assert_eq!(append(&mut client, "WorkflowTracker", &aggregate, 5), 6);
    let duplicate = client
        .query_one(
            "SELECT biomero.record_event('WorkflowTracker', $1::text::uuid, 5, 't', '')",
            &[&aggregate],
        )
        .unwrap_err();
    assert_eq!(duplicate.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let advanced: bool = client
        .query_one(
            "SELECT biomero.record_tracking('WorkflowProgress', 'WorkflowTracker', 3)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!advanced, "the position recorded by 0.1.0 is kept");
    assert_store_invariants(&mut client);
    drop(client);
    drop_database(&old);
}

const WRITERS: usize = 4;
const EVENTS_PER_WRITER: usize = 50;
const FOLLOWER_SESSIONS: usize = 6;

/// Writers append to one upstream while processes of one follower claim, read the next
/// notification, write a read-model row and record the position in one transaction.
/// Returns (events, processings) after checking that each notification was processed once.
fn follower_race(database: &str, mode: &str) -> (usize, usize) {
    let upstream = unique_name("WorkflowTracker");
    let follower = unique_name("WorkflowProgress");
    let mut setup = connect(database);
    setup
        .execute(
            "SELECT biomero.set_append_mode($1, $2)",
            &[&upstream, &mode],
        )
        .unwrap();
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS read_model (follower text, upstream text, \
             notification_id bigint, session int)",
        )
        .unwrap();
    let writers_done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (database, upstream) = (database.to_string(), upstream.clone());
            thread::spawn(move || {
                let mut client = connect(&database);
                (0..EVENTS_PER_WRITER)
                    .map(|_| append(&mut client, &upstream, &random_uuid(), 0))
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let followers: Vec<_> = (0..FOLLOWER_SESSIONS as i32)
        .map(|session| {
            let (database, upstream, follower) =
                (database.to_string(), upstream.clone(), follower.clone());
            let writers_done = writers_done.clone();
            thread::spawn(move || {
                let mut client = connect(&database);
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let done = writers_done.load(Ordering::SeqCst);
                    let mut tx = client.transaction().unwrap();
                    let position: i64 = tx
                        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
                        .unwrap()
                        .get(0);
                    let next = tx
                        .query_opt(
                            "SELECT notification_id FROM biomero.select_notifications($1, $2, 1, \
                             inclusive_of_start => false)",
                            &[&upstream, &position],
                        )
                        .unwrap();
                    let Some(next) = next else {
                        tx.commit().unwrap();
                        if done {
                            break;
                        }
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    let id: i64 = next.get(0);
                    tx.execute(
                        "INSERT INTO read_model VALUES ($1, $2, $3, $4)",
                        &[&follower, &upstream, &id, &session],
                    )
                    .unwrap();
                    let advanced: bool = tx
                        .query_one(
                            "SELECT biomero.record_tracking($1, $2, $3)",
                            &[&follower, &upstream, &id],
                        )
                        .unwrap()
                        .get(0);
                    assert!(advanced, "a claimed position advances");
                    tx.commit().unwrap();
                    assert!(Instant::now() < deadline, "the followers did not finish");
                }
            })
        })
        .collect();
    let mut appended: Vec<i64> = writers
        .into_iter()
        .flat_map(|writer| writer.join().expect("a writer failed"))
        .collect();
    writers_done.store(true, Ordering::SeqCst);
    for follower in followers {
        follower.join().expect("a follower failed");
    }
    appended.sort_unstable();

    let mut client = connect(database);
    let processed: Vec<i64> = client
        .query(
            "SELECT notification_id FROM read_model WHERE follower = $1 AND upstream = $2 \
             ORDER BY notification_id",
            &[&follower, &upstream],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        processed, appended,
        "{mode}: every appended notification processed exactly once"
    );
    let sessions: i64 = client
        .query_one(
            "SELECT count(DISTINCT session) FROM read_model WHERE follower = $1",
            &[&follower],
        )
        .unwrap()
        .get(0);
    let position: i64 = client
        .query_one(
            "SELECT biomero.max_tracking_id($1, $2)",
            &[&follower, &upstream],
        )
        .unwrap()
        .get(0);
    assert_eq!(Some(&position), appended.last(), "{mode}: position = head");
    if mode == "serialized" {
        let expected: Vec<i64> = (1..=(WRITERS * EVENTS_PER_WRITER) as i64).collect();
        assert_eq!(appended, expected, "serialized: ids gapless from 1");
    }
    eprintln!(
        "package race ({mode}): {} events by {WRITERS} writers, each processed once by \
         {FOLLOWER_SESSIONS} competing processes ({sessions} took part)",
        appended.len()
    );
    (appended.len(), processed.len())
}

#[test]
#[ignore = "needs a server with the packaged extension: scripts/test-package.sh"]
fn package_follower_race_processes_every_notification_once() {
    let database = new_database("package_race", true);
    for mode in ["serialized", "concurrent"] {
        follower_race(&database, mode);
    }
    assert_store_invariants(&mut connect(&database));
    drop_database(&database);
}

/// A program of the server's installation, as root, against the packaged server.
fn run_server_program(program: &str, args: &[&str]) {
    let bin: String = admin()
        .query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[])
        .unwrap()
        .get(0);
    let config = config();
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("BIOMERO_PACKAGE_URL needs a TCP host, not {other:?}"),
    };
    let port = config.get_ports()[0].to_string();
    let output = Command::new(format!("{bin}/{program}"))
        .args(["-h", &host, "-p", &port, "-U", "postgres"])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs a server with the packaged extension: scripts/test-package.sh"]
fn package_backup_and_restore_keep_every_event_and_position() {
    let source = new_database("package_backup", true);
    let mut client = connect(&source);
    // Several applications, aggregates with several versions, states with every byte value,
    // positions recorded alone and with a follower's own events.
    let mut heads = BTreeMap::new();
    for application in ["WorkflowTracker", "JobAccounting", "Ünïcødé 名前 🧪"] {
        let aggregate = random_uuid();
        for version in 0..20i64 {
            let state: Vec<u8> = (0..=255u8)
                .cycle()
                .skip(version as usize)
                .take(300)
                .collect();
            let id: i64 = client
                .query_one(
                    "SELECT biomero.record_event($1, $2::text::uuid, $3, 't', $4)",
                    &[&application, &aggregate, &version, &state],
                )
                .unwrap()
                .get(0);
            heads.insert(application.to_string(), id);
        }
    }
    client
        .batch_execute(
            "SELECT biomero.record_tracking('JobAccounting', 'WorkflowTracker', 7); \
             SELECT biomero.record_events('WorkflowProgress', ARRAY[gen_random_uuid()], \
                 ARRAY[0::int8], ARRAY['t'], ARRAY['\\x00'::bytea], 'WorkflowTracker', 12)",
        )
        .unwrap();
    heads.insert("WorkflowProgress".into(), 1);
    let (source_events, source_positions) =
        (stored_events(&mut client), stored_positions(&mut client));

    let dump = std::env::temp_dir().join(format!("{source}.dump"));
    let dump = dump.to_str().unwrap();
    let restored = new_database("package_restored", false);
    run_server_program("pg_dump", &["-Fc", "-d", &source, "-f", dump]);
    run_server_program("pg_restore", &["--exit-on-error", "-d", &restored, dump]);
    std::fs::remove_file(dump).unwrap();

    let mut target = connect(&restored);
    assert_eq!(version(&mut target), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        stored_events(&mut target),
        source_events,
        "every event restored"
    );
    assert_eq!(
        stored_positions(&mut target),
        source_positions,
        "every position"
    );
    assert_store_invariants(&mut target);
    for (application, head) in &heads {
        assert_eq!(
            append(&mut target, application, &random_uuid(), 0),
            head + 1,
            "the next id of {application} after the restore"
        );
    }
    let advanced: bool = target
        .query_one(
            "SELECT biomero.record_tracking('JobAccounting', 'WorkflowTracker', 7)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!advanced, "a restored position is not recorded again");
    eprintln!(
        "package backup: {} events and {} positions dumped, restored and continued",
        source_events.len(),
        source_positions.len()
    );
    drop((client, target));
    drop_database(&source);
    drop_database(&restored);
}
