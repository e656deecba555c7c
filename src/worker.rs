//! The horizon publisher: one background worker per database that appends in concurrent mode.
//!
//! Concurrent appends send no NOTIFY (PostgreSQL's NOTIFY takes a cluster-wide lock held
//! through the commit, which would serialize them again). Instead, whenever a concurrent
//! append ends, it sets this worker's latch; the worker computes each application's horizon,
//! and when one advanced it writes it to `biomero.application_registry.published_horizon` and
//! sends one `NOTIFY biomero_events` per application, in one transaction: listeners are woken
//! once per advance, however many appends it covers, and readers on a standby, which have no
//! access to the primary's shared memory, read the published horizon through WAL.
//!
//! Every advance is announced. The first concurrent append of a database starts the worker,
//! and so does the end of any concurrent append or mode change that finds none running. The
//! worker leaves after `biomero.publisher_idle_timeout` without a change, but only once
//! everything is published and nothing is in flight, and in this order: it first stops
//! counting as running, then looks again. A transaction that ends meanwhile either saw it
//! running (so ended before that second look, which then finds its change and the worker
//! stays) or saw it gone (so starts a new one). Terminated with work left, it asks for a
//! successor. It also leaves at once when a command needs the database to itself (`DROP
//! DATABASE`, `CREATE DATABASE … TEMPLATE`, `ALTER DATABASE … RENAME`): they hold a lock on
//! the database that it looks for every second, and they would otherwise fail with 55006; a
//! successor it asks for connects once the command is done. A slot left for a moment may be
//! given to another database's publisher: a worker takes a slot back only if it is still its
//! database's.

use crate::access;
use crate::error::Result;
use crate::notify;
use crate::shared::{self, Publisher, Shared};
use crate::statements::{self, Snapshot};
use crate::subtransaction;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// How long a requested start may take before another backend requests it again.
const START_GRACE_MICROSECONDS: i64 = 10_000_000;
/// After a start that failed (no free worker slot), how long until the next attempt.
const RETRY_MICROSECONDS: i64 = 1_000_000;
/// How often the worker looks for work it missed and for commands waiting for the database.
const ROUND: Duration = Duration::from_secs(1);

/// `biomero.publisher_idle_timeout`: how long a publisher with nothing to do stays.
pub static IDLE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);

pub fn register_settings() {
    GucRegistry::define_int_guc(
        c"biomero.publisher_idle_timeout",
        c"How long a horizon publisher with nothing to publish stays before it exits.",
        c"It exits only when every horizon of its database is published and no append is in flight; the next concurrent append starts it again.",
        &IDLE_TIMEOUT,
        100,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn database() -> u32 {
    // SAFETY: set at backend start.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Starts this database's publisher unless it runs or is starting.
pub fn ensure_running() -> Result<()> {
    if let Some(shared) = shared::shared() {
        start_unless_running(&shared);
    }
    Ok(())
}

/// At the end of a transaction that held concurrent ids or changed a mode: sets the latch of
/// this database's publisher, or starts one. Runs in a transaction callback, so it never
/// raises (a failed start is a WARNING).
pub fn wake_or_start(shared: &Shared) {
    let database = database();
    for publisher in shared.publishers() {
        if publisher.database.load(SeqCst) == database && publisher.pid.load(SeqCst) != 0 {
            let latch = publisher.latch.load(SeqCst);
            if latch != 0 {
                // SAFETY: the latch of a PGPROC in shared memory; setting a latch its owner
                // no longer waits on is harmless.
                unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
                return;
            }
        }
    }
    start_unless_running(shared);
}

fn start_unless_running(shared: &Shared) {
    let database = database();
    let publishers = shared.publishers();
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
        let _lock = shared.lock();
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

/// Frees the publisher slot at exit, unless another worker holds it by now.
#[pg_guard]
unsafe extern "C-unwind" fn forget_publisher(_code: i32, slot: pg_sys::Datum) {
    if let Some(shared) = shared::shared() {
        let publisher = &shared.publishers()[slot.value()];
        // SAFETY: this process's pid.
        let me = unsafe { pg_sys::MyProcPid };
        if publisher.pid.load(SeqCst) == me {
            publisher.pid.store(0, SeqCst);
            publisher.latch.store(0, SeqCst);
        }
    }
}

/// What a publisher has published per (installation, application id): the application's
/// mode-change count when it looked, and the horizon.
type Published = HashMap<(pg_sys::Oid, i32), (u32, Option<i64>)>;

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn biomero_tracking_publisher_main(argument: pg_sys::Datum) {
    let slot = unsafe { i32::from_datum(argument, false) }.unwrap_or(0) as usize;
    let Some(shared) = shared::shared() else {
        return;
    };
    let publisher = &shared.publishers()[slot];
    let database = pg_sys::Oid::from(publisher.database.load(SeqCst));
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: registered before anything can fail, so the slot is freed however we exit.
    unsafe {
        pg_sys::before_shmem_exit(Some(forget_publisher), pg_sys::Datum::from(slot));
    }
    if !take_over(&shared, publisher) {
        return; // another one runs
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // The worker runs as the bootstrap superuser, with the database's settings applied at
    // connection: none of them (a search_path to a database owner's operators, timeouts,
    // read-only or serializable defaults) may reach its statements.
    for (name, value) in [
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
        (c"default_transaction_read_only", c"off"),
        (c"default_transaction_isolation", c"read committed"),
        // Losing the last published value in a crash only makes standbys read less for a
        // moment, so the publisher does not wait for its commits to be flushed.
        (c"synchronous_commit", c"off"),
    ] {
        // SAFETY: sets a built-in setting for this process, overriding database settings.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }

    let mut published = Published::new();
    let mut last_change = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: rereads the configuration files, as every process does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let round = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
            publish(&shared, &mut published)
        }));
        match round {
            Round::Leave => {
                // A command needs the database to itself: a successor, if work is left,
                // connects once it is done (its connection waits for the command's lock).
                step_down(&shared, publisher, &published);
                return;
            }
            Round::Changed => last_change = Instant::now(),
            Round::Unchanged => {
                let idle = Duration::from_millis(IDLE_TIMEOUT.get().max(0) as u64);
                if last_change.elapsed() >= idle && leave(&shared, publisher, &published) {
                    return;
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(ROUND)) {
            // Terminated (or the postmaster is gone): a successor publishes what is left.
            step_down(&shared, publisher, &published);
            return;
        }
    }
}

/// Leaves the slot for good and, if work is left, asks for a successor. The slot is left
/// first and the work looked at afterwards: a transaction that ends meanwhile either saw this
/// worker gone (and starts one itself) or ended before the look.
fn step_down(shared: &Shared, publisher: &Publisher, published: &Published) {
    // SAFETY: this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    {
        let _lock = shared.lock();
        if publisher.pid.load(SeqCst) != me {
            return;
        }
        publisher.pid.store(0, SeqCst);
        publisher.latch.store(0, SeqCst);
    }
    let left = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        unpublished(shared, published)
    }));
    if left {
        start_unless_running(shared);
    }
}

/// Makes this process the slot's publisher, unless another one holds it or the slot was
/// given to another database meanwhile (when this process had left it: a commit there that
/// found it taken would wake a publisher of the wrong database).
fn take_over(shared: &Shared, publisher: &Publisher) -> bool {
    let _lock = shared.lock();
    // SAFETY: set at connection; before it, the slot's database is the one asked for.
    let connected = unsafe { pg_sys::MyDatabaseId };
    if connected != pg_sys::Oid::INVALID && publisher.database.load(SeqCst) != connected.to_u32() {
        return false;
    }
    // A start asked for meanwhile is served by whoever holds the slot.
    publisher.requested_at.store(0, SeqCst);
    if publisher.pid.load(SeqCst) != 0 {
        return false;
    }
    // SAFETY: this process's pid and latch.
    unsafe {
        publisher.pid.store(pg_sys::MyProcPid, SeqCst);
        publisher.latch.store(pg_sys::MyLatch as usize, SeqCst);
    }
    true
}

/// Leaves the slot if nothing is left to publish; false when the worker stays.
fn leave(shared: &Shared, publisher: &Publisher, published: &Published) -> bool {
    // SAFETY: this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    {
        let _lock = shared.lock();
        if publisher.pid.load(SeqCst) != me {
            return true;
        }
        // From here on a transaction that ends starts a successor instead of waking us.
        publisher.pid.store(0, SeqCst);
        publisher.latch.store(0, SeqCst);
    }
    let left = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        unpublished(shared, published)
    }));
    if !left {
        return true;
    }
    !take_over(shared, publisher)
}

/// Whether a command waits for this database to have no other sessions: it holds a lock on
/// the database that conflicts with the one every session takes to connect.
fn wanted_elsewhere() -> bool {
    let tag = pg_sys::LOCKTAG {
        locktag_field1: 0, // a shared object
        locktag_field2: pg_sys::DatabaseRelationId.to_u32(),
        locktag_field3: database(),
        locktag_field4: 0,
        locktag_type: pg_sys::LockTagType::LOCKTAG_OBJECT as u8,
        locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
    };
    let mut count = 0;
    // SAFETY: a valid tag; the result is allocated in the round's transaction memory.
    unsafe {
        pg_sys::GetLockConflicts(&tag, pg_sys::RowExclusiveLock as i32, &mut count);
    }
    count > 0
}

/// Whether an application of this database has an id in flight, a horizon not published
/// yet or a mode change not looked at.
fn unpublished(shared: &Shared, published: &Published) -> bool {
    let Ok(relation) = access::events_relation() else {
        return false;
    };
    shared.entries_of(relation).iter().any(|entry| {
        entry.in_flight()
            || published.get(&(relation, entry.application()))
                != Some(&(entry.switches(), entry.horizon()))
    })
}

enum Round {
    Changed,
    Unchanged,
    Leave,
}

/// One round: publishes every horizon that changed.
fn publish(shared: &Shared, published: &mut Published) -> Round {
    if wanted_elsewhere() {
        return Round::Leave;
    }
    let Ok(relation) = access::events_relation() else {
        return Round::Unchanged; // the extension is not (or no longer) installed here
    };
    let mut changes = Vec::new();
    for entry in shared.entries_of(relation) {
        // The mode-change count first: a change after it is looked at in the next round.
        let state = (entry.switches(), entry.horizon());
        let key = (relation, entry.application());
        if published.get(&key) != Some(&state) {
            changes.push((key, state));
        }
    }
    if changes.is_empty() {
        return Round::Unchanged;
    }
    for (key, state) in changes {
        // One subtransaction per application: an error (or a row another transaction holds)
        // leaves the others published and this one to the next round.
        let outcome = subtransaction::run(|| statements::connected(|| publish_one(key.1, state.1)));
        match outcome {
            Ok(true) => {
                published.insert(key, state);
            }
            Ok(false) => {}
            Err(error) => {
                pgrx::warning!("biomero_tracking horizon publisher: {error}");
            }
        }
    }
    Round::Changed
}

/// Publishes `horizon` for application `id` and notifies its advance; false when another
/// transaction holds the application's registry row (tried again in the next round).
fn publish_one(id: i32, horizon: Option<i64>) -> Result<bool> {
    let Some(row) = statements::first(
        &statements::PUBLISHED_HORIZON,
        &[id.into_datum()],
        Snapshot::Current,
        |row| {
            (
                row.get::<String>(1),
                row.get::<String>(2),
                row.get::<i64>(3),
            )
        },
    )?
    else {
        return Ok(false);
    };
    let (Some(name), Some(mode), before) = row else {
        return Ok(false);
    };
    // A NULL (read everything) computed before a switch to concurrent committed is stale:
    // the switch published a horizon, and the next round looks again.
    if before == horizon || (horizon.is_none() && mode != "serialized") {
        return Ok(true);
    }
    statements::execute(
        &statements::PUBLISH_HORIZON,
        &[id.into_datum(), horizon.into_datum()],
        Snapshot::Current,
        |_| (),
    )?;
    // What is readable now and was not when `before` was published is announced: up to the
    // horizon, or, when standbys read everything again, up to the head.
    let last = match horizon {
        Some(horizon) => Some(horizon),
        None if before.is_some() => crate::ids::head(&name)?,
        None => None,
    };
    if let Some(last) = last {
        let first = before.map_or(last, |before| before + 1).max(1);
        if first <= last {
            notify::send(&name, first, last);
        }
    }
    Ok(true)
}
