//! An administrator's functions: the append mode, the restriction of an application to a
//! role, and the lock an import takes. None is granted to anyone by the extension.

use crate::access;
use crate::catalog;
use crate::error::{Error, Result};
use crate::ids;
use crate::input;
use crate::locks;
use crate::registry::{self, ApplicationId, Mode};
use crate::shared;
use crate::statements::{self, Snapshot};
use crate::subtransaction;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Sets the append mode of `application_name` (`'serialized'` or `'concurrent'`) from the
/// commit of the calling transaction on, and returns the mode it had. Waits for the
/// application's serialized appends in progress; concurrent appends in progress finish as
/// they began, and serialized appends after a switch wait for them.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn set_append_mode(
    application_name: Option<&str>,
    mode: Option<&str>,
) -> Result<String, ErrorReport> {
    let application = input::name(application_name, "application_name")?;
    let mode_text = input::required(mode, "mode")?;
    let mode = Mode::parse(mode_text).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "mode must be 'serialized' or 'concurrent', got '{mode_text}'"
        ))
    })?;
    let _owner = access::as_owner("biomero.set_append_mode")?;
    Ok(statements::connected(|| {
        let registered = registry::register(application)?;
        let Some(shared) = shared::shared() else {
            if mode == Mode::Concurrent {
                return Err(Error::NotInPrerequisiteState(
                    "concurrent append mode needs biomero_tracking in shared_preload_libraries \
                     (and a server restart)"
                        .into(),
                ));
            }
            locks::append(&registered)?;
            set_mode(registered.id, mode, None)?;
            return Ok(registered.mode.as_str().to_string());
        };
        locks::append(&registered)?;
        let relation = catalog::events()?;
        let entry = match mode {
            Mode::Concurrent => shared.find_or_create(relation, registered.id)?,
            Mode::Serialized => match shared.find(relation, registered.id) {
                Some(entry) => entry,
                // No append state since the server started: nothing is in flight, so there
                // is nothing to switch in shared memory either.
                None => {
                    set_mode(registered.id, mode, None)?;
                    return Ok(registered.mode.as_str().to_string());
                }
            },
        };
        ids::ready(&registered, &entry)?;
        let previous = entry.mode();
        // Ids handed out from the commit on are above everything committed; they never go
        // back, so ids taken in an earlier concurrent period are not reused either.
        let head = ids::head(application)?.unwrap_or(0);
        head.checked_add(1)
            .ok_or_else(|| Error::IdsExhausted(application.to_string()))?;
        // What standbys may read from the commit on: everything committed below every id
        // still in flight (ids of concurrent appends that began before may still commit).
        let horizon = entry.horizon().map_or(head, |horizon| horizon.min(head));
        set_mode(registered.id, mode, Some(horizon))?;
        shared::switch_at_commit(&entry, mode, head)?;
        shared::ensure_publisher()?;
        Ok(previous.as_str().to_string())
    })?)
}

fn set_mode(id: ApplicationId, mode: Mode, head: Option<i64>) -> Result<()> {
    subtransaction::again_on_conflict(|| {
        statements::execute(
            &statements::SET_APPEND_MODE,
            &[id.datum(), mode.as_str().into_datum(), head.into_datum()],
            Snapshot::Latest,
            |_| (),
        )
    })?;
    registry::invalidate_everywhere()
}

/// From now on only members of `role` may append to, record positions of, or claim as
/// `application_name`; NULL lifts the restriction. Applications never restricted admit every
/// role that may execute the functions. Its SQL declaration is in `sql/admin.sql` (the role is
/// a regrole).
#[pg_extern(sql = false)]
fn restrict_application(
    application_name: Option<&str>,
    role: Option<pg_sys::Oid>,
) -> Result<(), ErrorReport> {
    let application = input::name(application_name, "application_name")?;
    let _owner = access::as_owner("biomero.restrict_application")?;
    Ok(statements::connected(|| {
        let registered = registry::register(application)?;
        subtransaction::again_on_conflict(|| {
            statements::execute(
                &statements::SET_RESTRICTION,
                &[registered.id.datum(), role.into_datum()],
                Snapshot::Latest,
                |_| (),
            )
        })?;
        registry::invalidate_everywhere()
    })?)
}

/// The import's lock (in schema biomero_internal: a helper of `biomero.import_eventsourcing`).
#[pg_schema]
mod biomero_internal {
    use super::*;

    /// Used by `biomero.import_eventsourcing`: registers the application, takes its append lock
    /// (so appends wait for the import and the import for appends in progress) and returns the
    /// highest committed id. Refuses applications in concurrent mode or still settling.
    #[pg_extern(volatile, parallel_unsafe)]
    #[search_path(pg_catalog, pg_temp)]
    fn lock_for_import(application_name: Option<&str>) -> Result<i64, ErrorReport> {
        let application = input::name(application_name, "application_name")?;
        let _owner = access::as_owner("biomero.lock_for_import")?;
        Ok(statements::connected(|| {
            let registered = registry::register(application)?;
            locks::append(&registered)?;
            let entry = shared::entry_of(registered.id)?;
            // The registry row is this transaction's latest: a switch made earlier in the same
            // transaction counts, though it takes effect only at the commit.
            let concurrent = registered.mode == Mode::Concurrent
                || match &entry {
                    Some(entry) => {
                        ids::ready(&registered, entry)?;
                        entry.mode() == Mode::Concurrent
                            || entry.in_flight()
                            || shared::switching_here(entry)
                    }
                    None => false,
                };
            if concurrent {
                return Err(Error::NotInPrerequisiteState(format!(
                    "application \"{application}\" is in concurrent append mode, or switches \
                     to it or from it in this transaction: commit \
                     biomero.set_append_mode('{application}', 'serialized') before importing"
                )));
            }
            Ok(ids::head(application)?.unwrap_or(0))
        })?)
    }
}
