//! Shared harness for the integration tests: one real server per test binary (started by
//! pgrx's test framework with the extension installed) and as many real sessions as a test
//! asks for.
#![allow(dead_code)]

use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A new session whose lock waits end after `lock_timeout`: a lock left held then fails the
/// test instead of hanging it.
pub fn session(lock_timeout: &str) -> Client {
    let mut client = connect();
    client
        .batch_execute(&format!("SET lock_timeout = '{lock_timeout}'"))
        .unwrap();
    client
}

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

pub const ISOLATION_LEVELS: [IsolationLevel; 3] = [
    IsolationLevel::ReadCommitted,
    IsolationLevel::RepeatableRead,
    IsolationLevel::Serializable,
];

pub fn sqlstate(error: &postgres::Error) -> Option<&SqlState> {
    error.code()
}

pub fn is_serialization_failure(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
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

/// A random UUID in text form; tests pass it as `$n::text::uuid`.
pub fn random_uuid() -> String {
    uuid_text(rand::random())
}

/// 128 bits as a UUID in text form (the fuzz test draws them from its seeded generator).
pub fn uuid_text(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
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

/// The number `query` (a `SELECT count(*) ...` without parameters) returns.
pub fn count(client: &mut Client, query: &str) -> i64 {
    client.query_one(query, &[]).unwrap().get(0)
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

/// A session to another database of the test server (created by the caller).
pub fn connect_to(database: &str) -> Client {
    try_connect_to(database)
        .unwrap_or_else(|error| panic!("connect to database {database}: {error}"))
}

// ----------------------------------------------------------------------------------------
// Faults, backups and long runs: the server's files and processes, other databases,
// reconnecting across restarts, and the invariants every test checks afterwards.

/// Where the test server's programs are (pg_ctl, pg_dump, pg_restore, psql, initdb): the
/// installation of the PostgreSQL major the tests were built for.
pub fn pg_bin() -> String {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        connect()
            .query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[])
            .unwrap()
            .get(0)
    })
    .clone()
}

/// The test server's data directory, port and socket directory, as it reports them.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub data_directory: String,
    pub port: u16,
    pub socket_directory: String,
}

pub fn server_info(client: &mut Client) -> ServerInfo {
    let row = client
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
}

/// The test server's info, asked once per test binary (it does not change across restarts).
pub fn test_server() -> ServerInfo {
    static INFO: std::sync::OnceLock<ServerInfo> = std::sync::OnceLock::new();
    INFO.get_or_init(|| server_info(&mut connect())).clone()
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

/// A new session to the tests' database, retrying while the server restarts or recovers.
pub fn connect_when_ready(timeout: std::time::Duration) -> Client {
    test_server();
    retry_connect("the test server", timeout, || {
        try_connect_to(pgrx_tests::get_pg_dbname())
    })
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

pub fn backend_pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// The extension's lock kinds as `pg_locks.objsubid` shows them.
pub use biomero_tracking::locks::{APPEND_LOCK_KIND as APPEND_LOCK, CLAIM_LOCK_KIND as CLAIM_LOCK};

/// Waits until backend `pid` is blocked waiting for one of the extension's locks of `kind`.
pub fn wait_until_blocked(observer: &mut Client, pid: i32, kind: i16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted \
                 AND locktype = 'advisory' AND objsubid = $2",
                &[&pid, &kind],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backend {pid} did not start waiting for lock kind {kind:#x}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The extension's locks held or awaited by anyone, as (pid, objsubid, granted).
pub fn extension_locks(client: &mut Client) -> Vec<(i32, i16, bool)> {
    client
        .query(
            "SELECT pid, objsubid::int2, granted FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid IN ($1, $2) ORDER BY pid",
            &[&APPEND_LOCK, &CLAIM_LOCK],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
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

/// Resident memory of one process from /proc/<pid>/status, in kB: `field` is `VmRSS`
/// (everything resident, including shared buffers the process has touched) or `RssAnon`
/// (its private memory, where a leak shows). None when the process is gone.
pub fn resident_kb(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The postmaster's pid and those of all its children (backends and auxiliary processes).
pub fn server_pids(data_directory: &str) -> Vec<i32> {
    let postmaster: i32 = std::fs::read_to_string(format!("{data_directory}/postmaster.pid"))
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|line| line.trim().parse().ok())
        })
        .expect("postmaster.pid names the postmaster");
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<i32>().ok());
        if parent == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

// ----------------------------------------------------------------------------------------
// Servers of their own: a test that needs other settings (no shared_preload_libraries, another
// encoding) or a streaming replica starts a cluster from the test server's installation.

/// A cluster started by a test, stopped (immediately) and removed when dropped.
pub struct Cluster {
    pub data: String,
    pub port: u16,
}

/// A session to `database` of the cluster on `port` (for threads, which take the port along
/// rather than the cluster).
pub fn try_connect_to_cluster(port: u16, database: &str) -> Result<Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(database)
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect(postgres::NoTls)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new cluster (initdb with `initdb_args`) started with `settings` (`name=value`).
    pub fn start(name: &str, initdb_args: &[&str], settings: &[&str]) -> Cluster {
        let data = format!(
            "{}/{}",
            std::env::var("CARGO_PGRX_TEST_PGDATA").unwrap_or_else(|_| "/var/tmp/pgrx-test".into()),
            unique_name(name)
        );
        let initdb = format!("{}/initdb", pg_bin());
        let mut args = vec!["-D", &data, "-A", "trust", "--no-sync", "-U", "postgres"];
        args.extend_from_slice(initdb_args);
        must_run_as_server_owner(&initdb, &args);
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.launch(settings);
        cluster
    }

    /// A streaming replica of `primary` (pg_basebackup -R), started as a hot standby.
    pub fn replica_of(primary: &Cluster, settings: &[&str]) -> Cluster {
        let data = format!("{}-replica", primary.data);
        let port = primary.port.to_string();
        must_run_as_server_owner(
            &format!("{}/pg_basebackup", pg_bin()),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                // A fast checkpoint: a spread one can take minutes.
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.launch(settings);
        cluster
    }

    fn launch(&self, settings: &[&str]) {
        let mut options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=100 \
             -c fsync=off -c log_min_messages=warning",
            self.port
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = format!("{}/server.log", self.data);
        must_run_as_server_owner(
            &format!("{}/pg_ctl", pg_bin()),
            &[
                "-D", &self.data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
    }

    /// Runs pg_ctl on this cluster with `args`, which must succeed.
    pub fn pg_ctl(&self, args: &[&str]) {
        let mut all = vec!["-D", self.data.as_str()];
        all.extend_from_slice(args);
        must_run_as_server_owner(&format!("{}/pg_ctl", pg_bin()), &all);
    }

    /// Starts a stopped (or crashed) cluster again with `settings`.
    pub fn start_again(&self, settings: &[&str]) {
        self.launch(settings);
    }

    /// Stops with `mode` (fast, immediate) and starts again with `settings`.
    pub fn restart(&self, mode: &str, settings: &[&str]) {
        self.pg_ctl(&["-m", mode, "-w", "stop"]);
        self.launch(settings);
    }

    pub fn try_connect(&self, database: &str) -> Result<Client, postgres::Error> {
        try_connect_to_cluster(self.port, database)
    }

    pub fn connect(&self, database: &str) -> Client {
        self.try_connect(database)
            .unwrap_or_else(|error| panic!("connect to {database} on port {}: {error}", self.port))
    }

    /// A session, retrying while the server starts, recovers or restarts.
    pub fn connect_when_ready(&self, database: &str) -> Client {
        retry_connect(
            &format!("the cluster on port {}", self.port),
            std::time::Duration::from_secs(60),
            || self.try_connect(database),
        )
    }

    /// A database with the extension created in it.
    pub fn database_with_extension(&self, name: &str) -> Client {
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut client = self.connect(name);
        client
            .batch_execute("CREATE EXTENSION biomero_tracking")
            .unwrap();
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", pg_bin());
        let _ = run_as_server_owner(
            &pg_ctl,
            &["-D", &self.data, "-m", "immediate", "-w", "stop"],
        );
        let _ = run_as_server_owner("rm", &["-rf", &self.data]);
    }
}
