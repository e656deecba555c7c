//! Notification-id allocation: the one boundary every append goes through, with one strategy
//! per append mode.
//!
//! * **serialized** (the default): the application's append lock, held to commit, then the
//!   highest committed id plus one. Ids become visible in id order and a rolled-back append
//!   hands its ids to the next writer, so ids are gapless. The max() is one descent of the
//!   primary-key index, read with the latest snapshot after the lock, so it sees the previous
//!   holder's commit at every isolation level.
//! * **concurrent**: ids handed out from shared memory; writers never wait
//!   for each other, ids may have holes (rolled-back appends), and readers are held to the
//!   horizon (`shared.rs`).
//!
//! Switching modes is safe under load: a serialized writer waits (with the lock) until every
//! transaction still holding concurrent ids has ended, and switching to concurrent hands out
//! ids above everything committed (this transaction's own serialized appends included).

use crate::catalog;
use crate::error::{Error, Result};
use crate::locks;
use crate::registry::{self, Application, Mode};
use crate::shared::{self, Enlisted, EntryRef};
use crate::statements::{self, Snapshot};
use crate::{notify, subtransaction};
use pgrx::pg_sys;
use pgrx::IntoDatum;

/// Ids reserved for the current transaction: `first` and the following ones.
pub struct Reserved {
    pub first: i64,
    /// The strategy that reserved them.
    pub mode: Mode,
}

/// Reserves `count` consecutive ids of `application` for the current transaction; the caller
/// inserts them before anything else appends.
pub fn reserve(application: &Application, count: i64) -> Result<Reserved> {
    let name = application.name.as_str();
    let Some(shared) = shared::shared() else {
        if application.mode == Mode::Concurrent {
            return Err(not_preloaded(name));
        }
        locks::append(application)?;
        return after_head(application, count);
    };
    let relation = catalog::events()?;
    let entry = match application.mode {
        Mode::Concurrent => Some(shared.find_or_create(relation, application.id)?),
        Mode::Serialized => shared.find(relation, application.id),
    };
    if let Some(entry) = &entry {
        ready(application, entry)?;
        if entry.mode() == Mode::Concurrent || entry.held_here()? {
            if let Enlisted::Concurrent = entry.enlist()? {
                return concurrent(name, entry, count);
            }
        }
    }
    locks::append(application)?;
    // Looked up again under the lock: a switch to concurrent may have committed meanwhile.
    let Some(entry) = shared.find(relation, application.id) else {
        return after_head(application, count);
    };
    ready(application, &entry)?;
    if entry.mode() == Mode::Concurrent {
        if let Enlisted::Concurrent = entry.enlist()? {
            return concurrent(name, &entry, count);
        }
    }
    wait_until_settled(&entry);
    let reserved = after_head(application, count)?;
    // A switch to concurrent mode by this same transaction hands out ids above these.
    entry.appended_serialized(reserved.first + (count - 1));
    Ok(reserved)
}

fn not_preloaded(name: &str) -> Error {
    Error::NotInPrerequisiteState(format!(
        "application \"{name}\" is in concurrent append mode, which needs biomero_tracking in \
         shared_preload_libraries: add it and restart, or run \
         biomero.set_append_mode('{name}', 'serialized')"
    ))
}

/// Initializes `entry` from the committed state if no one has since the server started.
pub fn ready(application: &Application, entry: &EntryRef) -> Result<()> {
    let name = application.name.as_str();
    if entry.is_ready() {
        return Ok(());
    }
    // The append lock waits out serialized appends and mode changes in progress; no
    // concurrent append can have begun, as none does before the entry is ready.
    locks::append(application)?;
    if !entry.is_ready() {
        let committed = registry::find(name, Snapshot::Latest)?
            .ok_or_else(|| Error::Internal(format!("application \"{name}\" is not registered")))?;
        // Above everything committed and everything standbys may have read: the horizon
        // published before a restart can be above the committed ids when the highest ones
        // were rolled back.
        let floor = head(name)?
            .unwrap_or(0)
            .max(committed.published_horizon.unwrap_or(0));
        entry.initialize(committed.mode, floor);
    }
    // Held only for the initialization (this hold; one taken before stays): concurrent
    // writers do not keep it to their commit.
    locks::release_append(application);
    Ok(())
}

fn concurrent(name: &str, entry: &EntryRef, count: i64) -> Result<Reserved> {
    let first = entry
        .take(count)
        .ok_or_else(|| Error::IdsExhausted(name.to_string()))?;
    shared::ensure_publisher()?;
    Ok(Reserved {
        first,
        mode: Mode::Concurrent,
    })
}

/// The serialized strategy's ids, under the append lock: right after the highest committed.
fn after_head(application: &Application, count: i64) -> Result<Reserved> {
    let name = application.name.as_str();
    let head = head(name)?.unwrap_or(0);
    if application.published_horizon.is_some() {
        if notify::NOTIFY.get() || shared::shared().is_none() {
            clear_published_horizon(application, head)?;
        } else {
            // This append does not notify: the publisher takes the horizon back and
            // announces what it held back.
            shared::ensure_publisher()?;
        }
    }
    head.checked_add(count)
        .ok_or_else(|| Error::IdsExhausted(name.to_string()))?;
    Ok(Reserved {
        first: head + 1,
        mode: Mode::Serialized,
    })
}

/// Standbys no longer need a horizon for the application: nothing is in flight. Ids up to
/// `head` above the horizon published were concurrent ones whose announcement may not have
/// been sent yet: they are announced with this append.
fn clear_published_horizon(application: &Application, head: i64) -> Result<()> {
    let name = application.name.as_str();
    let cleared = subtransaction::again_on_conflict(|| {
        statements::first(
            &statements::CLEAR_HORIZON,
            &[application.id.datum()],
            Snapshot::Latest,
            |row| row.get::<i64>(1),
        )
    })?
    .flatten();
    registry::forget_published_horizon(name);
    if let Some(published) = cleared {
        if head > published {
            notify::appended(name, published + 1, head);
        }
    }
    Ok(())
}

/// Waits until no transaction holds concurrent ids of the application: each holder is waited
/// for on its transaction lock, so deadlocks are detected.
fn wait_until_settled(entry: &EntryRef) {
    loop {
        let (holders, enlisting) = entry.holders();
        if holders.is_empty() && !enlisting {
            return;
        }
        for xid in holders {
            // SAFETY: waits on another transaction's lock (never our own: this transaction
            // holds no concurrent ids, or it would have appended concurrently).
            unsafe {
                pg_sys::XactLockTableWait(
                    pg_sys::TransactionId::from(xid as u32),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    pg_sys::XLTW_Oper::XLTW_None,
                )
            };
        }
        if enlisting {
            // A writer between counting itself and publishing its slot: a moment.
            // SAFETY: sleeps on this backend's latch, waking for interrupts.
            unsafe {
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH)
                        as i32,
                    1,
                    pg_sys::PG_WAIT_EXTENSION,
                );
                pg_sys::ResetLatch(pg_sys::MyLatch);
            }
            pgrx::check_for_interrupts!();
        }
    }
}

/// The highest committed id of `name`, read with the latest snapshot.
pub fn head(name: &str) -> Result<Option<i64>> {
    Ok(statements::first(
        &statements::HEAD,
        &[name.into_datum()],
        Snapshot::Latest,
        |row| row.get::<i64>(1),
    )?
    .flatten())
}
