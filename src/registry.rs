//! The application registry (`biomero.application_registry`): one row per application name,
//! with a small integer id assigned once, its append mode, the role it is restricted to and the
//! horizon published for standbys.
//!
//! The id is what the extension's locks and shared memory are keyed by, so distinct names never
//! share a lock. Followers and upstreams are applications too: a claim is keyed by the pair of
//! ids. Writers register names on first use; readers only look them up.

use crate::catalog;
use crate::error::{reword_wait, Error, Result};
use crate::statements::{self, Snapshot};
use crate::subtransaction;
use pgrx::pg_sys::{self, Oid};
use pgrx::{FromDatum, IntoDatum, PgSqlErrorCode};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serialized,
    Concurrent,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "serialized" => Some(Mode::Serialized),
            "concurrent" => Some(Mode::Concurrent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Serialized => "serialized",
            Mode::Concurrent => "concurrent",
        }
    }
}

/// An application's registry id: what its locks and shared memory are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApplicationId(pub i32);

impl ApplicationId {
    pub fn datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
}

/// An application's registry row.
#[derive(Clone, Debug)]
pub struct Application {
    pub id: ApplicationId,
    pub name: String,
    /// The mode as committed in the registry; shared memory has the live one.
    pub mode: Mode,
    pub restricted_to: Option<Oid>,
    pub published_horizon: Option<i64>,
}

thread_local! {
    /// Registry rows this backend has found, by name, so that a write's first step runs no
    /// statement. Emptied when a change of mode or restriction commits anywhere (it sends an
    /// invalidation of the registry, which every backend takes in at its next transaction
    /// start) and when a transaction or subtransaction of this backend aborts (a row it
    /// registered then is gone) or is prepared (it may yet be rolled back). The horizon
    /// published for standbys may be stale in it: the one use of it, by serialized writers,
    /// corrects it.
    static CACHE: RefCell<HashMap<String, Application>> = RefCell::new(HashMap::new());
    /// The registry table's oid when the cache was filled, to recognize its invalidations.
    static CACHED_REGISTRY: Cell<Oid> = const { Cell::new(Oid::INVALID) };
}

/// Registers the callbacks that empty the cache; called once per process by `_PG_init`.
pub fn install_cache_invalidation() {
    // SAFETY: registers static callbacks for this process (and, in the postmaster, for the
    // backends it forks).
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relation_invalidated),
            pg_sys::Datum::from(0),
        );
        pg_sys::RegisterXactCallback(Some(on_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_end), std::ptr::null_mut());
    }
}

fn forget_all() {
    CACHE.with(|cache| cache.borrow_mut().clear());
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relation_invalidated(_argument: pg_sys::Datum, relation: Oid) {
    // No catalog access here: compare with the oid noted when the cache was filled.
    if relation == Oid::INVALID || relation == CACHED_REGISTRY.with(Cell::get) {
        forget_all();
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _argument: *mut std::ffi::c_void,
) {
    // A prepared transaction may still be rolled back (ROLLBACK PREPARED, from any
    // session): a name it registered is not known to be registered.
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PREPARE
    {
        forget_all();
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    _subtransaction: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _argument: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        forget_all();
    }
}

fn remember(name: &str, application: &Application) {
    if let Ok(registry) = catalog::registry() {
        CACHED_REGISTRY.with(|cached| cached.set(registry));
        CACHE.with(|cache| {
            cache
                .borrow_mut()
                .insert(name.to_string(), application.clone())
        });
    }
}

fn cached(name: &str) -> Option<Application> {
    CACHE.with(|cache| cache.borrow().get(name).cloned())
}

/// Notes that the registry row of `name` publishes no horizon any more.
pub fn forget_published_horizon(name: &str) {
    CACHE.with(|cache| {
        if let Some(application) = cache.borrow_mut().get_mut(name) {
            application.published_horizon = None;
        }
    });
}

/// Makes every backend read the registry again at its next transaction start, once the
/// calling transaction commits: after a change of mode or restriction.
pub fn invalidate_everywhere() -> Result<()> {
    let registry = catalog::registry()?;
    // SAFETY: queues a relcache invalidation, sent to the other backends at commit; the
    // command counter increment applies it to this backend now (a backend applies its own
    // invalidations at the end of each command, not when it commits).
    unsafe {
        pg_sys::CacheInvalidateRelcacheByRelid(registry);
        pg_sys::CommandCounterIncrement();
    }
    Ok(())
}

/// The latest committed registry row of `name` (this transaction's own included), from the
/// cache when this backend found it before.
pub fn find_latest(name: &str) -> Result<Option<Application>> {
    if let Some(application) = cached(name) {
        return Ok(Some(application));
    }
    let found = find(name, Snapshot::Latest)?;
    if let Some(application) = &found {
        remember(name, application);
    }
    Ok(found)
}

/// The registry row of `name` as `snapshot` sees it.
pub fn find(name: &str, snapshot: Snapshot) -> Result<Option<Application>> {
    statements::first(
        &statements::FIND_APPLICATION,
        &[name.into_datum()],
        snapshot,
        |row| -> Result<Application> {
            let mode: String = row.get(2).unwrap_or_default();
            Ok(Application {
                id: ApplicationId(
                    row.get::<i32>(1)
                        .ok_or_else(|| Error::Internal("application_id is NULL".into()))?,
                ),
                name: name.to_string(),
                mode: Mode::parse(&mode)
                    .ok_or_else(|| Error::Internal(format!("unknown append mode {mode:?}")))?,
                restricted_to: row.get::<Oid>(3),
                published_horizon: row.get::<i64>(4),
            })
        },
    )?
    .transpose()
}

/// The names of the registry ids `ids` (those found), read with `snapshot`.
pub fn names(ids: &[ApplicationId], snapshot: Snapshot) -> Result<HashMap<ApplicationId, String>> {
    let ids: Vec<i32> = ids.iter().map(|id| id.0).collect();
    let (_, rows) = statements::execute(
        &statements::APPLICATION_NAMES,
        &[ids.into_datum()],
        snapshot,
        |row| (row.get::<i32>(1), row.get::<String>(2)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, name)| Some((ApplicationId(id?), name?)))
        .collect())
}

/// The registry row of `name`, registering it first if it is new. Reads the latest committed
/// state, so a name registered after the caller's snapshot is found, not registered twice; a
/// registration still in progress elsewhere is waited for.
pub fn register(name: &str) -> Result<Application> {
    loop {
        if let Some(application) = find_latest(name)? {
            return Ok(application);
        }
        // A first use of the name by a transaction that has not committed yet is waited for
        // (one name, one id); a wait cut by lock_timeout or statement_timeout says so.
        let describe =
            || format!("the registration of application \"{name}\" by another transaction");
        if reword_wait(describe, || insert(name))? {
            return registered(name);
        }
    }
}

/// Like [`register`], but when another transaction is registering the name at this moment
/// (its first use, not committed yet), returns None at once instead of waiting for it.
pub fn register_unless_busy(name: &str) -> Result<Option<Application>> {
    loop {
        if let Some(application) = find_latest(name)? {
            return Ok(Some(application));
        }
        match subtransaction::attempt(
            Some(c"1"),
            &[PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE],
            || insert(name),
        )? {
            Err(_) => return Ok(None),
            Ok(true) => return registered(name).map(Some),
            Ok(false) => {}
        }
    }
}

/// Inserts the registry row of `name` in a subtransaction; false when the registration
/// another transaction committed while this one waited for it conflicts with this
/// transaction's snapshot (REPEATABLE READ, SERIALIZABLE): the caller looks it up again,
/// with a newer snapshot, instead of failing with a serialization error.
fn insert(name: &str) -> Result<bool> {
    let inserted = subtransaction::attempt(
        None,
        &[PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE],
        || {
            statements::execute(
                &statements::REGISTER_APPLICATION,
                &[name.into_datum()],
                Snapshot::Latest,
                |_| (),
            )
        },
    )?;
    Ok(inserted.is_ok())
}

fn registered(name: &str) -> Result<Application> {
    find_latest(name)?
        .ok_or_else(|| Error::Internal(format!("application \"{name}\" was not registered")))
}

/// The name of registry id `id`, also when the transaction registering it has not committed
/// yet (a dirty read of the registry: the operator views name the locks such a transaction
/// holds). None when no such row exists or its registration was rolled back.
pub fn name_including_uncommitted(id: ApplicationId) -> Result<Option<String>> {
    let registry = catalog::registry()?;
    let index = catalog::registry_key()?;
    // SAFETY: an index scan of the registry in the caller's transaction, with the lock a
    // reader takes; the tuple is read before the scan ends, and the relation is closed.
    unsafe {
        let relation = pg_sys::table_open(registry, pg_sys::AccessShareLock as i32);
        let mut snapshot: pg_sys::SnapshotData = std::mem::zeroed();
        snapshot.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            1, // application_id
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::RegProcedure::from(pg_sys::F_INT4EQ),
            pg_sys::Datum::from(id.0),
        );
        let scan = pg_sys::systable_beginscan(relation, index, true, &mut snapshot, 1, &mut key);
        let tuple = pg_sys::systable_getnext(scan);
        let name = if tuple.is_null() {
            None
        } else {
            let mut is_null = false;
            let datum = pg_sys::SPI_getbinval(tuple, (*relation).rd_att, 2, &mut is_null);
            String::from_datum(datum, is_null)
        };
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        Ok(name)
    }
}
