//! The extension's advisory-lock key space.
//!
//! Locks are taken with `LockAcquire` on an advisory lock tag whose fourth field is one of
//! [`LockKind`]'s values. SQL's `pg_advisory_*` functions only ever use 1 (bigint key) and 2
//! (two int4 keys) there, so no lock a user's code takes can collide with these. In `pg_locks`
//! they show as `locktype = 'advisory'` with `objsubid` = the kind. All locks are
//! transaction-scoped: they are released at commit or rollback, which keeps the extension safe
//! behind transaction-pooling connection poolers.

use crate::error::{Error, Result};
use pgrx::pg_sys;
use pgrx::{PgSqlErrorCode, PgTryBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum LockKind {
    /// Serializes appends to one application, from id allocation to commit.
    Append = 0x6201,
    /// One (follower, upstream) pair's claim: processors of one follower take turns.
    Claim = 0x6202,
}

/// FNV-1a over the key parts, NUL-separated (text values cannot contain NUL, so distinct
/// tuples give distinct byte strings). Stable across processes and releases, so operators
/// can compute a key from SQL if they need to.
fn key_hash(parts: &[&str]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let separated = parts
        .iter()
        .enumerate()
        .flat_map(|(index, part)| (index > 0).then_some(0u8).into_iter().chain(part.bytes()));
    separated.fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

fn lock_tag(kind: LockKind, parts: &[&str]) -> pg_sys::LOCKTAG {
    let hash = key_hash(parts);
    pg_sys::LOCKTAG {
        // SAFETY: MyDatabaseId is set once at backend start and read-only afterwards.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: (hash >> 32) as u32,
        locktag_field3: hash as u32,
        locktag_field4: kind as u16,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// Takes the transaction-scoped lock of `kind` for `parts`. With `wait` it blocks (subject to
/// lock_timeout and statement_timeout, whose errors name what was waited for) and returns true;
/// without, it returns false at once when another transaction holds the lock.
pub fn acquire(kind: LockKind, parts: &[&str], wait: bool) -> Result<bool> {
    let tag = lock_tag(kind, parts);
    let acquired = PgTryBuilder::new(|| {
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
    })
    .catch_when(PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, |_| {
        Error::LockTimeout(describe(kind, parts)).raise()
    })
    .catch_when(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, |_| {
        Error::Canceled(describe(kind, parts)).raise()
    })
    .execute();
    Ok(acquired)
}

fn describe(kind: LockKind, parts: &[&str]) -> String {
    match (kind, parts) {
        (LockKind::Append, [application]) => {
            format!("the append lock of application \"{application}\"")
        }
        (LockKind::Claim, [follower, upstream]) => {
            format!("the claim of follower \"{follower}\" on upstream \"{upstream}\"")
        }
        _ => format!("{kind:?} lock {parts:?}"),
    }
}

#[cfg(test)]
mod unit {
    use super::key_hash;

    #[test]
    fn separator_keeps_tuples_apart() {
        assert_ne!(key_hash(&["ab", "c"]), key_hash(&["a", "bc"]));
        assert_ne!(key_hash(&["ab"]), key_hash(&["a", "b"]));
        assert_eq!(
            key_hash(&["WorkflowTracker"]),
            key_hash(&["WorkflowTracker"])
        );
    }
}
