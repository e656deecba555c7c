//! The extension's one error type and its mapping to SQLSTATEs.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgSqlErrorCode, PgTryBuilder};
use std::panic::{RefUnwindSafe, UnwindSafe};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required argument (or array element) was NULL.
    #[error("{0} must not be NULL")]
    Null(String),

    /// An argument is present but outside its documented domain.
    #[error("{0}")]
    InvalidArgument(String),

    /// A second event for the same aggregate version: optimistic concurrency, not a race.
    #[error(
        "application \"{application}\" already has version {version} of aggregate {originator_id}"
    )]
    VersionConflict {
        application: String,
        originator_id: String,
        version: i64,
    },

    /// The client transaction's snapshot predates a concurrent commit it must build on.
    #[error("{0}; retry the transaction")]
    SerializationFailure(String),

    /// A wait for one of the extension's locks was cut by lock_timeout.
    #[error("lock timeout expired while waiting for {0}")]
    LockTimeout(String),

    /// A wait for one of the extension's locks was cut by statement_timeout or a cancel.
    #[error("canceling statement while waiting for {0}")]
    Canceled(String),

    /// A function of an older release called before `ALTER EXTENSION … UPDATE`.
    #[error("{0} needs the extension's update: run ALTER EXTENSION biomero_tracking UPDATE")]
    UpdateRequired(&'static str),

    #[error("internal SPI error: {0}")]
    Spi(#[from] pgrx::spi::Error),
}

impl Error {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Error::Null(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Error::InvalidArgument(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Error::VersionConflict { .. } => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            Error::SerializationFailure(_) => PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            Error::LockTimeout(_) => PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            Error::Canceled(_) => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            Error::UpdateRequired(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Error::Spi(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Error::VersionConflict { .. } => Some(
                "Another command already stored this aggregate version: reload the aggregate and decide again.",
            ),
            Error::SerializationFailure(_) => {
                Some("Roll back and run the whole transaction again; nothing of it was kept.")
            }
            _ => None,
        }
    }

    /// Raises this error as a PostgreSQL ERROR; never returns.
    pub fn raise(self) -> ! {
        ErrorReport::from(self).report(pgrx::PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

impl From<Error> for ErrorReport {
    fn from(error: Error) -> Self {
        let hint = error.hint();
        let report = ErrorReport::new(error.sqlstate(), error.to_string(), "biomero_tracking");
        match hint {
            Some(hint) => report.set_hint(hint),
            None => report,
        }
    }
}

/// Runs `body`; a serialization failure raised inside it (a row committed after the
/// transaction's snapshot, under REPEATABLE READ or SERIALIZABLE) is raised again as ours,
/// saying what conflicted (`conflict()`) and that the transaction should be retried.
pub fn reword_serialization_failure<T>(
    conflict: impl Fn() -> String + UnwindSafe + RefUnwindSafe,
    body: impl FnOnce() -> T + UnwindSafe,
) -> T {
    PgTryBuilder::new(body)
        .catch_when(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            move |_| Error::SerializationFailure(conflict()).raise(),
        )
        .execute()
}
