//! The extension's advisory-lock key space.
//!
//! Locks are taken with `LockAcquire` on an advisory lock tag keyed by registry ids: the
//! database, an application id (the follower's, for a claim), the upstream's id for a claim (0
//! otherwise), and one of [`LockKind`]'s values in the fourth field. SQL's `pg_advisory_*`
//! functions only ever use 1 (bigint key) and 2 (two int4 keys) there, so no lock a user's code
//! takes can collide with these, and distinct applications never share one. In `pg_locks` they
//! show as `locktype = 'advisory'`, `classid` = the application id, `objid` = the upstream id
//! and `objsubid` = the kind. All locks are transaction-scoped and belong to the top
//! transaction: they are released at its commit or rollback (not at a `ROLLBACK TO
//! SAVEPOINT`), which keeps the extension safe behind transaction-pooling connection poolers.

use crate::error::{reword_wait, Result};
use crate::registry::{Application, ApplicationId};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum LockKind {
    /// Serializes appends to one application, from id allocation to commit.
    Append = 0x6201,
    /// One (follower, upstream) pair's claim: processors of one follower take turns.
    Claim = 0x6202,
}

/// The lock kinds as `pg_locks.objsubid` shows them, for SQL and the tests.
pub const APPEND_LOCK_KIND: i16 = LockKind::Append as i16;
pub const CLAIM_LOCK_KIND: i16 = LockKind::Claim as i16;

fn lock_tag(
    kind: LockKind,
    first: ApplicationId,
    second: Option<ApplicationId>,
) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: MyDatabaseId is set once at backend start and read-only afterwards.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: first.0 as u32,
        // 0 for an application's own locks: registry ids start at 1.
        locktag_field3: second.map_or(0, |second| second.0 as u32),
        locktag_field4: kind as u16,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// Takes the transaction-scoped lock of `kind` on (`first`, `second`). With `wait` it blocks
/// (subject to lock_timeout and statement_timeout, whose errors name what was waited for, as
/// `describe` words it) and returns true; without, it returns false at once when another
/// transaction holds the lock.
pub fn acquire(
    kind: LockKind,
    first: ApplicationId,
    second: Option<ApplicationId>,
    wait: bool,
    describe: impl Fn() -> String + std::panic::RefUnwindSafe,
) -> Result<bool> {
    let tag = lock_tag(kind, first, second);
    let acquired = reword_wait(describe, || {
        let _top = TopTransactionOwner::switch();
        // SAFETY: a valid tag on the stack; ExclusiveLock on the user lock method is what
        // pg_advisory_xact_lock takes; sessionLock = false makes it transaction-scoped.
        let result = unsafe {
            pg_sys::LockAcquire(
                &tag,
                pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
                false,
                !wait,
            )
        };
        result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    });
    Ok(acquired)
}

/// While alive, locks taken belong to the top transaction, so that a subtransaction's
/// rollback does not release them early (a claim is held, and a mode change keeps appends
/// waiting, until the transaction ends).
struct TopTransactionOwner(pg_sys::ResourceOwner);

impl TopTransactionOwner {
    fn switch() -> Self {
        // SAFETY: resource owners of the current transaction; restored on drop (also when a
        // lock wait is cut by an error, as the unwinding drops this guard).
        unsafe {
            let saved = pg_sys::CurrentResourceOwner;
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            TopTransactionOwner(saved)
        }
    }
}

impl Drop for TopTransactionOwner {
    fn drop(&mut self) {
        // SAFETY: restores what switch saved.
        unsafe { pg_sys::CurrentResourceOwner = self.0 };
    }
}

/// Releases one hold of the append lock of application `id` taken by [`append`].
pub fn release_append(application: &Application) {
    let tag = lock_tag(LockKind::Append, application.id, None);
    let _top = TopTransactionOwner::switch();
    // SAFETY: releases a hold this transaction took with the top transaction's owner.
    unsafe { pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false) };
}

/// The append lock of `application` (id `id`), waited for.
pub fn append(application: &Application) -> Result<()> {
    acquire(LockKind::Append, application.id, None, true, || {
        format!("the append lock of application \"{}\"", application.name)
    })?;
    Ok(())
}

/// The lock kinds for the view `biomero.locks` (in schema biomero_internal, not the API).
#[pg_schema]
mod biomero_internal {
    use super::*;

    /// The lock kinds by name, for the view `biomero.locks` (one definition of the numbers).
    #[pg_extern(immutable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn lock_kinds() -> TableIterator<'static, (name!(kind, &'static str), name!(objsubid, i16))> {
        TableIterator::new([("append", APPEND_LOCK_KIND), ("claim", CLAIM_LOCK_KIND)])
    }
}
