//! Shared memory for concurrent appends; present only when the library is in
//! `shared_preload_libraries`.
//!
//! Per application (keyed by database, the installation's events table and the registry id) an
//! [`Entry`] holds the live append mode, the highest id concurrent mode has handed out, how
//! many transactions hold ids not yet committed, and the recent commits of such transactions. Per backend a few
//! [`Slot`]s hold, for each application the current transaction appends to concurrently, the
//! lowest id it took (and its transaction id and start, for the operator view).
//!
//! The horizon of an application is the highest id below every id still in flight. A reader
//! must return nothing its snapshot cannot prove settled: [`EntryRef::readable_bound`] takes
//! the horizon as of now and lowers it below any id committed by a transaction the reader's
//! snapshot still sees as running (from the recent commits: exactly for the last [`RECENT`],
//! by transaction id; for older ones by when they committed, see [`Commit::next`]). So a
//! reader that has seen id N never later finds a new id <= N, whatever its isolation level,
//! and no unrelated transaction holds it back.
//!
//! Ordering (all atomics SeqCst): a writer assigns its transaction id, counts itself in
//! `in_flight`, checks the mode, publishes its slot with `lowest` = one above `taken`, then
//! takes ids by raising `taken`. At commit (after the commit is visible, before its locks are released) it
//! records the commit among the recent ones, then clears its slot and uncounts itself. A
//! reader reads mode, `taken`, `in_flight`, the slots and then the recent commits. Any id taken
//! after the reader's slot scan is above every id the reader's snapshot holds.

use crate::error::{Error, Result};
use crate::registry::Mode;
use pgrx::pg_sys::{self, Oid};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::Cell;
use std::sync::atomic::{
    AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};

/// Applications a transaction can append to concurrently at once.
pub const SLOTS_PER_BACKEND: usize = 8;
/// Commits remembered exactly per application.
const RECENT: usize = 64;
/// Older commits are folded into summaries of this many.
const SUMMARY_SPAN: u32 = 64;
const SUMMARIES: usize = 16;
/// Databases with a horizon publisher at once.
pub const PUBLISHERS: usize = 64;
/// Mode changes one transaction can make.
const PENDING: usize = 4;

const FREE: u32 = 0;
const NEW: u32 = 1;
const READY: u32 = 2;
/// Given back: lookups probe past it, a new application may take it.
const RECLAIMED: u32 = 3;

const SERIALIZED: u32 = 0;
const CONCURRENT: u32 = 1;

/// `biomero.max_applications`: applications shared memory has room for.
pub static MAX_APPLICATIONS: GucSetting<i32> = GucSetting::<i32>::new(1024);

pub fn register_settings() {
    GucRegistry::define_int_guc(
        c"biomero.max_applications",
        c"Applications (across all databases) biomero_tracking keeps append state for in shared memory.",
        c"Each application appended to in concurrent mode, or switched between modes, takes one entry until the server restarts.",
        &MAX_APPLICATIONS,
        16,
        1 << 20,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Commit {
    xid: u64,
    lowest: i64,
    /// The next transaction id when the commit was already visible. A snapshot whose xmax is
    /// above it was taken after a transaction with a later id completed, so after this
    /// commit: it sees it.
    next: u64,
}

/// Commits folded together: a snapshot that may have been taken before one of them is held
/// below the lowest id of all of them.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Summary {
    max_xid: u64,
    max_next: u64,
    min_lowest: i64,
    count: u32,
}

impl Summary {
    fn add(&mut self, commit: &Commit) {
        self.merge(&Summary {
            max_xid: commit.xid,
            max_next: commit.next,
            min_lowest: commit.lowest,
            count: 1,
        });
    }

    fn merge(&mut self, other: &Summary) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
        } else {
            self.max_xid = self.max_xid.max(other.max_xid);
            self.max_next = self.max_next.max(other.max_next);
            self.min_lowest = self.min_lowest.min(other.min_lowest);
            self.count = self.count.saturating_add(other.count);
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Commits {
    recent: [Commit; RECENT],
    recent_len: u32,
    recent_next: u32,
    folding: Summary,
    summaries: [Summary; SUMMARIES],
    summaries_len: u32,
    summaries_next: u32,
    ancient: Summary,
}

impl Commits {
    fn push(&mut self, commit: Commit) {
        let at = self.recent_next as usize;
        if (self.recent_len as usize) == RECENT {
            let evicted = self.recent[at];
            self.folding.add(&evicted);
            if self.folding.count == SUMMARY_SPAN {
                let at = self.summaries_next as usize;
                if (self.summaries_len as usize) == SUMMARIES {
                    let oldest = self.summaries[at];
                    self.ancient.merge(&oldest);
                } else {
                    self.summaries_len += 1;
                }
                self.summaries[at] = self.folding;
                self.summaries_next = ((at + 1) % SUMMARIES) as u32;
                self.folding = Summary::default();
            }
        } else {
            self.recent_len += 1;
        }
        self.recent[at] = commit;
        self.recent_next = ((at + 1) % RECENT) as u32;
    }
}

#[repr(C)]
pub struct Entry {
    database: AtomicU32,
    relation: AtomicU32,
    application: AtomicI32,
    state: AtomicU32,
    mode: AtomicU32,
    /// The highest id handed out in concurrent mode (or the floor the next one starts above).
    /// Kept as the last id taken rather than the next one, so that bigint's largest id can
    /// be handed out too.
    taken: AtomicI64,
    in_flight: AtomicU32,
    /// Mode changes committed: the publisher republishes an application whose mode changed,
    /// whatever it remembers having published.
    switches: AtomicU32,
    commits_lock: pg_sys::slock_t,
    commits: Commits,
}

#[repr(C)]
pub struct Slot {
    entry: AtomicI32,
    xid: AtomicU64,
    lowest: AtomicI64,
    started: AtomicI64,
    pid: AtomicI32,
}

/// The horizon publisher of one database (see `worker.rs`).
#[repr(C)]
pub struct Publisher {
    pub database: AtomicU32,
    pub pid: AtomicI32,
    pub latch: AtomicUsize,
    /// When a start was last requested (0: not pending), in PostgreSQL timestamp microseconds.
    pub requested_at: AtomicI64,
}

#[repr(C)]
struct Header {
    capacity: u32,
    backends: u32,
    lock: *mut pg_sys::LWLock,
}

struct Layout {
    entries: usize,
    slots: usize,
    publishers: usize,
    size: usize,
}

fn align(offset: usize) -> usize {
    (offset + 63) & !63
}

fn layout(capacity: usize, backends: usize) -> Layout {
    let entries = align(std::mem::size_of::<Header>());
    let slots = align(entries + capacity * std::mem::size_of::<Entry>());
    let publishers = align(slots + backends * SLOTS_PER_BACKEND * std::mem::size_of::<Slot>());
    let size = align(publishers + PUBLISHERS * std::mem::size_of::<Publisher>());
    Layout {
        entries,
        slots,
        publishers,
        size,
    }
}

/// The segment's base, set by the startup hook (in the postmaster, inherited by every backend;
/// set again after a crash restart).
static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
const SEGMENT: &std::ffi::CStr = c"biomero_tracking";

static mut PREVIOUS_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREVIOUS_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Called from `_PG_init` while shared_preload_libraries is processed.
pub fn install_hooks() {
    // SAFETY: _PG_init runs single-threaded in the postmaster.
    unsafe {
        PREVIOUS_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        PREVIOUS_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
        pg_sys::RegisterXactCallback(Some(on_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_end), std::ptr::null_mut());
    }
}

fn sizes() -> (usize, usize) {
    // SAFETY: MaxBackends is final when shared memory is requested.
    let backends = unsafe { pg_sys::MaxBackends } as usize;
    (MAX_APPLICATIONS.get() as usize, backends)
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request() {
    unsafe {
        if let Some(previous) = PREVIOUS_REQUEST_HOOK {
            previous();
        }
        let (capacity, backends) = sizes();
        pg_sys::RequestAddinShmemSpace(layout(capacity, backends).size);
        pg_sys::RequestNamedLWLockTranche(SEGMENT.as_ptr(), 1);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup() {
    unsafe {
        if let Some(previous) = PREVIOUS_STARTUP_HOOK {
            previous();
        }
        let (capacity, backends) = sizes();
        let layout = layout(capacity, backends);
        // AddinShmemInitLock, number 21 of the main array in every supported major.
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), layout.size, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(base, 0, layout.size);
            let header = base.cast::<Header>();
            (*header).capacity = capacity as u32;
            (*header).backends = backends as u32;
            (*header).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(SEGMENT.as_ptr())).lock;
            let entries = base.add(layout.entries).cast::<Entry>();
            for index in 0..capacity {
                pg_sys::SpinLockInit(&raw mut (*entries.add(index)).commits_lock);
            }
            let slots = base.add(layout.slots).cast::<Slot>();
            for index in 0..backends * SLOTS_PER_BACKEND {
                (*slots.add(index)).entry.store(-1, SeqCst);
            }
        }
        pg_sys::LWLockRelease(init_lock);
        BASE.store(base, SeqCst);
    }
}

/// The shared state, when the library was preloaded.
#[derive(Clone, Copy)]
pub struct Shared {
    base: *mut u8,
    capacity: usize,
    backends: usize,
    layout_entries: usize,
    layout_slots: usize,
    layout_publishers: usize,
    lock: *mut pg_sys::LWLock,
}

/// The concurrent-mode entry of the application with registry id `application` in this
/// database: None without the preloaded library or when the application has none.
pub fn entry_of(application: i32) -> Result<Option<EntryRef>> {
    let Some(shared) = shared() else {
        return Ok(None);
    };
    Ok(shared.find(crate::access::events_relation()?, application))
}

pub fn shared() -> Option<Shared> {
    let base = BASE.load(SeqCst);
    if base.is_null() {
        return None;
    }
    // SAFETY: the header was written by the startup hook before BASE was set.
    let header = unsafe { &*base.cast::<Header>() };
    let layout = layout(header.capacity as usize, header.backends as usize);
    Some(Shared {
        base,
        capacity: header.capacity as usize,
        backends: header.backends as usize,
        layout_entries: layout.entries,
        layout_slots: layout.slots,
        layout_publishers: layout.publishers,
        lock: header.lock,
    })
}

/// This backend's index among MaxBackends.
fn my_backend() -> usize {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    // SAFETY: set at backend start.
    return (unsafe { pg_sys::MyBackendId } - 1) as usize;
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    // SAFETY: set at backend start.
    return unsafe { pg_sys::MyProcNumber } as usize;
}

fn database() -> u32 {
    // SAFETY: set at backend start.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
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
    fn entry(&self, index: usize) -> &'static Entry {
        debug_assert!(index < self.capacity);
        // SAFETY: index < capacity within the segment, which lives as long as the process.
        unsafe {
            &*self
                .base
                .add(self.layout_entries)
                .cast::<Entry>()
                .add(index)
        }
    }

    fn entry_mut(&self, index: usize) -> *mut Entry {
        // SAFETY: as `entry`; callers hold the entry's spinlock for the fields they touch.
        unsafe {
            self.base
                .add(self.layout_entries)
                .cast::<Entry>()
                .add(index)
        }
    }

    fn slots(&self) -> &'static [Slot] {
        // SAFETY: backends * SLOTS_PER_BACKEND slots follow the entries.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.layout_slots).cast::<Slot>(),
                self.backends * SLOTS_PER_BACKEND,
            )
        }
    }

    fn my_slots(&self) -> Result<&'static [Slot]> {
        let backend = my_backend();
        if backend >= self.backends {
            return Err(Error::Internal(format!(
                "backend number {backend} out of range"
            )));
        }
        Ok(&self.slots()[backend * SLOTS_PER_BACKEND..(backend + 1) * SLOTS_PER_BACKEND])
    }

    pub fn publishers(&self) -> &'static [Publisher] {
        // SAFETY: PUBLISHERS publishers follow the slots.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.layout_publishers).cast::<Publisher>(),
                PUBLISHERS,
            )
        }
    }

    pub fn lock(&self) -> SharedLock {
        // SAFETY: the tranche's lock, held until the guard drops (or released at abort).
        unsafe { pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        SharedLock(self.lock)
    }

    fn home(&self, relation: Oid, application: i32) -> usize {
        let key = (u64::from(database()) << 32 ^ u64::from(relation.to_u32()))
            ^ (application as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) as usize % self.capacity
    }

    /// The entry of `application` in this database's installation `relation`, if any.
    pub fn find(&self, relation: Oid, application: i32) -> Option<EntryRef> {
        let home = self.home(relation, application);
        for step in 0..self.capacity {
            let index = (home + step) % self.capacity;
            let entry = self.entry(index);
            match entry.state.load(SeqCst) {
                FREE => return None,
                RECLAIMED => {}
                _ if entry.database.load(SeqCst) == database()
                    && entry.relation.load(SeqCst) == relation.to_u32()
                    && entry.application.load(SeqCst) == application =>
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

    /// The entry, created (not yet initialized) when missing. When every entry is taken,
    /// the entries of dropped databases and of this database's dropped installations are
    /// given back first.
    pub fn find_or_create(&self, relation: Oid, application: i32) -> Result<EntryRef> {
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
    fn take_entry(&self, index: usize, relation: Oid, application: i32) -> EntryRef {
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
            entry.application.store(application, SeqCst);
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

    /// Every entry of this database's installation `relation` that is initialized.
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

    /// Every registration of this database's installation `relation`: (application id, pid,
    /// transaction start, lowest id).
    pub fn registrations(&self, relation: Oid) -> Vec<(i32, i32, i64, i64)> {
        let mut found = Vec::new();
        for slot in self.slots() {
            let index = slot.entry.load(SeqCst);
            if index < 0 {
                continue;
            }
            let entry = self.entry(index as usize);
            let row = (
                entry.application.load(SeqCst),
                slot.pid.load(SeqCst),
                slot.started.load(SeqCst),
                slot.lowest.load(SeqCst),
            );
            if slot.entry.load(SeqCst) == index
                && entry.database.load(SeqCst) == database()
                && entry.relation.load(SeqCst) == relation.to_u32()
            {
                found.push(row);
            }
        }
        found
    }
}

pub struct SharedLock(*mut pg_sys::LWLock);

impl Drop for SharedLock {
    fn drop(&mut self) {
        // SAFETY: acquired in Shared::lock.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// An application's entry.
#[derive(Clone, Copy)]
pub struct EntryRef {
    shared: Shared,
    index: usize,
}

/// What [`EntryRef::enlist`] found.
pub enum Enlisted {
    /// This transaction holds ids of the application: take more.
    Concurrent,
    /// The application is serialized (again): append the serialized way.
    Serialized,
}

impl EntryRef {
    fn entry(&self) -> &'static Entry {
        self.shared.entry(self.index)
    }

    pub fn application(&self) -> i32 {
        self.entry().application.load(SeqCst)
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

    pub fn in_flight(&self) -> bool {
        self.entry().in_flight.load(SeqCst) > 0
    }

    /// The horizon now: the highest id below every id in flight and, in concurrent mode, at
    /// most the highest id handed out. None when nothing bounds reading (serialized, nothing
    /// in flight).
    pub fn horizon(&self) -> Option<i64> {
        let entry = self.entry();
        let mut horizon = (entry.mode.load(SeqCst) == CONCURRENT).then(|| entry.taken.load(SeqCst));
        if entry.in_flight.load(SeqCst) > 0 {
            for slot in self.shared.slots() {
                if slot.entry.load(SeqCst) != self.index as i32 {
                    continue;
                }
                let lowest = slot.lowest.load(SeqCst);
                if slot.entry.load(SeqCst) == self.index as i32 {
                    horizon = Some(lower_to(horizon, lowest - 1));
                }
            }
        }
        horizon
    }

    /// The highest id handed out in concurrent mode: where the horizon gets to once every
    /// append in flight now has ended. None when the application is serialized and nothing
    /// is in flight.
    pub fn taken(&self) -> Option<i64> {
        let entry = self.entry();
        (entry.mode.load(SeqCst) == CONCURRENT || entry.in_flight.load(SeqCst) > 0)
            .then(|| entry.taken.load(SeqCst))
    }

    /// The highest id a reader with `snapshot` may return (None: no bound): the horizon,
    /// lowered below every id of a commit that `snapshot` does not see.
    pub fn readable_bound(&self, snapshot: pg_sys::Snapshot) -> Option<i64> {
        let mut bound = self.horizon();
        let commits = {
            let entry = self.shared.entry_mut(self.index);
            // SAFETY: the spinlock guards `commits`; the copy is a plain memcpy.
            unsafe {
                pg_sys::SpinLockAcquire(&raw mut (*entry).commits_lock);
                let copy = (*entry).commits;
                pg_sys::SpinLockRelease(&raw mut (*entry).commits_lock);
                copy
            }
        };
        let view = SnapshotView::new(snapshot);
        for commit in &commits.recent[..commits.recent_len as usize] {
            if view.sees_running(commit.xid) {
                bound = Some(lower_to(bound, commit.lowest - 1));
            }
        }
        let summaries = commits.summaries[..commits.summaries_len as usize]
            .iter()
            .chain([&commits.folding, &commits.ancient]);
        for summary in summaries {
            if summary.count > 0 && view.may_see_running(summary) {
                bound = Some(lower_to(bound, summary.min_lowest - 1));
            }
        }
        bound
    }

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

/// `bound` lowered to `to` (an unbounded `bound` becomes `to`).
fn lower_to(bound: Option<i64>, to: i64) -> i64 {
    bound.map_or(to, |bound| bound.min(to))
}

fn mode_code(mode: Mode) -> u32 {
    match mode {
        Mode::Serialized => SERIALIZED,
        Mode::Concurrent => CONCURRENT,
    }
}

/// A snapshot's bounds, as 64-bit transaction ids.
struct SnapshotView {
    snapshot: pg_sys::Snapshot,
    xmin: u64,
    xmax: u64,
}

impl SnapshotView {
    fn new(snapshot: pg_sys::Snapshot) -> Self {
        // SAFETY: the caller's active snapshot, valid during the call.
        unsafe {
            let next = pg_sys::ReadNextFullTransactionId().value;
            let widen = |xid: pg_sys::TransactionId| {
                next - u64::from((next as u32).wrapping_sub(xid.into_inner()))
            };
            let data = &*snapshot;
            SnapshotView {
                snapshot,
                xmin: widen(data.xmin),
                xmax: widen(data.xmax),
            }
        }
    }

    /// Whether the snapshot sees the (committed) transaction `xid` as still running.
    fn sees_running(&self, xid: u64) -> bool {
        if xid < self.xmin {
            return false;
        }
        // SAFETY: a recent transaction id and a valid snapshot.
        unsafe { pg_sys::XidInMVCCSnapshot(pg_sys::TransactionId::from(xid as u32), self.snapshot) }
    }

    /// Whether the snapshot may have been taken before one of the summarized commits: not when
    /// every one of them had completed before its xmin, nor when a transaction that began
    /// after all of them had completed before it was taken. An unrelated long transaction
    /// holds back the first test but not the second.
    fn may_see_running(&self, summary: &Summary) -> bool {
        summary.max_xid >= self.xmin && self.xmax <= summary.max_next
    }
}

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

/// At the end of every transaction: a committed transaction's concurrent appends become
/// recent commits and its registrations go; an aborted one's registrations go. Runs after the
/// commit is visible to new snapshots and before locks are released, and must not fail.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _argument: *mut std::ffi::c_void,
) {
    let Some(shared) = shared() else {
        return;
    };
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => finish(&shared, true),
        pg_sys::XactEvent::XACT_EVENT_ABORT => finish(&shared, false),
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            let holds = shared
                .my_slots()
                .map(|slots| slots.iter().any(|slot| slot.entry.load(SeqCst) >= 0))
                .unwrap_or(false);
            let changes = PENDING_CHANGES
                .with(Cell::get)
                .iter()
                .any(|change| change.entry >= 0);
            if holds || changes {
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
    let mut touched = false;
    if let Ok(slots) = shared.my_slots() {
        for slot in slots {
            let index = slot.entry.load(SeqCst);
            if index < 0 {
                continue;
            }
            let entry = shared.entry_mut(index as usize);
            if committed {
                let commit = Commit {
                    xid: slot.xid.load(SeqCst),
                    lowest: slot.lowest.load(SeqCst),
                    // SAFETY: reads the next transaction id (a shared lock, never an error).
                    next: unsafe { pg_sys::ReadNextFullTransactionId().value },
                };
                // SAFETY: the spinlock guards `commits`.
                unsafe {
                    pg_sys::SpinLockAcquire(&raw mut (*entry).commits_lock);
                    (*entry).commits.push(commit);
                    pg_sys::SpinLockRelease(&raw mut (*entry).commits_lock);
                }
            }
            slot.entry.store(-1, SeqCst);
            // SAFETY: in_flight is an atomic of the entry.
            unsafe { (*entry).in_flight.fetch_sub(1, SeqCst) };
            touched = true;
        }
    }
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
        crate::worker::wake_or_start(shared);
    }
}
