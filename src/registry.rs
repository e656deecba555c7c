//! The application registry (`biomero.application_registry`): one row per application name,
//! with a small integer id assigned once, its append mode, the role it is restricted to and the
//! horizon published for standbys.
//!
//! The id is what the extension's locks and shared memory are keyed by, so distinct names never
//! share a lock. Followers and upstreams are applications too: a claim is keyed by the pair of
//! ids. Writers register names on first use; readers only look them up.

use crate::error::{Error, Result};
use crate::statements::{self, Snapshot};
use pgrx::pg_sys::{self, Oid};
use pgrx::{IntoDatum, PgSqlErrorCode, PgTryBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serialized,
    Concurrent,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "serialized" => Some(Mode::Serialized),
            "concurrent" => Some(Mode::Concurrent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Serialized => "serialized",
            Mode::Concurrent => "concurrent",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Application {
    pub id: i32,
    /// The mode as committed in the registry; shared memory has the live one.
    pub mode: Mode,
    pub restricted_to: Option<Oid>,
    pub published_horizon: Option<i64>,
}

/// The registry row of `name` as `snapshot` sees it.
pub fn find(name: &str, snapshot: Snapshot) -> Result<Option<Application>> {
    statements::first(
        &statements::FIND_APPLICATION,
        &[name.into_datum()],
        snapshot,
        |row| -> Result<Application> {
            let mode: String = row.get(2).unwrap_or_default();
            Ok(Application {
                id: row
                    .get::<i32>(1)
                    .ok_or_else(|| Error::Internal("application_id is NULL".into()))?,
                mode: Mode::parse(&mode)
                    .ok_or_else(|| Error::Internal(format!("unknown append mode {mode:?}")))?,
                restricted_to: row.get::<Oid>(3),
                published_horizon: row.get::<i64>(4),
            })
        },
    )?
    .transpose()
}

/// The registry row of `name`, registering it first if it is new. Reads the latest committed
/// state, so a name registered after the caller's snapshot is found, not registered twice; a
/// registration still in progress elsewhere is waited for.
pub fn register(name: &str) -> Result<Application> {
    if let Some(application) = find(name, Snapshot::Latest)? {
        return Ok(application);
    }
    // A first use of the name by a transaction that has not committed yet is waited for (one
    // name, one id); a wait cut by lock_timeout or statement_timeout says so.
    let describe = || format!("the registration of application \"{name}\" by another transaction");
    PgTryBuilder::new(|| {
        statements::execute(
            &statements::REGISTER_APPLICATION,
            &[name.into_datum()],
            Snapshot::Latest,
            |_| (),
        )
    })
    .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, |_| {
        Error::LockTimeout(describe()).raise()
    })
    .catch_when(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, |_| {
        Error::Canceled(describe()).raise()
    })
    .execute()?;
    find(name, Snapshot::Latest)?
        .ok_or_else(|| Error::Internal(format!("application \"{name}\" was not registered")))
}

/// Like [`register`], but when another transaction is registering the name at this moment
/// (its first use, not committed yet), returns None at once instead of waiting for it.
pub fn register_unless_busy(name: &str) -> Result<Option<Application>> {
    if let Some(application) = find(name, Snapshot::Latest)? {
        return Ok(Some(application));
    }
    let inserted = without_waiting(|| {
        statements::execute(
            &statements::REGISTER_APPLICATION,
            &[name.into_datum()],
            Snapshot::Latest,
            |_| (),
        )
        .map(|_| ())
    })?;
    if inserted.is_none() {
        return Ok(None);
    }
    find(name, Snapshot::Latest)
}

/// Runs `body` in a subtransaction with lock waits cut at once; None when it would have had to
/// wait for a lock (the subtransaction is rolled back, the caller's transaction goes on). Any
/// other error rolls the subtransaction back too and is raised again.
fn without_waiting<T>(body: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    // SAFETY: the subtransaction pattern of PL/pgSQL's exception blocks: the memory context
    // and resource owner are restored whatever happens, and the subtransaction is released
    // or rolled back before returning or raising. The lock_timeout set inside it is a saved
    // value, restored when the subtransaction ends.
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
            pg_sys::set_config_option(
                c"lock_timeout".as_ptr(),
                c"1".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            Some(body())
        }))
        .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, |_| None)
        .catch_others(|caught| {
            leave(false);
            caught.rethrow()
        })
        .execute();
        leave(matches!(outcome, Some(Ok(_))));
        outcome.transpose()
    }
}
