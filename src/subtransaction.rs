//! Steps that may fail without failing the caller's transaction: each runs in an internal
//! subtransaction (the pattern of PL/pgSQL's exception blocks), rolled back when it raises.

use crate::error::{Error, Result};
use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
use pgrx::{pg_sys, PgSqlErrorCode, PgTryBuilder};

/// How a step that raised ended.
enum Ended<T> {
    Returned(Result<T>),
    /// It raised one of the SQLSTATEs the caller expects.
    Expected(PgSqlErrorCode),
    /// It raised a PostgreSQL ERROR the caller wants as a value.
    Failed(String),
}

/// Runs `body` in a subtransaction, with `lock_timeout` set inside it when given. An ERROR
/// with one of the `expected` SQLSTATEs rolls the subtransaction back and is returned as
/// `Ok(Err(sqlstate))`; any other ERROR rolls it back too and is raised again; an `Err` of
/// `body` rolls it back and is returned.
pub fn attempt<T>(
    lock_timeout: Option<&std::ffi::CStr>,
    expected: &[PgSqlErrorCode],
    body: impl FnOnce() -> Result<T>,
) -> Result<std::result::Result<T, PgSqlErrorCode>> {
    match enter(lock_timeout, expected, false, body) {
        Ended::Returned(result) => result.map(Ok),
        Ended::Expected(code) => Ok(Err(code)),
        Ended::Failed(message) => Err(Error::Internal(message)),
    }
}

/// Runs `body` in a subtransaction; any PostgreSQL ERROR it raises rolls the subtransaction
/// back and is returned with its message, as is an `Err` of `body`. For the background
/// worker, whose rounds must go on.
pub fn run<T>(body: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    match enter(None, &[], true, body) {
        Ended::Returned(result) => result.map_err(|error| error.to_string()),
        Ended::Expected(_) => unreachable!("no SQLSTATE is expected"),
        Ended::Failed(message) => Err(message),
    }
}

fn enter<T>(
    lock_timeout: Option<&std::ffi::CStr>,
    expected: &[PgSqlErrorCode],
    catch_all: bool,
    body: impl FnOnce() -> Result<T>,
) -> Ended<T> {
    // SAFETY: the memory context and resource owner are restored whatever happens, and the
    // subtransaction is released or rolled back before returning or raising. The
    // lock_timeout set inside it is a saved value, restored when the subtransaction ends.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        let leave = |commit: bool| {
            if commit {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            if let Some(timeout) = lock_timeout {
                pg_sys::set_config_option(
                    c"lock_timeout".as_ptr(),
                    timeout.as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    0,
                    false,
                );
            }
            Ended::Returned(body())
        }))
        .catch_others(|caught| {
            let report = match &caught {
                CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report,
                CaughtError::RustPanic { .. } => {
                    leave(false);
                    caught.rethrow()
                }
            };
            let code = report.sql_error_code();
            if expected.contains(&code) && !lasts_for_the_transaction(report) {
                Ended::Expected(code)
            } else if catch_all {
                Ended::Failed(report.message().to_string())
            } else {
                leave(false);
                caught.rethrow()
            }
        })
        .execute();
        leave(matches!(outcome, Ended::Returned(Ok(_))));
        outcome
    }
}

/// Whether `report` is a serialization failure of serializable snapshot isolation (read/write
/// dependencies with other transactions), which PostgreSQL always details with its reason
/// code; a failure of an update that met a newer row version has no detail. The dependencies
/// stay until the transactions they are with end (a prepared one may take hours), so a retry
/// inside the same transaction would meet them again and again: the caller gets the error,
/// and retries the whole transaction.
fn lasts_for_the_transaction(report: &ErrorReportWithLevel) -> bool {
    report.sql_error_code() == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
        && report.detail().is_some()
}

/// Runs `body` in a subtransaction, again as long as it raises a serialization failure: for
/// a statement that updates a registry row with the latest snapshot, which under REPEATABLE
/// READ and SERIALIZABLE still fails when the row was updated after that snapshot was taken
/// (by the horizon publisher, say). The next attempt's snapshot has that update. A failure of
/// serializable snapshot isolation is raised at once (see [`lasts_for_the_transaction`]).
pub fn again_on_conflict<T>(body: impl Fn() -> Result<T>) -> Result<T> {
    loop {
        if let Ok(done) = attempt(
            None,
            &[PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE],
            &body,
        )? {
            return Ok(done);
        }
    }
}
