//! Reads: one aggregate's events, and what the SQL-language reads (`sql/read.sql`) need from
//! shared memory: how far a reader may read, the horizon now and the appends in flight.
//!
//! Every read runs with the caller's snapshot, assigns no transaction id, works in parallel
//! plans and on a standby.

use crate::catalog;
use crate::error::{Error, Result};
use crate::input;
use crate::registry::{self, ApplicationId};
use crate::shared;
use crate::statements::{self, Snapshot};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;

/// Events of one aggregate, by version: after `gt`, up to `lte`, descending when `desc`, at
/// most `limit` (NULL: all).
// pgrx reads the column names from the signature itself.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn select_events(
    application_name: Option<&str>,
    originator_id: Option<Uuid>,
    gt: default!(Option<i64>, "NULL"),
    lte: default!(Option<i64>, "NULL"),
    desc: default!(Option<bool>, false),
    limit: default!(Option<i64>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(notification_id, i64),
            name!(originator_id, Uuid),
            name!(originator_version, i64),
            name!(topic, String),
            name!(state, Vec<u8>),
        ),
    >,
    ErrorReport,
> {
    let application = input::name(application_name, "application_name")?;
    let originator_id = input::required(originator_id, "originator_id")?;
    let descending = input::required(desc, "\"desc\"")?;
    let limit = input::limit(limit)?;
    let statement = if descending {
        &statements::AGGREGATE_EVENTS_DESCENDING
    } else {
        &statements::AGGREGATE_EVENTS_ASCENDING
    };
    let arguments = [
        application.into_datum(),
        originator_id.into_datum(),
        gt.into_datum(),
        lte.into_datum(),
        limit.into_datum(),
    ];
    let rows = statements::connected(|| {
        let (_, rows) = statements::execute(statement, &arguments, Snapshot::Caller, |row| {
            Some((
                row.get::<i64>(1)?,
                row.get::<Uuid>(2)?,
                row.get::<i64>(3)?,
                row.get::<String>(4)?,
                row.get::<Vec<u8>>(5)?,
            ))
        })?;
        rows.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Internal("a NOT NULL column of biomero.events is NULL".into()))
    })?;
    Ok(TableIterator::new(rows))
}

fn in_recovery() -> bool {
    // SAFETY: reads shared state.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// The application's live append mode and horizon now (the highest id below every id in
/// flight; NULL when nothing is in flight in serialized mode). On a standby: the mode and the
/// horizon published by the primary.
// pgrx reads the column names from the signature itself.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn append_state(
    application_name: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(append_mode, Option<String>),
            name!(horizon, Option<i64>),
        ),
    >,
    ErrorReport,
> {
    let application = input::name(application_name, "application_name")?;
    let row = statements::connected(|| {
        let Some(registered) = registry::find(application, Snapshot::Caller)? else {
            return Ok((None, None));
        };
        if in_recovery() {
            return Ok((
                Some(registered.mode.as_str().to_string()),
                registered.published_horizon,
            ));
        }
        let entry = shared::entry_of(registered.id)?;
        Ok(match entry {
            Some(entry) if entry.is_ready() => {
                (Some(entry.mode().as_str().to_string()), entry.horizon())
            }
            _ => (Some(registered.mode.as_str().to_string()), None),
        })
    })?;
    Ok(TableIterator::once(row))
}

/// The highest notification id of `application_name` handed out in concurrent mode that the
/// horizon can reach while the calling transaction goes on: once the horizon reaches it,
/// every append of another transaction in flight when it was read has ended. Below the
/// calling transaction's own ids, when it holds some (they settle only at its commit). NULL
/// when the application is serialized with nothing in flight, and on a standby. A follower
/// prompted by a commit waits for it, so that an id committed above one still in flight is
/// not left for a prompt that may never come.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn last_taken_id(application_name: Option<&str>) -> Result<Option<i64>, ErrorReport> {
    let application = input::name(application_name, "application_name")?;
    Ok(statements::connected(|| {
        let Some(registered) = registry::find(application, Snapshot::Caller)? else {
            return Ok(None);
        };
        if in_recovery() {
            return Ok(None);
        }
        let Some(entry) = shared::entry_of(registered.id)?.filter(|entry| entry.is_ready()) else {
            return Ok(None);
        };
        Ok(match entry.lowest_held_here()? {
            Some(lowest) => entry.taken().map(|taken| taken.min(lowest - 1)),
            None => entry.taken(),
        })
    })?)
}

/// Transactions holding concurrent ids not yet committed, in this database: which application,
/// which backend, since when, and the lowest id each holds (the horizon is below the lowest).
// pgrx reads the column names from the signature itself.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
fn in_flight_appends() -> Result<
    TableIterator<
        'static,
        (
            name!(application_name, Option<String>),
            name!(pid, i32),
            name!(transaction_start, TimestampWithTimeZone),
            name!(lowest_id, i64),
        ),
    >,
    ErrorReport,
> {
    let Some(shared) = shared::shared() else {
        return Ok(TableIterator::new(Vec::new()));
    };
    let holders = shared.holders_of(catalog::events()?);
    let rows = statements::connected(|| {
        let ids: Vec<ApplicationId> = holders.iter().map(|holder| holder.application).collect();
        let mut names = registry::names(&ids, Snapshot::Caller)?;
        // A transaction can append to a name it registered itself and not committed yet.
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(vacant) = names.entry(id) {
                if let Some(name) = registry::name_including_uncommitted(id)? {
                    vacant.insert(name);
                }
            }
        }
        Ok(holders
            .iter()
            .map(|holder| {
                (
                    names.get(&holder.application).cloned(),
                    holder.pid,
                    // SAFETY: a PostgreSQL timestamp read from shared memory.
                    unsafe {
                        TimestampWithTimeZone::from_datum(
                            pg_sys::Datum::from(holder.started),
                            false,
                        )
                    }
                    .expect("a timestamp datum"),
                    holder.lowest,
                )
            })
            .collect::<Vec<_>>())
    })?;
    Ok(TableIterator::new(rows))
}

/// Helpers of the SQL-language reads and views (in schema biomero_internal, not the API).
#[pg_schema]
mod biomero_internal {
    use super::*;

    /// The highest notification id of `application_name` a reader with the caller's snapshot may
    /// return, NULL when it may read everything. On a primary it comes from shared memory (see
    /// `shared.rs`); on a standby it is the horizon the primary published through WAL.
    #[pg_extern(stable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn readable_bound(application_name: Option<&str>) -> Result<Option<i64>, ErrorReport> {
        let application = input::name(application_name, "application_name")?;
        Ok(statements::connected(|| {
            let Some(registered) = registry::find(application, Snapshot::Caller)? else {
                return Ok(None);
            };
            // SAFETY: the snapshot of the statement that called this function.
            let snapshot = unsafe { pg_sys::GetActiveSnapshot() };
            // A snapshot taken on a standby keeps the standby's view after a promotion: it reads
            // up to the horizon the primary published, which that view includes.
            if in_recovery() || unsafe { (*snapshot).takenDuringRecovery } {
                return Ok(registered.published_horizon);
            }
            let Some(entry) = shared::entry_of(registered.id)? else {
                return Ok(None);
            };
            if !entry.is_ready() {
                // No concurrent append has begun since the server started.
                return Ok(None);
            }
            Ok(entry.readable_bound(snapshot))
        })?)
    }

    /// The name of registry id `application_id`, also while the transaction registering it has
    /// not committed (for `biomero.locks`, which shows the locks such a transaction holds). For
    /// callers that may read the registry or that view; NULL when there is no such id.
    #[pg_extern(stable, parallel_safe)]
    #[search_path(pg_catalog, pg_temp)]
    fn application_name_of(application_id: Option<i32>) -> Result<Option<String>, ErrorReport> {
        let Some(id) = application_id else {
            return Ok(None);
        };
        if !catalog::may_select(c"application_registry") && !catalog::may_select(c"locks") {
            return Err(Error::PermissionDenied(
                "permission denied to read application names: SELECT on \
                 biomero.application_registry or biomero.locks is needed"
                    .into(),
            )
            .into());
        }
        Ok(registry::name_including_uncommitted(ApplicationId(id))?)
    }
}
