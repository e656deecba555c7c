//! The extension's one error type and its mapping to SQLSTATEs.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgSqlErrorCode, PgTryBuilder};
use std::panic::{RefUnwindSafe, UnwindSafe};

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
        version: String,
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

    /// The caller is not a member of the role an application is restricted to.
    #[error("permission denied to {action} application \"{application}\"")]
    Restricted {
        action: &'static str,
        application: String,
        role: String,
    },

    /// The caller lacks a privilege a function needs.
    #[error("{0}")]
    PermissionDenied(String),

    /// No notification id is left for an application.
    #[error(
        "application \"{0}\" has no notification ids left: the next would exceed 9223372036854775807"
    )]
    IdsExhausted(String),

    /// Something the call needs is not in place (an update, a setting, a mode).
    #[error("{0}")]
    NotInPrerequisiteState(String),

    /// A fixed capacity of the shared memory is used up.
    #[error("{0}")]
    CapacityExceeded(String),

    /// A request the extension does not support.
    #[error("{0}")]
    NotSupported(String),

    /// A write on a hot standby.
    #[error("cannot run {0} during recovery: the server is a hot standby")]
    ReadOnly(&'static str),

    /// A function of an older release called before `ALTER EXTENSION … UPDATE`.
    #[error("{0} needs the extension's update: run ALTER EXTENSION biomero_tracking UPDATE")]
    UpdateRequired(&'static str),

    /// A condition the code rules out; reaching it is a defect.
    #[error("internal error: {0}")]
    Internal(String),
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
            Error::Restricted { .. } | Error::PermissionDenied(_) => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            Error::IdsExhausted(_) => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Error::NotInPrerequisiteState(_) | Error::UpdateRequired(_) => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Error::CapacityExceeded(_) => PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            Error::NotSupported(_) => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            Error::ReadOnly(_) => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            Error::Internal(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Error::Restricted { role, .. } => Some(format!(
                "Only members of role \"{role}\" may append to, record positions of or claim as \
                 this application."
            )),
            _ => None,
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

    /// Raises this error as a PostgreSQL ERROR; never returns. Only for places that cannot
    /// return a `Result` (PgTry handlers and callbacks).
    pub fn raise(self) -> ! {
        ErrorReport::from(self).report(pgrx::PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

impl From<Error> for ErrorReport {
    fn from(error: Error) -> Self {
        let (detail, hint) = (error.detail(), error.hint());
        let mut report = ErrorReport::new(error.sqlstate(), error.to_string(), "biomero_tracking");
        if let Some(detail) = detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = hint {
            report = report.set_hint(hint);
        }
        report
    }
}

/// Runs `body`, a wait for a lock; a wait cut by `lock_timeout` or `statement_timeout` (or a
/// cancel) is raised again as ours, naming what was waited for (`describe()`).
pub fn reword_wait<T>(
    describe: impl Fn() -> String + RefUnwindSafe,
    body: impl FnOnce() -> T + UnwindSafe,
) -> T {
    PgTryBuilder::new(body)
        .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, |_| {
            Error::LockTimeout(describe()).raise()
        })
        .catch_when(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, |_| {
            Error::Canceled(describe()).raise()
        })
        .execute()
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
