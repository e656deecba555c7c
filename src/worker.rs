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
//! The worker is started on demand by the first concurrent append of a database (and by a mode
//! change) and exits after a minute in which no horizon changed, so it does not keep `DROP
//! DATABASE` waiting for long.

use crate::access;
use crate::error::Result;
use crate::notify;
use crate::registry;
use crate::shared::{self, Publisher};
use crate::statements::{self, Snapshot};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

/// How long a requested start may take before another backend requests it again.
const START_GRACE_MICROSECONDS: i64 = 10_000_000;
/// How long the worker stays without concurrent appends in its database.
const IDLE_EXIT: Duration = Duration::from_secs(60);

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Starts this database's publisher unless it runs or is starting.
pub fn ensure_running() -> Result<()> {
    let Some(shared) = shared::shared() else {
        return Ok(());
    };
    // SAFETY: set at backend start.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let publishers = shared.publishers();
    // Running, or asked to start less than the grace period before `at`.
    let running = |publisher: &Publisher, at: i64| {
        publisher.database.load(SeqCst) == database
            && (publisher.pid.load(SeqCst) != 0
                || at - publisher.requested_at.load(SeqCst) < START_GRACE_MICROSECONDS)
    };
    let at = now();
    if publishers.iter().any(|publisher| running(publisher, at)) {
        return Ok(());
    }
    let slot = {
        let _lock = shared.lock();
        let at = now();
        if publishers.iter().any(|publisher| running(publisher, at)) {
            return Ok(());
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
                 database are not woken by concurrent appends"
            );
            return Ok(());
        };
        publishers[slot].database.store(database, SeqCst);
        publishers[slot].requested_at.store(at, SeqCst);
        slot
    };
    let started = BackgroundWorkerBuilder::new("biomero_tracking horizon publisher")
        .set_type("biomero_tracking horizon publisher")
        .set_library("biomero_tracking")
        .set_function("biomero_tracking_publisher_main")
        .set_argument((slot as i32).into_datum())
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        publishers[slot].requested_at.store(0, SeqCst);
        pgrx::warning!(
            "biomero_tracking: could not start the horizon publisher (max_worker_processes?); \
             listeners of this database are not woken by concurrent appends"
        );
    }
    Ok(())
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_publisher(_code: i32, slot: pg_sys::Datum) {
    if let Some(shared) = shared::shared() {
        let publisher = &shared.publishers()[slot.value()];
        publisher.latch.store(0, SeqCst);
        publisher.pid.store(0, SeqCst);
        publisher.requested_at.store(0, SeqCst);
    }
}

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
    {
        let _lock = shared.lock();
        if publisher.pid.load(SeqCst) != 0 {
            return; // another one runs
        }
        // SAFETY: this process's pid and latch.
        unsafe {
            publisher.pid.store(pg_sys::MyProcPid, SeqCst);
            publisher.latch.store(pg_sys::MyLatch as usize, SeqCst);
        }
        publisher.requested_at.store(0, SeqCst);
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

    // What was last published per (installation, application id).
    let mut published: HashMap<(pg_sys::Oid, i32), Option<i64>> = HashMap::new();
    let mut names: HashMap<(pg_sys::Oid, i32), String> = HashMap::new();
    let mut last_change = std::time::Instant::now();
    loop {
        let round = std::panic::AssertUnwindSafe(|| publish(&shared, &mut published, &mut names));
        if BackgroundWorker::transaction(round) {
            last_change = std::time::Instant::now();
        } else if last_change.elapsed() > IDLE_EXIT {
            // The next concurrent append starts it again.
            break;
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
}

/// One round: publishes every horizon that changed; returns whether one did.
fn publish(
    shared: &shared::Shared,
    published: &mut HashMap<(pg_sys::Oid, i32), Option<i64>>,
    names: &mut HashMap<(pg_sys::Oid, i32), String>,
) -> bool {
    let Ok(relation) = access::events_relation() else {
        return false; // the extension is not (or no longer) installed here
    };
    let mut changes = Vec::new();
    for entry in shared.entries_of(relation) {
        let horizon = entry.horizon();
        let key = (relation, entry.application());
        if published.get(&key) != Some(&horizon) {
            changes.push((
                entry.application(),
                published.get(&key).copied().flatten(),
                horizon,
            ));
            published.insert(key, horizon);
        }
    }
    if changes.is_empty() {
        return false;
    }
    let outcome: Result<()> = statements::connected(|| {
        // A registry id never changes its name: names are read once.
        let unknown: Vec<i32> = changes
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !names.contains_key(&(relation, *id)))
            .collect();
        if !unknown.is_empty() {
            for (id, name) in registry::names(unknown, Snapshot::Current)? {
                names.insert((relation, id), name);
            }
        }
        for (id, before, horizon) in &changes {
            statements::execute(
                &statements::PUBLISH_HORIZON,
                &[id.into_datum(), horizon.into_datum()],
                Snapshot::Current,
                |_| (),
            )?;
            if let (Some(name), Some(horizon)) = (names.get(&(relation, *id)), horizon) {
                if before.is_none_or(|before| before < *horizon) {
                    let first = before.map_or(*horizon, |before| before + 1);
                    notify::send(name, first, *horizon);
                }
            }
        }
        Ok(())
    });
    if let Err(error) = outcome {
        pgrx::warning!("biomero_tracking horizon publisher: {error}");
        published.clear();
    }
    true
}
