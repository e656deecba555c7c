//! biomero_tracking: a race-free event log and exactly-once follower tracking in PostgreSQL.
//!
//! A call flows one way: validate (`input`) -> lock (`locks`) -> allocate ids (`ids`) ->
//! write (`append`, `tracking`) -> notify (`notify`) -> return.

use pgrx::prelude::*;

mod append;
mod error;
mod ids;
mod input;
mod locks;
mod notify;
mod read;
mod summary;
mod tracking;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/read.sql", name = "read", requires = ["schema"]);
extension_sql_file!("../sql/adopt.sql", name = "adopt", requires = ["schema"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    notify::register_settings();
}

/// Used by `cargo pgrx test` (and the integration tests in `tests/`).
#[cfg(any(test, feature = "pg_test"))]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["max_connections = 200", "log_min_messages = warning"]
    }
}
