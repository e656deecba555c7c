//! The holders of concurrent ids: per backend [`SLOTS_PER_BACKEND`] slots, one for each
//! application the current transaction appends to concurrently, with the lowest id it took
//! (and its transaction id and start, for waiting on it and for the operator view).
//!
//! Ordering (all atomics SeqCst): a writer assigns its transaction id, counts itself in the
//! entry's `in_flight`, checks the mode, publishes its slot with `lowest` one above `taken`,
//! then takes ids by raising `taken`. At its end (after a commit is visible, before its locks
//! are released) it records the commit among the recent ones (`horizon.rs`), then clears its
//! slot and uncounts itself. A reader reads mode, `taken`, `in_flight`, the slots and then
//! the recent commits: any id taken after the reader's slot scan is above every id its
//! snapshot holds.

use super::entries::{EntryRef, CONCURRENT};
use super::horizon::Commit;
use super::Shared;
use crate::error::{Error, Result};
use crate::registry::ApplicationId;
use pgrx::pg_sys::{self, Oid};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::SeqCst};

/// Applications a transaction can append to concurrently at once.
pub const SLOTS_PER_BACKEND: usize = 8;

#[repr(C)]
pub struct Slot {
    /// The entry's index, -1 when free.
    entry: AtomicI32,
    xid: AtomicU64,
    lowest: AtomicI64,
    started: AtomicI64,
    pid: AtomicI32,
}

/// Sets up `count` slots of a new segment: all free.
///
/// # Safety
/// `slots` points to `count` zeroed slots of the segment being set up.
pub(super) unsafe fn initialize(slots: *mut Slot, count: usize) {
    for index in 0..count {
        // SAFETY: within the array, as the caller promises.
        unsafe { (*slots.add(index)).entry.store(-1, SeqCst) };
    }
}

/// What [`EntryRef::enlist`] found.
pub enum Enlisted {
    /// This transaction holds ids of the application: take more.
    Concurrent,
    /// The application is serialized (again): append the serialized way.
    Serialized,
}

impl EntryRef {
    fn my_slot(&self) -> Result<Option<&'static Slot>> {
        Ok(self
            .shared
            .my_slots()?
            .iter()
            .find(|slot| slot.entry.load(SeqCst) == self.index as i32))
    }

    /// Whether the current transaction holds ids of this application taken concurrently.
    pub fn held_here(&self) -> Result<bool> {
        Ok(self.my_slot()?.is_some())
    }

    /// The lowest id of this application the current transaction holds, if it holds any.
    pub fn lowest_held_here(&self) -> Result<Option<i64>> {
        Ok(self.my_slot()?.map(|slot| slot.lowest.load(SeqCst)))
    }

    /// Enlists the current transaction among the holders of this application's ids, unless
    /// the application is serialized; a transaction already enlisted stays concurrent.
    pub fn enlist(&self) -> Result<Enlisted> {
        if self.held_here()? {
            return Ok(Enlisted::Concurrent);
        }
        let entry = self.entry();
        let Some(slot) = self
            .shared
            .my_slots()?
            .iter()
            .find(|slot| slot.entry.load(SeqCst) < 0)
        else {
            return Err(Error::CapacityExceeded(format!(
                "a transaction can append to at most {SLOTS_PER_BACKEND} applications in \
                 concurrent mode"
            )));
        };
        // SAFETY: assigns the top-level transaction id (writes are never parallel).
        let (xid, started) = unsafe {
            (
                pg_sys::GetTopFullTransactionId().value,
                pg_sys::GetCurrentTransactionStartTimestamp(),
            )
        };
        entry.in_flight.fetch_add(1, SeqCst);
        if entry.mode.load(SeqCst) != CONCURRENT {
            entry.in_flight.fetch_sub(1, SeqCst);
            return Ok(Enlisted::Serialized);
        }
        slot.xid.store(xid, SeqCst);
        slot.started.store(started, SeqCst);
        // SAFETY: MyProcPid is set at backend start.
        slot.pid.store(unsafe { pg_sys::MyProcPid }, SeqCst);
        // Every id this transaction takes is above what is taken now. (When bigint's largest
        // id is taken, none can be, and the lower bound errs low.)
        slot.lowest
            .store(entry.taken.load(SeqCst).saturating_add(1), SeqCst);
        slot.entry.store(self.index as i32, SeqCst);
        Ok(Enlisted::Concurrent)
    }

    /// Transaction ids of the transactions holding ids of this application, and whether some
    /// are still enlisting (counted but no slot published yet).
    pub fn holders(&self) -> (Vec<u64>, bool) {
        let entry = self.entry();
        let counted = entry.in_flight.load(SeqCst);
        let xids: Vec<u64> = self
            .shared
            .slots()
            .iter()
            .filter(|slot| slot.entry.load(SeqCst) == self.index as i32)
            .map(|slot| slot.xid.load(SeqCst))
            .collect();
        let enlisting = counted as usize > xids.len();
        (xids, enlisting)
    }

    /// Whether a transaction is between counting itself among the holders and publishing its
    /// slot: it takes its ids next, above what is taken now, and its commit ends a holding
    /// that [`horizon`](EntryRef::horizon) cannot see yet.
    pub fn enlisting(&self) -> bool {
        self.holders().1
    }

    /// The lowest id of every transaction holding ids of this application.
    pub(super) fn lowest_ids_held(&self) -> impl Iterator<Item = i64> + '_ {
        let index = self.index as i32;
        let counted = self.entry().in_flight.load(SeqCst) > 0;
        self.shared
            .slots()
            .iter()
            .filter(move |slot| counted && slot.entry.load(SeqCst) == index)
            .filter_map(move |slot| {
                let lowest = slot.lowest.load(SeqCst);
                // Still this application's when read: the slot was not reused meanwhile.
                (slot.entry.load(SeqCst) == index).then_some(lowest)
            })
    }
}

/// One transaction holding concurrent ids, for the operator view.
pub struct Holder {
    pub application: ApplicationId,
    pub pid: i32,
    pub started: i64,
    pub lowest: i64,
}

impl Shared {
    /// Every transaction holding concurrent ids of this database's installation `relation`.
    pub fn holders_of(&self, relation: Oid) -> Vec<Holder> {
        let mut found = Vec::new();
        for slot in self.slots() {
            let index = slot.entry.load(SeqCst);
            if index < 0 {
                continue;
            }
            let holder = Holder {
                application: EntryRef {
                    shared: *self,
                    index: index as usize,
                }
                .application(),
                pid: slot.pid.load(SeqCst),
                started: slot.started.load(SeqCst),
                lowest: slot.lowest.load(SeqCst),
            };
            if slot.entry.load(SeqCst) == index && self.is_of(index as usize, relation) {
                found.push(holder);
            }
        }
        found
    }

    /// At the end of this backend's transaction: a commit of its concurrent appends becomes a
    /// recent commit of each application, then its slots are cleared. Whether it held any.
    pub(super) fn end_holding(&self, committed: bool) -> bool {
        let mut held = false;
        let Ok(slots) = self.my_slots() else {
            return false;
        };
        for slot in slots {
            let index = slot.entry.load(SeqCst);
            if index < 0 {
                continue;
            }
            if committed {
                self.record_commit(
                    index as usize,
                    Commit {
                        xid: slot.xid.load(SeqCst),
                        lowest: slot.lowest.load(SeqCst),
                        // SAFETY: reads the next transaction id (a shared lock, never an
                        // error).
                        next: unsafe { pg_sys::ReadNextFullTransactionId().value },
                    },
                );
            }
            slot.entry.store(-1, SeqCst);
            self.entry(index as usize).in_flight.fetch_sub(1, SeqCst);
            held = true;
        }
        held
    }

    /// Whether this backend's transaction holds concurrent ids of any application.
    pub(super) fn holding_here(&self) -> bool {
        self.my_slots()
            .map(|slots| slots.iter().any(|slot| slot.entry.load(SeqCst) >= 0))
            .unwrap_or(false)
    }
}
