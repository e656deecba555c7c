//! The slots of the horizon publishers (`worker.rs`), one per database that has one: which
//! process runs it, its latch, and when a start was asked for. Every step of a publisher's
//! life that the others must see the same way happens here, under the segment's lock:
//!
//! * a backend asks for a start when none runs or is starting in its database (the first
//!   concurrent append, and the end of any concurrent append or mode change that finds none);
//! * a starting worker takes the slot over, or leaves when another one holds it or the slot
//!   was given to another database meanwhile;
//! * a leaving worker first gives the slot up, then looks for work left: a transaction that
//!   ends meanwhile either saw it running (so ended before that look, which finds its change)
//!   or saw it gone (so starts a new one). It takes the slot back if work turned up.

use super::{database, Shared};
use crate::error::Result;
use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::pg_sys;
use pgrx::IntoDatum;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicUsize, Ordering::SeqCst};

/// Databases with a horizon publisher at once.
pub const PUBLISHERS: usize = 64;
/// How long a requested start may take before another backend requests it again.
const START_GRACE_MICROSECONDS: i64 = 10_000_000;
/// After a start that failed (no free worker slot), how long until the next attempt.
const RETRY_MICROSECONDS: i64 = 1_000_000;

/// The horizon publisher of one database.
#[repr(C)]
pub struct Publisher {
    database: AtomicU32,
    pid: AtomicI32,
    latch: AtomicUsize,
    /// When a start was last requested (0: not pending), in PostgreSQL timestamp microseconds.
    requested_at: AtomicI64,
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn my_pid() -> i32 {
    // SAFETY: set at process start.
    unsafe { pg_sys::MyProcPid }
}

/// Starts this database's publisher unless it runs or is starting.
pub fn ensure_publisher() -> Result<()> {
    if let Some(shared) = super::shared() {
        shared.start_publisher_unless_running();
    }
    Ok(())
}

impl Shared {
    /// At the end of a transaction that held concurrent ids or changed a mode: sets the latch
    /// of this database's publisher, or starts one. Runs in a transaction callback, so it
    /// never raises (a failed start is a WARNING).
    pub(super) fn wake_or_start_publisher(&self) {
        let database = database();
        for publisher in self.publishers() {
            if publisher.database.load(SeqCst) == database && publisher.pid.load(SeqCst) != 0 {
                let latch = publisher.latch.load(SeqCst);
                if latch != 0 {
                    // SAFETY: the latch of a PGPROC in shared memory; setting a latch its
                    // owner no longer waits on is harmless.
                    unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
                    return;
                }
            }
        }
        self.start_publisher_unless_running();
    }

    fn start_publisher_unless_running(&self) {
        let database = database();
        let publishers = self.publishers();
        // Running, or asked to start less than the grace period before `at`.
        let running = |publisher: &Publisher, at: i64| {
            publisher.database.load(SeqCst) == database
                && (publisher.pid.load(SeqCst) != 0
                    || at - publisher.requested_at.load(SeqCst) < START_GRACE_MICROSECONDS)
        };
        let at = now();
        if publishers.iter().any(|publisher| running(publisher, at)) {
            return;
        }
        let slot = {
            let _lock = self.lock();
            let at = now();
            if publishers.iter().any(|publisher| running(publisher, at)) {
                return;
            }
            let Some(slot) = publishers
                .iter()
                .position(|publisher| publisher.database.load(SeqCst) == database)
                .or_else(|| {
                    publishers.iter().position(|publisher| {
                        publisher.pid.load(SeqCst) == 0
                            && at - publisher.requested_at.load(SeqCst) >= START_GRACE_MICROSECONDS
                    })
                })
            else {
                pgrx::warning!(
                    "biomero_tracking: every horizon publisher slot is taken; listeners of this \
                     database are woken, and standbys read further, once one is free"
                );
                return;
            };
            publishers[slot].database.store(database, SeqCst);
            publishers[slot].requested_at.store(at, SeqCst);
            slot
        };
        let builder = BackgroundWorkerBuilder::new("biomero_tracking horizon publisher")
            .set_type("biomero_tracking horizon publisher")
            .set_library("biomero_tracking")
            .set_function("biomero_tracking_publisher_main")
            .set_argument((slot as i32).into_datum())
            .enable_spi_access()
            .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None);
        let mut worker: pg_sys::BackgroundWorker = (&builder).into();
        // SAFETY: a complete worker description on the stack; without a handle nothing is
        // allocated, so this is safe in a transaction callback too.
        let started =
            unsafe { pg_sys::RegisterDynamicBackgroundWorker(&mut worker, std::ptr::null_mut()) };
        if !started {
            // Tried again a moment later, by the next append or transaction end that needs it.
            publishers[slot]
                .requested_at
                .store(at - START_GRACE_MICROSECONDS + RETRY_MICROSECONDS, SeqCst);
            pgrx::warning!(
                "biomero_tracking: could not start the horizon publisher (no free \
                 max_worker_processes slot); listeners of this database are woken, and standbys \
                 read further, once one is free"
            );
        }
    }
}

impl Publisher {
    /// The database the slot was asked for.
    pub fn database(&self) -> pg_sys::Oid {
        pg_sys::Oid::from(self.database.load(SeqCst))
    }

    /// Frees the slot when this process exits, however it exits (unless another worker
    /// holds it by then). Registered by the worker before anything can fail.
    pub fn free_at_exit(slot: usize) {
        // SAFETY: registers a callback for this process's exit.
        unsafe { pg_sys::before_shmem_exit(Some(free_at_exit), pg_sys::Datum::from(slot)) };
    }

    /// Makes this process the slot's publisher, unless another one holds it or the slot was
    /// given to another database meanwhile (when this process had left it: a commit there
    /// that found it taken would wake a publisher of the wrong database).
    pub fn take_over(&self, shared: &Shared) -> bool {
        let _lock = shared.lock();
        // SAFETY: set at connection; before it, the slot's database is the one asked for.
        let connected = unsafe { pg_sys::MyDatabaseId };
        if connected != pg_sys::Oid::INVALID && self.database.load(SeqCst) != connected.to_u32() {
            return false;
        }
        // A start asked for meanwhile is served by whoever holds the slot.
        self.requested_at.store(0, SeqCst);
        if self.pid.load(SeqCst) != 0 {
            return false;
        }
        self.pid.store(my_pid(), SeqCst);
        // SAFETY: this process's latch.
        self.latch
            .store(unsafe { pg_sys::MyLatch } as usize, SeqCst);
        true
    }

    /// Gives the slot up; false when this process did not hold it.
    fn give_up(&self, shared: &Shared) -> bool {
        let _lock = shared.lock();
        if self.pid.load(SeqCst) != my_pid() {
            return false;
        }
        // From here on a transaction that ends starts a successor instead of waking us.
        self.pid.store(0, SeqCst);
        self.latch.store(0, SeqCst);
        true
    }

    /// Leaves the slot unless `work_left` (asked after giving it up) finds something, in which
    /// case it takes the slot back if it can; true when the worker is to exit.
    pub fn leave_if_idle(&self, shared: &Shared, work_left: impl FnOnce() -> bool) -> bool {
        if !self.give_up(shared) {
            return true;
        }
        !(work_left() && self.take_over(shared))
    }

    /// Leaves the slot for good and, if `work_left` (asked after giving it up) finds
    /// something, asks for a successor.
    pub fn step_down(&self, shared: &Shared, work_left: impl FnOnce() -> bool) {
        if self.give_up(shared) && work_left() {
            shared.start_publisher_unless_running();
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn free_at_exit(_code: i32, slot: pg_sys::Datum) {
    if let Some(shared) = super::shared() {
        let publisher = &shared.publishers()[slot.value()];
        if publisher.pid.load(SeqCst) == my_pid() {
            publisher.pid.store(0, SeqCst);
            publisher.latch.store(0, SeqCst);
        }
    }
}
