//! Shared memory for concurrent appends; present only when the library is in
//! `shared_preload_libraries`. One segment, in rooms by concern:
//!
//! * [`entries`]: per application (keyed by database, the installation's events table and the
//!   registry id) an entry with the live append mode, the highest id handed out, how many
//!   transactions hold ids not yet committed, and their recent commits; found, made and given
//!   back here.
//! * [`holders`]: per backend a few slots, one for each application the current transaction
//!   appends to concurrently (its lowest id, transaction id and start): enlisting, taking ids
//!   and ending.
//! * [`horizon`]: how far a reader may read: the horizon, lowered below the ids of commits
//!   the reader's snapshot does not see.
//! * [`switches`]: mode changes waiting for their transaction's commit, and the transaction
//!   callbacks that apply them and end the holders' slots.
//! * [`publishers`]: the slots of the horizon publishers (`worker.rs`): who runs, waking,
//!   starting, leaving.
//!
//! This file lays the segment out and sets it up.

mod entries;
mod holders;
mod horizon;
mod publishers;
mod switches;

pub use entries::{entry_of, EntryRef};
pub use holders::Enlisted;
pub use publishers::{ensure_publisher, Publisher, PUBLISHERS};
pub use switches::{switch_at_commit, switching_here};

use crate::error::{Error, Result};
use entries::Entry;
use holders::{Slot, SLOTS_PER_BACKEND};
use pgrx::pg_sys;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

/// `biomero.max_applications`: applications shared memory has room for.
pub static MAX_APPLICATIONS: GucSetting<i32> = GucSetting::<i32>::new(1024);

pub fn register_settings() {
    GucRegistry::define_int_guc(
        c"biomero.max_applications",
        c"Applications (across all databases) biomero_tracking keeps append state for in shared memory.",
        c"Each application appended to in concurrent mode, or switched between modes, takes one entry; the entries of dropped databases and installations are given back when all are taken.",
        &MAX_APPLICATIONS,
        16,
        1 << 20,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

#[repr(C)]
struct Header {
    capacity: u32,
    backends: u32,
    lock: *mut pg_sys::LWLock,
}

/// Where each part of the segment starts, and its size.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    entries: usize,
    slots: usize,
    publishers: usize,
    size: usize,
}

/// Parts start on cache lines, so that no two parts share one.
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
    }
    switches::install_callbacks();
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
            entries::initialize(base.add(layout.entries).cast::<Entry>(), capacity);
            holders::initialize(
                base.add(layout.slots).cast::<Slot>(),
                backends * SLOTS_PER_BACKEND,
            );
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
    layout: (usize, usize, usize),
    lock: *mut pg_sys::LWLock,
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
        layout: (layout.entries, layout.slots, layout.publishers),
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

/// This backend's database.
fn database() -> u32 {
    // SAFETY: set at backend start.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

impl Shared {
    fn entries(&self) -> *mut Entry {
        // SAFETY: the entries start there, within the segment.
        unsafe { self.base.add(self.layout.0).cast::<Entry>() }
    }

    fn slots(&self) -> &'static [Slot] {
        // SAFETY: backends * SLOTS_PER_BACKEND slots start there, within the segment, which
        // lives as long as the process.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.layout.1).cast::<Slot>(),
                self.backends * SLOTS_PER_BACKEND,
            )
        }
    }

    /// This backend's slots.
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
        // SAFETY: PUBLISHERS publishers start there, within the segment.
        unsafe {
            std::slice::from_raw_parts(self.base.add(self.layout.2).cast::<Publisher>(), PUBLISHERS)
        }
    }

    /// The segment's lock, held until the guard drops: for making and giving back entries
    /// and for the publishers' slots.
    pub fn lock(&self) -> SharedLock {
        // SAFETY: the tranche's lock, held until the guard drops (or released at abort).
        unsafe { pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        SharedLock(self.lock)
    }
}

pub struct SharedLock(*mut pg_sys::LWLock);

impl Drop for SharedLock {
    fn drop(&mut self) {
        // SAFETY: acquired in Shared::lock.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_start_on_cache_lines_in_order_without_overlap() {
        for (capacity, backends) in [(16, 1), (1024, 100), (1 << 20, 262_143)] {
            let layout = layout(capacity, backends);
            for start in [layout.entries, layout.slots, layout.publishers, layout.size] {
                assert_eq!(start % 64, 0);
            }
            assert!(layout.entries >= std::mem::size_of::<Header>());
            assert!(layout.slots >= layout.entries + capacity * std::mem::size_of::<Entry>());
            assert!(
                layout.publishers
                    >= layout.slots + backends * SLOTS_PER_BACKEND * std::mem::size_of::<Slot>()
            );
            assert!(
                layout.size >= layout.publishers + PUBLISHERS * std::mem::size_of::<Publisher>()
            );
            // No more than a cache line of padding per part.
            assert!(
                layout.size
                    < std::mem::size_of::<Header>()
                        + capacity * std::mem::size_of::<Entry>()
                        + backends * SLOTS_PER_BACKEND * std::mem::size_of::<Slot>()
                        + PUBLISHERS * std::mem::size_of::<Publisher>()
                        + 4 * 64
            );
        }
    }
}
