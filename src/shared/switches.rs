//! Mode changes wait for their transaction's commit: `set_append_mode` notes one here (the
//! caller holds the application's append lock until then), and the transaction callbacks
//! apply it at commit, drop it at abort or with the subtransaction that asked for it, and end
//! the transaction's holding of concurrent ids (`holders.rs`). `PREPARE TRANSACTION` of a
//! transaction with either is refused: a prepared transaction ends in another session.

use super::entries::{mode_code, EntryRef};
use super::Shared;
use crate::error::{Error, Result};
use crate::registry::Mode;
use pgrx::pg_sys;
use std::cell::Cell;
use std::sync::atomic::Ordering::SeqCst;

/// Mode changes one transaction can make.
const PENDING: usize = 4;

#[derive(Clone, Copy)]
struct Pending {
    entry: i32,
    mode: u32,
    /// Ids handed out after the change are above it.
    floor: i64,
    /// The (sub)transaction nesting level that asked for it: it goes if that one aborts.
    level: i32,
}

const NO_CHANGE: Pending = Pending {
    entry: -1,
    mode: 0,
    floor: 0,
    level: 0,
};

thread_local! {
    /// Mode changes of the current transaction, applied at its commit.
    static PENDING_CHANGES: Cell<[Pending; PENDING]> = const { Cell::new([NO_CHANGE; PENDING]) };
}

/// Makes `entry` switch to `mode` when the current transaction commits, with ids handed out
/// from then on above `floor`. The caller holds the append lock until then.
pub fn switch_at_commit(entry: &EntryRef, mode: Mode, floor: i64) -> Result<()> {
    let mut pending = PENDING_CHANGES.with(Cell::get);
    let at = pending
        .iter()
        .position(|change| change.entry == entry.index as i32 || change.entry < 0)
        .ok_or_else(|| {
            Error::CapacityExceeded(format!(
                "a transaction can change the append mode of at most {PENDING} applications"
            ))
        })?;
    let floor = match pending[at] {
        change if change.entry == entry.index as i32 => floor.max(change.floor),
        _ => floor,
    };
    pending[at] = Pending {
        entry: entry.index as i32,
        mode: mode_code(mode),
        floor,
        // SAFETY: reads the transaction state.
        level: unsafe { pg_sys::GetCurrentTransactionNestLevel() },
    };
    PENDING_CHANGES.with(|cell| cell.set(pending));
    Ok(())
}

/// Whether the current transaction changes the append mode of `entry` at its commit.
pub fn switching_here(entry: &EntryRef) -> bool {
    PENDING_CHANGES
        .with(Cell::get)
        .iter()
        .any(|change| change.entry == entry.index as i32)
}

impl EntryRef {
    /// A serialized append of the current transaction used ids up to `last`: if the
    /// transaction also switches the application to concurrent mode, the ids handed out
    /// after its commit start above them.
    pub fn appended_serialized(&self, last: i64) {
        let mut pending = PENDING_CHANGES.with(Cell::get);
        for change in pending
            .iter_mut()
            .filter(|change| change.entry == self.index as i32)
        {
            change.floor = change.floor.max(last);
        }
        PENDING_CHANGES.with(|cell| cell.set(pending));
    }
}

pub(super) fn install_callbacks() {
    // SAFETY: registers static callbacks, in the postmaster (inherited by every backend).
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_end), std::ptr::null_mut());
    }
}

/// At the end of every transaction: a committed transaction's concurrent appends become
/// recent commits and its mode changes apply; an aborted one's holding goes. Runs after the
/// commit is visible to new snapshots and before locks are released, and must not fail.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _argument: *mut std::ffi::c_void,
) {
    let Some(shared) = super::shared() else {
        return;
    };
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => finish(&shared, true),
        pg_sys::XactEvent::XACT_EVENT_ABORT => finish(&shared, false),
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            let changes = PENDING_CHANGES
                .with(Cell::get)
                .iter()
                .any(|change| change.entry >= 0);
            if shared.holding_here() || changes {
                Error::NotSupported(
                    "cannot PREPARE a transaction that appended in concurrent mode or changed an \
                     append mode"
                        .into(),
                )
                .raise();
            }
        }
        _ => {}
    }
}

/// A mode change asked for in a subtransaction goes with it when it aborts, and belongs to its
/// parent when it commits. (The append lock it holds stays to the end of the top transaction.)
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    _subtransaction: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _argument: *mut std::ffi::c_void,
) {
    let aborted = match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => true,
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => false,
        _ => return,
    };
    // SAFETY: reads the transaction state (still the ending subtransaction's level).
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    let mut pending = PENDING_CHANGES.with(Cell::get);
    for change in pending
        .iter_mut()
        .filter(|change| change.entry >= 0 && change.level >= level)
    {
        if aborted {
            *change = NO_CHANGE;
        } else {
            change.level = level - 1;
        }
    }
    PENDING_CHANGES.with(|cell| cell.set(pending));
}

fn finish(shared: &Shared, committed: bool) {
    let mut touched = shared.end_holding(committed);
    let pending = PENDING_CHANGES.with(|cell| cell.replace([NO_CHANGE; PENDING]));
    if committed {
        for change in pending.iter().filter(|change| change.entry >= 0) {
            let entry = shared.entry(change.entry as usize);
            entry.taken.fetch_max(change.floor, SeqCst);
            entry.mode.store(change.mode, SeqCst);
            entry.switches.fetch_add(1, SeqCst);
            touched = true;
        }
    }
    if touched {
        // The horizon may have advanced: the publisher announces it.
        shared.wake_or_start_publisher();
    }
}
