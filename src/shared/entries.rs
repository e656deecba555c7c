//! The table of per-application entries: an open-addressing hash table keyed by (database,
//! the installation's events table, registry id), probed linearly. An entry is made on an
//! application's first concurrent append or mode change since the server started, and given
//! back (a tombstone that lookups probe past) only when the table is full and nobody can use
//! it any more.

use super::horizon::Commits;
use super::{database, Shared};
use crate::catalog;
use crate::error::{Error, Result};
use crate::registry::{ApplicationId, Mode};
use pgrx::pg_sys::{self, Oid};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering::SeqCst};

const FREE: u32 = 0;
const NEW: u32 = 1;
const READY: u32 = 2;
/// Given back: lookups probe past it, a new application may take it.
const RECLAIMED: u32 = 3;

pub(super) const SERIALIZED: u32 = 0;
pub(super) const CONCURRENT: u32 = 1;

#[repr(C)]
pub struct Entry {
    database: AtomicU32,
    relation: AtomicU32,
    application: AtomicI32,
    state: AtomicU32,
    pub(super) mode: AtomicU32,
    /// The highest id handed out in concurrent mode (or the floor the next one starts above).
    /// Kept as the last id taken rather than the next one, so that bigint's largest id can
    /// be handed out too.
    pub(super) taken: AtomicI64,
    /// Transactions holding ids of the application (counted before their slot is published).
    pub(super) in_flight: AtomicU32,
    /// Mode changes committed: the publisher republishes an application whose mode changed,
    /// whatever it remembers having published.
    pub(super) switches: AtomicU32,
    pub(super) commits_lock: pg_sys::slock_t,
    pub(super) commits: Commits,
}

/// Sets up `capacity` entries of a new segment (all zero: free).
///
/// # Safety
/// `entries` points to `capacity` zeroed entries of the segment being set up.
pub(super) unsafe fn initialize(entries: *mut Entry, capacity: usize) {
    for index in 0..capacity {
        // SAFETY: within the array, as the caller promises.
        unsafe { pg_sys::SpinLockInit(&raw mut (*entries.add(index)).commits_lock) };
    }
}

pub(super) fn mode_code(mode: Mode) -> u32 {
    match mode {
        Mode::Serialized => SERIALIZED,
        Mode::Concurrent => CONCURRENT,
    }
}

/// The concurrent-mode entry of application `application` in this database: None without
/// the preloaded library or when the application has none.
pub fn entry_of(application: ApplicationId) -> Result<Option<EntryRef>> {
    let Some(shared) = super::shared() else {
        return Ok(None);
    };
    Ok(shared.find(catalog::events()?, application))
}

/// Whether database `oid` exists (pg_database is shared by every database).
fn database_exists(oid: u32) -> bool {
    // SAFETY: a syscache lookup inside the caller's transaction.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::DATABASEOID as i32,
            pg_sys::Datum::from(oid),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

impl Shared {
    pub(super) fn entry(&self, index: usize) -> &'static Entry {
        debug_assert!(index < self.capacity);
        // SAFETY: index < capacity within the segment, which lives as long as the process.
        unsafe { &*self.entries().add(index) }
    }

    /// The entry as a pointer, for its spinlock-guarded `commits`.
    pub(super) fn entry_mut(&self, index: usize) -> *mut Entry {
        // SAFETY: as `entry`; callers hold the entry's spinlock for the fields they touch.
        unsafe { self.entries().add(index) }
    }

    fn home(&self, relation: Oid, application: ApplicationId) -> usize {
        let key = (u64::from(database()) << 32 ^ u64::from(relation.to_u32()))
            ^ (application.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) as usize % self.capacity
    }

    /// The entry of `application` in this database's installation `relation`, if any.
    pub fn find(&self, relation: Oid, application: ApplicationId) -> Option<EntryRef> {
        let home = self.home(relation, application);
        for step in 0..self.capacity {
            let index = (home + step) % self.capacity;
            let entry = self.entry(index);
            match entry.state.load(SeqCst) {
                FREE => return None,
                RECLAIMED => {}
                _ if entry.database.load(SeqCst) == database()
                    && entry.relation.load(SeqCst) == relation.to_u32()
                    && entry.application.load(SeqCst) == application.0 =>
                {
                    return Some(EntryRef {
                        shared: *self,
                        index,
                    });
                }
                _ => {}
            }
        }
        None
    }

    /// The entry, made (not yet initialized) when missing. When every entry is taken, the
    /// entries of dropped databases and of this database's dropped installations are given
    /// back first.
    pub fn find_or_create(&self, relation: Oid, application: ApplicationId) -> Result<EntryRef> {
        if let Some(entry) = self.find(relation, application) {
            return Ok(entry);
        }
        for reclaimed in [false, true] {
            if reclaimed {
                self.reclaim(relation)?;
            }
            let _lock = self.lock();
            if let Some(entry) = self.find(relation, application) {
                return Ok(entry);
            }
            let home = self.home(relation, application);
            for step in 0..self.capacity {
                let index = (home + step) % self.capacity;
                let state = self.entry(index).state.load(SeqCst);
                if state == FREE || state == RECLAIMED {
                    return Ok(self.take_entry(index, relation, application));
                }
            }
        }
        Err(Error::CapacityExceeded(format!(
            "biomero.max_applications ({}) applications already have append state in shared \
             memory; raise it and restart the server",
            self.capacity
        )))
    }

    /// Makes the free entry `index` the (new) entry of `application`; under the lock.
    fn take_entry(&self, index: usize, relation: Oid, application: ApplicationId) -> EntryRef {
        let entry = self.entry_mut(index);
        // SAFETY: a free or reclaimed entry, which no backend uses: nothing holds its ids, no
        // lookup matches it, and the lock keeps other creators out. The spinlock guards
        // `commits`, whose empty state is all zeros (plain integers).
        unsafe {
            pg_sys::SpinLockAcquire(&raw mut (*entry).commits_lock);
            (*entry).commits = std::mem::zeroed();
            pg_sys::SpinLockRelease(&raw mut (*entry).commits_lock);
            let entry = &*entry;
            entry.taken.store(0, SeqCst);
            entry.in_flight.store(0, SeqCst);
            entry.switches.store(0, SeqCst);
            entry.database.store(database(), SeqCst);
            entry.relation.store(relation.to_u32(), SeqCst);
            entry.application.store(application.0, SeqCst);
            entry.mode.store(SERIALIZED, SeqCst);
            entry.state.store(NEW, SeqCst);
        }
        EntryRef {
            shared: *self,
            index,
        }
    }

    /// Gives back the entries nobody can use any more: those of databases that no longer
    /// exist, and those of this database that belong to an installation of the extension
    /// other than `relation` (the extension was dropped and created again). No transaction
    /// holds their ids: a dropped database has no sessions, and a dropped installation's
    /// tables are gone, so its appends cannot commit.
    fn reclaim(&self, relation: Oid) -> Result<()> {
        let mut databases: Vec<u32> = (0..self.capacity)
            .map(|index| self.entry(index))
            .filter(|entry| matches!(entry.state.load(SeqCst), NEW | READY))
            .map(|entry| entry.database.load(SeqCst))
            .filter(|&oid| oid != database())
            .collect();
        databases.sort_unstable();
        databases.dedup();
        // Catalog lookups, outside the lock.
        let dropped: Vec<u32> = databases
            .into_iter()
            .filter(|&oid| !database_exists(oid))
            .collect();
        let _lock = self.lock();
        for index in 0..self.capacity {
            let entry = self.entry(index);
            if !matches!(entry.state.load(SeqCst), NEW | READY) || entry.in_flight.load(SeqCst) > 0
            {
                continue;
            }
            let owner = entry.database.load(SeqCst);
            let garbage = if owner == database() {
                entry.relation.load(SeqCst) != relation.to_u32()
            } else {
                dropped.contains(&owner)
            };
            if garbage {
                entry.state.store(RECLAIMED, SeqCst);
            }
        }
        Ok(())
    }

    /// Every initialized entry of this database's installation `relation`.
    pub fn entries_of(&self, relation: Oid) -> Vec<EntryRef> {
        (0..self.capacity)
            .filter(|&index| {
                let entry = self.entry(index);
                entry.state.load(SeqCst) == READY
                    && entry.database.load(SeqCst) == database()
                    && entry.relation.load(SeqCst) == relation.to_u32()
            })
            .map(|index| EntryRef {
                shared: *self,
                index,
            })
            .collect()
    }

    /// Whether entry `index` belongs to this database's installation `relation`.
    pub(super) fn is_of(&self, index: usize, relation: Oid) -> bool {
        let entry = self.entry(index);
        entry.database.load(SeqCst) == database()
            && entry.relation.load(SeqCst) == relation.to_u32()
    }
}

/// An application's entry.
#[derive(Clone, Copy)]
pub struct EntryRef {
    pub(super) shared: Shared,
    pub(super) index: usize,
}

impl EntryRef {
    pub(super) fn entry(&self) -> &'static Entry {
        self.shared.entry(self.index)
    }

    pub fn application(&self) -> ApplicationId {
        ApplicationId(self.entry().application.load(SeqCst))
    }

    pub fn is_ready(&self) -> bool {
        self.entry().state.load(SeqCst) == READY
    }

    /// Sets the mode from the committed state, and ids to be handed out above `floor`. The
    /// caller holds the append lock, so no serialized append or mode change is in progress,
    /// and no concurrent one has begun.
    pub fn initialize(&self, mode: Mode, floor: i64) {
        let entry = self.entry();
        entry.taken.fetch_max(floor, SeqCst);
        entry.mode.store(mode_code(mode), SeqCst);
        entry.state.store(READY, SeqCst);
    }

    /// The live append mode.
    pub fn mode(&self) -> Mode {
        match self.entry().mode.load(SeqCst) {
            CONCURRENT => Mode::Concurrent,
            _ => Mode::Serialized,
        }
    }

    /// How many mode changes of the application have committed since its entry was made.
    pub fn switches(&self) -> u32 {
        self.entry().switches.load(SeqCst)
    }

    /// Takes `count` consecutive ids; the first of them, or None when they would exceed
    /// bigint.
    pub fn take(&self, count: i64) -> Option<i64> {
        let taken = &self.entry().taken;
        let mut last_taken = taken.load(SeqCst);
        loop {
            let first = last_taken.checked_add(1)?;
            let last = first.checked_add(count - 1)?;
            match taken.compare_exchange(last_taken, last, SeqCst, SeqCst) {
                Ok(_) => return Some(first),
                Err(current) => last_taken = current,
            }
        }
    }

    /// Whether some transaction holds ids of the application.
    pub fn in_flight(&self) -> bool {
        self.entry().in_flight.load(SeqCst) > 0
    }

    /// The highest id handed out in concurrent mode: where the horizon gets to once every
    /// append in flight now has ended. None when the application is serialized and nothing
    /// is in flight.
    pub fn taken(&self) -> Option<i64> {
        let entry = self.entry();
        (entry.mode.load(SeqCst) == CONCURRENT || entry.in_flight.load(SeqCst) > 0)
            .then(|| entry.taken.load(SeqCst))
    }
}
