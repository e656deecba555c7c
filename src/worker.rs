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
//! Every advance is announced: the worker's slot (`shared/publishers.rs`) makes sure one runs
//! whenever something may be left to publish. The worker leaves after
//! `biomero.publisher_idle_timeout` without a change, but only once everything is published
//! and nothing is in flight; terminated with work left, it asks for a successor. It also
//! leaves at once when a command needs the database to itself (`DROP DATABASE`, `CREATE
//! DATABASE … TEMPLATE`, `ALTER DATABASE … RENAME`): they hold a lock on the database that it
//! looks for every second, and they would otherwise fail with 55006; a successor it asks for
//! connects once the command is done.

use crate::catalog;
use crate::error::Result;
use crate::notify;
use crate::registry::ApplicationId;
use crate::shared::{self, Publisher, Shared};
use crate::statements::{self, Snapshot};
use crate::subtransaction;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// What a publisher has published per (installation, application id): the application's
/// mode-change count when it looked, and the horizon.
type Published = HashMap<(pg_sys::Oid, ApplicationId), (u32, Option<i64>)>;

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn biomero_tracking_publisher_main(argument: pg_sys::Datum) {
    let slot = unsafe { i32::from_datum(argument, false) }.unwrap_or(0) as usize;
    let Some(shared) = shared::shared() else {
        return;
    };
    let publisher = &shared.publishers()[slot];
    let database = publisher.database();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    Publisher::free_at_exit(slot);
    if !publisher.take_over(&shared) {
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
                publisher.step_down(&shared, || work_left(&shared, &published));
                return;
            }
            Round::Changed => last_change = Instant::now(),
            Round::Unchanged => {
                let idle = Duration::from_millis(IDLE_TIMEOUT.get().max(0) as u64);
                if last_change.elapsed() >= idle
                    && publisher.leave_if_idle(&shared, || work_left(&shared, &published))
                {
                    return;
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(ROUND)) {
            // Terminated (or the postmaster is gone): a successor publishes what is left.
            publisher.step_down(&shared, || work_left(&shared, &published));
            return;
        }
    }
}

/// Whether a command waits for this database to have no other sessions: it holds a lock on
/// the database that conflicts with the one every session takes to connect.
fn wanted_elsewhere() -> bool {
    let tag = pg_sys::LOCKTAG {
        locktag_field1: 0, // a shared object
        locktag_field2: pg_sys::DatabaseRelationId.to_u32(),
        // SAFETY: set at connection.
        locktag_field3: unsafe { pg_sys::MyDatabaseId }.to_u32(),
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
/// yet or a mode change not looked at (in a transaction of its own).
fn work_left(shared: &Shared, published: &Published) -> bool {
    BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        unpublished(shared, published)
    }))
}

fn unpublished(shared: &Shared, published: &Published) -> bool {
    let Ok(relation) = catalog::events() else {
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
    let Ok(relation) = catalog::events() else {
        return Round::Unchanged; // the extension is not (or no longer) installed here
    };
    let mut changes = Vec::new();
    let mut waiting = false;
    for entry in shared.entries_of(relation) {
        // A writer enlisting across a switch to serialized mode holds ids the horizon does
        // not show yet: a horizon taken back now would announce nothing of them at their
        // commit. The next round sees its slot.
        if entry.enlisting() {
            waiting = true;
            continue;
        }
        // The mode-change count first: a change after it is looked at in the next round.
        let state = (entry.switches(), entry.horizon());
        let key = (relation, entry.application());
        if published.get(&key) != Some(&state) {
            changes.push((key, state));
        }
    }
    if changes.is_empty() {
        return if waiting {
            Round::Changed
        } else {
            Round::Unchanged
        };
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
fn publish_one(id: ApplicationId, horizon: Option<i64>) -> Result<bool> {
    let Some(row) = statements::first(
        &statements::PUBLISHED_HORIZON,
        &[id.datum()],
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
        &[id.datum(), horizon.into_datum()],
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
