//! Shared harness for the integration tests: one real server per test binary (started by
//! pgrx's test framework with the extension installed) and as many real sessions as a test
//! asks for.
//!
//! Every test binary compiles this module for itself and uses a part of it, so unused items
//! are allowed here (and in `cluster.rs`); what one binary alone uses lives in that binary. Two
//! larger parts are modules that only the binaries needing them include: `cluster.rs` (servers
//! of their own) and `follower.rs` (the follower step).

#![allow(dead_code)]

use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel, Transaction};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

// ----------------------------------------------------------------------------------------
// Sessions to the test server and its databases.

/// Starts (once per test binary) the test server and returns a new session to it.
pub fn connect() -> Client {
    pgrx_tests::run_test(
        "test_extension_ready",
        None,
        biomero_tracking::pg_test::postgresql_conf_options(),
    )
    .expect("test server starts with the extension");
    let (mut client, _) = pgrx_tests::client().expect("connect to the test server");
    // The framework logs every statement of its clients; these tests run tens of thousands.
    client
        .batch_execute("SET log_statement = 'none'; SET log_min_duration_statement = -1")
        .unwrap();
    client
}

/// Runs `sql` (grants on the extension's shared objects) in one transaction that takes
/// turns with other tests': PostgreSQL updates an object's ACL in place, and two sessions
/// granting on the same function at once fail with "tuple concurrently updated".
pub fn grant_in_turn(client: &mut Client, sql: &str) {
    let mut transaction = client.transaction().unwrap();
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('tests: catalog grants'))",
            &[],
        )
        .unwrap();
    transaction.batch_execute(sql).unwrap();
    transaction.commit().unwrap();
}

/// A transaction at `isolation` whose snapshot is taken at once (by a first statement), so
/// that what commits afterwards is not in it.
pub fn snapshot_transaction(client: &mut Client, isolation: IsolationLevel) -> Transaction<'_> {
    let mut transaction = client
        .build_transaction()
        .isolation_level(isolation)
        .start()
        .unwrap();
    transaction.query_one("SELECT 1", &[]).unwrap();
    transaction
}

/// A new session whose lock waits end after `lock_timeout`: a lock left held then fails the
/// test instead of hanging it.
pub fn session(lock_timeout: &str) -> Client {
    let mut client = connect();
    client
        .batch_execute(&format!("SET lock_timeout = '{lock_timeout}'"))
        .unwrap();
    client
}

/// A new session to `database` on the test server, or the error.
pub fn try_connect_to(database: &str) -> Result<Client, postgres::Error> {
    let mut client = postgres::Config::new()
        .host("localhost")
        .port(test_server().port)
        .user(&pgrx_tests::get_pg_user())
        .dbname(database)
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect(postgres::NoTls)?;
    client.batch_execute("SET log_statement = 'none'; SET log_min_duration_statement = -1")?;
    Ok(client)
}

/// A session to another database of the test server (created by the caller).
pub fn connect_to(database: &str) -> Client {
    try_connect_to(database)
        .unwrap_or_else(|error| panic!("connect to database {database}: {error}"))
}

/// A session from `connect`, retried every 50 ms for up to `timeout` while `server` does not
/// accept sessions: it starts, restarts or recovers from a crash (connection refused, 57P03
/// "the database system is starting up / in recovery mode").
pub fn retry_connect(
    server: &str,
    timeout: std::time::Duration,
    connect: impl Fn() -> Result<Client, postgres::Error>,
) -> Client {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match connect() {
            Ok(client) => return client,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(error) => panic!("{server} did not accept sessions within {timeout:?}: {error}"),
        }
    }
}

/// The process id of the backend serving `client`.
pub fn backend_pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// Where the test server keeps its files and accepts sessions.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub data_directory: String,
    pub port: u16,
    pub socket_directory: String,
}

/// The test server's data directory, port and socket directory, asked once per test binary
/// (they do not change across restarts).
pub fn test_server() -> ServerInfo {
    static INFO: OnceLock<ServerInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let row = connect()
            .query_one(
                "SELECT current_setting('data_directory'), current_setting('port')::int4, \
                 split_part(current_setting('unix_socket_directories'), ',', 1)",
                &[],
            )
            .unwrap();
        ServerInfo {
            data_directory: row.get(0),
            port: u16::try_from(row.get::<_, i32>(1)).unwrap(),
            socket_directory: row.get(2),
        }
    })
    .clone()
}

// ----------------------------------------------------------------------------------------
// Names, UUIDs and errors.

/// A name no other test in this run uses, so tests sharing the server never see each
/// other's rows (their data commits).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A random UUID in text form; tests pass it as `$n::text::uuid`.
pub fn random_uuid() -> String {
    uuid_text(rand::random())
}

/// 128 bits as a UUID in text form (the fuzz test draws them from its seeded generator).
pub fn uuid_text(bits: u128) -> String {
    uuid::Uuid::from_u128(bits).to_string()
}

/// The server's message of a database error, or the whole error when there is none (a broken
/// connection, say).
pub fn db_message(error: &postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| error.to_string())
}

/// An error as `SQLSTATE: message` (`-` for no SQLSTATE), for lists of unexpected errors.
pub fn describe(error: &postgres::Error) -> String {
    format!(
        "{}: {}",
        error.code().map_or("-", |code| code.code()),
        db_message(error)
    )
}

/// A serialization failure (40001): the transaction is to be retried.
pub fn is_serialization_failure(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

// ----------------------------------------------------------------------------------------
// Appending and reading.

/// Appends one event (version 0 of a new aggregate) to application `$1`; returns its id.
pub const APPEND: &str = "SELECT biomero.record_event($1, gen_random_uuid(), 0, 't', '')";

/// Appends one event as `APPEND` does; returns its id.
pub fn append_one(client: &mut impl GenericClient, application: &str) -> i64 {
    client.query_one(APPEND, &[&application]).unwrap().get(0)
}

/// Appends `versions` of `aggregate` to `application` in one record_events call, each with
/// `topic` and the state `state` makes of its version; returns their ids.
pub fn append_versions(
    client: &mut impl GenericClient,
    application: &str,
    aggregate: &str,
    versions: std::ops::Range<i64>,
    topic: &str,
    state: impl Fn(i64) -> Vec<u8>,
) -> Result<Vec<i64>, postgres::Error> {
    let aggregates = vec![aggregate; versions.clone().count()];
    let topics = vec![topic; aggregates.len()];
    let states: Vec<Vec<u8>> = versions.clone().map(state).collect();
    let versions: Vec<i64> = versions.collect();
    client
        .query_one(
            "SELECT biomero.record_events($1, $2::text[]::uuid[], $3, $4, $5)",
            &[&application, &aggregates, &versions, &topics, &states],
        )
        .map(|row| row.get(0))
}

/// Sets the append mode (`serialized` or `concurrent`) of `application`, registering it on
/// its first use.
pub fn set_append_mode(client: &mut Client, application: &str, mode: &str) {
    client
        .execute(
            "SELECT biomero.set_append_mode($1, $2)",
            &[&application, &mode],
        )
        .unwrap();
}

/// The claim of `follower` on `upstream`, waiting while another transaction holds it: the
/// position.
pub fn claim(client: &mut impl GenericClient, follower: &str, upstream: &str) -> i64 {
    client
        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap()
        .get(0)
}

/// The claim of `follower` on `upstream` without waiting (`wait => false`): the position, or
/// None while another transaction holds the claim.
pub fn try_claim(client: &mut impl GenericClient, follower: &str, upstream: &str) -> Option<i64> {
    client
        .query_one(
            "SELECT biomero.claim($1, $2, wait => false)",
            &[&follower, &upstream],
        )
        .unwrap()
        .get(0)
}

/// The next notification ids of application `$1` after id `$2`, at most `$3` of them: a page
/// of a reader or follower.
pub const PAGE: &str = "SELECT notification_id FROM biomero.select_notifications($1, $2, $3, \
                        inclusive_of_start => false)";

/// The next page (up to 1000 notification ids) of `application` after id `after`.
pub fn page(client: &mut impl GenericClient, application: &str, after: i64) -> Vec<i64> {
    client
        .query(PAGE, &[&application, &after, &1000i64])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

// ----------------------------------------------------------------------------------------
// What is stored, and the invariants every test that writes much checks afterwards.

/// The notification ids of `application`, in id order.
pub fn stored_ids(client: &mut Client, application: &str) -> Vec<i64> {
    client
        .query(
            "SELECT notification_id FROM biomero.events WHERE application_name = $1 \
             ORDER BY notification_id",
            &[&application],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// An event as stored: application, notification id, aggregate, version, topic, state.
pub type EventRow = (String, i64, String, i64, String, Vec<u8>);

/// Every event stored, by application and notification id.
pub fn stored_events(client: &mut Client) -> Vec<EventRow> {
    client
        .query(
            "SELECT application_name, notification_id, originator_id::text, originator_version, \
             topic, state FROM biomero.events ORDER BY application_name, notification_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
        .collect()
}

/// A follower position as stored: (application, upstream, notification id).
pub type PositionRow = (String, String, i64);

/// Every stored position, in (application, upstream) order.
pub fn stored_positions(client: &mut Client) -> Vec<PositionRow> {
    client
        .query(
            "SELECT application_name, upstream_application_name, notification_id \
             FROM biomero.tracking ORDER BY application_name, upstream_application_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// The number `query` (a `SELECT count(*) ...` without parameters) returns.
pub fn count(client: &mut Client, query: &str) -> i64 {
    client.query_one(query, &[]).unwrap().get(0)
}

/// The last notification id of `application`, 0 when it has none.
pub fn notification_head(client: &mut Client, application: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(biomero.max_notification_id($1), 0)",
            &[&application],
        )
        .unwrap()
        .get(0)
}

/// The position of `follower` on `upstream`, 0 when it has none.
pub fn follower_position(client: &mut Client, follower: &str, upstream: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(biomero.max_tracking_id($1, $2), 0)",
            &[&follower, &upstream],
        )
        .unwrap()
        .get(0)
}

/// Invariants over everything stored in the database `client` is connected to: per
/// application the ids are exactly 1..=n, each aggregate version is stored once, every
/// position is positive, and both tables still exist. Returns (applications, events).
pub fn assert_store_invariants(client: &mut Client) -> (i64, i64) {
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'biomero' \
             AND tablename IN ('events', 'tracking')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 2, "biomero.events and biomero.tracking must exist");
    let holes: Vec<(String, i64, i64, i64)> = client
        .query(
            "SELECT application_name, count(*), min(notification_id), max(notification_id) \
             FROM biomero.events GROUP BY application_name \
             HAVING min(notification_id) <> 1 OR max(notification_id) <> count(*)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert!(
        holes.is_empty(),
        "ids not contiguous from 1 (application, count, min, max): {holes:?}"
    );
    let duplicate_versions: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM biomero.events \
             GROUP BY application_name, originator_id, originator_version \
             HAVING count(*) > 1) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        duplicate_versions, 0,
        "an aggregate version is stored twice"
    );
    let bad_positions: i64 = client
        .query_one(
            "SELECT count(*) FROM biomero.tracking WHERE notification_id <= 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(bad_positions, 0, "a tracking position <= 0 is stored");
    let row = client
        .query_one(
            "SELECT count(DISTINCT application_name), count(*) FROM biomero.events",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

// ----------------------------------------------------------------------------------------
// The server's programs, run as the user that owns its files and processes.

/// Where the test server's programs are (pg_ctl, pg_dump, pg_restore, psql, initdb): the
/// installation of the PostgreSQL major the tests were built for.
pub fn pg_bin() -> String {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        connect()
            .query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[])
            .unwrap()
            .get(0)
    })
    .clone()
}

/// Runs a program as the user that owns the server's files and processes (`postgres` when the
/// tests run as root with `CARGO_PGRX_TEST_RUNAS=postgres`).
pub fn run_as_server_owner(program: &str, args: &[&str]) -> std::process::Output {
    let owner = pgrx_tests::get_pg_user();
    let me = std::env::var("USER").unwrap_or_default();
    let mut command = if owner == me {
        std::process::Command::new(program)
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.args(["-u", &owner, program]);
        sudo
    };
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// Runs a program as `run_as_server_owner` does and fails the test when it fails.
pub fn must_run_as_server_owner(program: &str, args: &[&str]) {
    let output = run_as_server_owner(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
