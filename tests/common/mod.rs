//! Shared harness for the integration tests: one real server per test binary (started by
//! pgrx's test framework with the extension installed) and as many real sessions as a test
//! asks for.
#![allow(dead_code)]

use postgres::error::SqlState;
use postgres::{Client, IsolationLevel};
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
    let bits: u128 = rand::random();
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

pub fn count(client: &mut Client, query: &str) -> i64 {
    client.query_one(query, &[]).unwrap().get(0)
}

/// A session to another database of the test server (created by the caller).
pub fn connect_to(database: &str) -> Client {
    let mut client = connect();
    let port: String = client.query_one("SHOW port", &[]).unwrap().get(0);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    postgres::Config::new()
        .host("localhost")
        .port(port.parse().unwrap())
        .user(&user)
        .dbname(database)
        .connect(postgres::NoTls)
        .unwrap_or_else(|error| panic!("connect to database {database}: {error}"))
}
