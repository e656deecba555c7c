//! biomero_tracking: a race-free event log and exactly-once follower tracking in PostgreSQL.
//!
//! A write flows one way: validate (`input`) -> authorize and switch to the owner (`access`)
//! -> register the name (`registry`) -> lock and allocate ids (`locks`, `ids`, `shared`) ->
//! write (`append`, `tracking`) -> notify (`notify`, `worker`) -> return. Every statement is a
//! kept plan run with an explicit snapshot (`statements`).

// The SQL-callable functions return pgrx's ErrorReport, which pgrx raises as is (SQLSTATE,
// detail and hint kept); it is large, and boxing it would make pgrx raise a generic error.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod access;
mod admin;
mod append;
mod catalog;
mod error;
mod ids;
mod input;
pub mod locks;
mod notify;
mod read;
mod registry;
mod retired;
mod shared;
mod statements;
mod subtransaction;
mod tracking;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/read.sql",
    name = "read",
    requires = [
        "schema",
        check_name,
        check_limit,
        check_topics,
        readable_bound
    ]
);
extension_sql_file!("../sql/admin.sql", name = "admin", requires = ["schema"]);
extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = [
        "schema",
        append_state,
        in_flight_appends,
        lock_kinds,
        application_name_of
    ]
);
extension_sql_file!("../sql/adopt.sql", name = "adopt", requires = ["schema"]);
extension_sql_file!(
    "../sql/rebuild.sql",
    name = "rebuild",
    requires = ["schema", forget_positions]
);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    notify::register_settings();
    registry::install_cache_invalidation();
    // SAFETY: read while the library is loaded.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shared::register_settings();
        worker::register_settings();
        shared::install_hooks();
    }
}

/// Used by `cargo pgrx test` (and the integration tests in `tests/`).
#[cfg(any(test, feature = "pg_test"))]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "max_connections = 200",
            "log_min_messages = warning",
            "shared_preload_libraries = 'biomero_tracking'",
        ]
    }
}
