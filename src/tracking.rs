//! Follower positions: record_tracking, claim, reset_position, and the reset tables whose
//! drop forgets a follower's positions.
//!
//! A follower application processes the notifications of an upstream application and records
//! the last one it processed. Recording is `INSERT … ON CONFLICT DO UPDATE … WHERE` on one row
//! per (follower, upstream) pair, so it never raises a unique violation: it advances the
//! position or reports that it was already there. The claim lets several processes of one
//! follower take turns instead of processing the same notification twice.

use crate::access::{self, Action};
use crate::error::{self, Error, Result};
use crate::ids;
use crate::input;
use crate::locks::{self, LockKind};
use crate::registry::{self, ApplicationId, Mode};
use crate::shared;
use crate::statements::{self, Snapshot};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// A validated (follower, upstream, notification id) triple.
pub struct Position<'a> {
    pub follower: &'a str,
    pub upstream: &'a str,
    pub notification_id: i64,
}

impl<'a> Position<'a> {
    pub fn new(
        follower: &'a str,
        upstream: Option<&'a str>,
        notification_id: Option<i64>,
        upstream_arg: &str,
        notification_id_arg: &str,
    ) -> Result<Self> {
        Ok(Position {
            follower,
            upstream: input::name(upstream, upstream_arg)?,
            notification_id: input::at_least(
                input::required(notification_id, notification_id_arg)?,
                1,
                notification_id_arg,
            )?,
        })
    }
}

/// What a transaction whose snapshot misses the latest position conflicted with.
fn position_recorded_after_snapshot(follower: &str, upstream: &str) -> String {
    format!(
        "the position of follower \"{follower}\" on upstream \"{upstream}\" was recorded \
         after this transaction's snapshot was taken"
    )
}

/// Moves the pair's position forward to `position`; false when it was already at or past it.
/// The caller is authorized for the follower.
pub fn advance(position: &Position) -> Result<bool> {
    check_readable(position)?;
    let conflict = || position_recorded_after_snapshot(position.follower, position.upstream);
    let arguments = [
        position.follower.into_datum(),
        position.upstream.into_datum(),
        position.notification_id.into_datum(),
    ];
    // The transaction's own snapshot: under REPEATABLE READ and SERIALIZABLE a position moved
    // by a transaction this one does not see is a conflict, not something to build on.
    error::reword_serialization_failure(conflict, || {
        statements::execute(
            &statements::ADVANCE_POSITION,
            &arguments,
            Snapshot::Current,
            |_| (),
        )
        .map(|(advanced, _)| advanced > 0)
    })
}

/// A follower cannot record a position its readers could not have read yet: above the
/// horizon of an upstream whose ids are still in flight.
fn check_readable(position: &Position) -> Result<()> {
    let Some(upstream) = registry::find_latest(position.upstream)? else {
        return Ok(());
    };
    let entry = shared::entry_of(upstream.id)?;
    let horizon = match entry {
        Some(entry) if entry.is_ready() => entry.horizon(),
        // Not yet used since the server started: everything committed is settled.
        _ if upstream.mode == Mode::Concurrent => Some(ids::head(position.upstream)?.unwrap_or(0)),
        _ => None,
    };
    match horizon {
        Some(horizon) if position.notification_id > horizon => {
            Err(Error::InvalidArgument(format!(
                "notification {} of \"{}\" is above its horizon {horizon}: no reader can have \
                 processed it yet",
                position.notification_id, position.upstream
            )))
        }
        _ => Ok(()),
    }
}

/// Records that follower `application_name` has processed notification `notification_id` of
/// `upstream_application_name`. True when the position advanced, false when it was already at
/// or past it.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn record_tracking(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
    notification_id: Option<i64>,
) -> Result<bool, ErrorReport> {
    let follower = input::name(application_name, "application_name")?;
    let position = Position::new(
        follower,
        upstream_application_name,
        notification_id,
        "upstream_application_name",
        "notification_id",
    )?;
    let caller = access::caller();
    let _owner = access::as_owner("biomero.record_tracking")?;
    Ok(statements::connected(|| {
        let registered = registry::register(follower)?;
        caller.authorize(&registered, Action::RecordPosition)?;
        advance(&position)
    })?)
}

/// The pair's position as `snapshot` sees it.
fn position(follower: &str, upstream: &str, snapshot: Snapshot) -> Result<Option<i64>> {
    Ok(statements::first(
        &statements::POSITION,
        &[follower.into_datum(), upstream.into_datum()],
        snapshot,
        |row| row.get::<i64>(1),
    )?
    .flatten())
}

fn uses_transaction_snapshot() -> bool {
    // SAFETY: reads the transaction's isolation level.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Takes the claim of (follower, upstream) and returns the position its last holder
/// committed, registering both names. Without `wait`, a name another transaction is using for
/// the first time (and so registering) counts as taken, like the claim itself.
fn take_claim(follower: &str, upstream: &str, wait: bool) -> Result<Option<i64>> {
    let (follower_id, upstream_id) = if wait {
        (
            registry::register(follower)?.id,
            registry::register(upstream)?.id,
        )
    } else {
        match (
            registry::register_unless_busy(follower)?,
            registry::register_unless_busy(upstream)?,
        ) {
            (Some(follower), Some(upstream)) => (follower.id, upstream.id),
            _ => return Ok(None),
        }
    };
    let taken = locks::acquire(
        LockKind::Claim,
        follower_id,
        Some(upstream_id),
        wait,
        || format!("the claim of follower \"{follower}\" on upstream \"{upstream}\""),
    )?;
    if !taken {
        return Ok(None);
    }
    // The latest committed position: a processor that waited sees what the previous holder
    // recorded. A transaction whose snapshot does not see that position (REPEATABLE READ or
    // SERIALIZABLE, begun earlier) must not process from the older one it sees.
    let latest = position(follower, upstream, Snapshot::Latest)?;
    if uses_transaction_snapshot() && position(follower, upstream, Snapshot::Current)? != latest {
        return Err(Error::SerializationFailure(
            position_recorded_after_snapshot(follower, upstream),
        ));
    }
    Ok(Some(latest.unwrap_or(0)))
}

/// Claims the (follower, upstream) pair until the end of the transaction and returns its last
/// processed notification id (0 when none). With `wait => false` it returns NULL at once when
/// another transaction holds the claim.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn claim(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
    wait: default!(Option<bool>, true),
) -> Result<Option<i64>, ErrorReport> {
    let follower = input::name(application_name, "application_name")?;
    let upstream = input::name(upstream_application_name, "upstream_application_name")?;
    let wait = input::required(wait, "wait")?;
    let caller = access::caller();
    let _owner = access::as_owner("biomero.claim")?;
    Ok(statements::connected(|| {
        if let Some(registered) = registry::find_latest(follower)? {
            caller.authorize(&registered, Action::Claim)?;
        }
        take_claim(follower, upstream, wait)
    })?)
}

/// An administrator's correction: sets the follower's position to `notification_id`, back
/// as well as forward (0 forgets it), after waiting for the follower's current processor to
/// finish, and returns the position it replaced (NULL when none).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn reset_position(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
    notification_id: Option<i64>,
) -> Result<Option<i64>, ErrorReport> {
    let follower = input::name(application_name, "application_name")?;
    let upstream = input::name(upstream_application_name, "upstream_application_name")?;
    let notification_id = input::at_least(
        input::required(notification_id, "notification_id")?,
        0,
        "notification_id",
    )?;
    let caller = access::caller();
    let _owner = access::as_owner("biomero.reset_position")?;
    Ok(statements::connected(|| {
        // A restricted follower's position is moved by members of its role only, as it is
        // recorded by them only.
        if let Some(registered) = registry::find_latest(follower)? {
            caller.authorize(&registered, Action::RecordPosition)?;
        }
        if notification_id == 0 {
            return forget(follower, upstream);
        }
        let previous = take_claim(follower, upstream, true)?.filter(|&position| position > 0);
        let arguments = [
            follower.into_datum(),
            upstream.into_datum(),
            notification_id.into_datum(),
        ];
        statements::execute(
            &statements::SET_POSITION,
            &arguments,
            Snapshot::Latest,
            |_| (),
        )?;
        Ok(previous)
    })?)
}

/// Forgets the pair's position after its current processor finishes; returns the position
/// forgotten (NULL when none).
fn forget(follower: &str, upstream: &str) -> Result<Option<i64>> {
    let previous = take_claim(follower, upstream, true)?.filter(|&position| position > 0);
    statements::execute(
        &statements::FORGET_POSITION,
        &[follower.into_datum(), upstream.into_datum()],
        Snapshot::Latest,
        |_| (),
    )?;
    Ok(previous)
}

/// A follower's reset table is named `biomero_reset_<registry id>`. eventsourcing-sqlalchemy's
/// callers reset a follower by dropping its tracking table (BIOMERO's `init_slurm` does, with
/// the name the follower's recorder gives): dropping the reset table forgets the follower's
/// positions in the dropping transaction, with whatever else that transaction drops (the event
/// trigger of sql/rebuild.sql). The id, not the name, keeps it an identifier of any name.
const RESET_TABLE_PREFIX: &str = "biomero_reset_";

/// The name of the table whose DROP forgets every position of follower `application_name`
/// (registering the name on first use). The caller creates the table, so it may drop it.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn reset_table_name(application_name: Option<&str>) -> Result<String, ErrorReport> {
    let follower = input::name(application_name, "application_name")?;
    let caller = access::caller();
    let _owner = access::as_owner("biomero.reset_table_name")?;
    Ok(statements::connected(|| {
        let registered = registry::register(follower)?;
        caller.authorize(&registered, Action::RecordPosition)?;
        Ok(format!("{RESET_TABLE_PREFIX}{}", registered.id.0))
    })?)
}

/// The registry id a reset table's name carries.
fn reset_table_id(table: &str) -> Result<ApplicationId> {
    table
        .strip_prefix(RESET_TABLE_PREFIX)
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<i32>().ok())
        .map(ApplicationId)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "\"{table}\" is not the name of a reset table ({RESET_TABLE_PREFIX}<id>)"
            ))
        })
}

#[pg_schema]
mod biomero_internal {
    use super::*;

    /// Forgets every position of the follower whose reset table `reset_table` was dropped,
    /// each after the pair's current processor finishes, and returns how many it forgot.
    /// Called by the event trigger; granted to nobody, so that dropping a reset table is a
    /// reset only for the roles an administrator lets reset.
    #[pg_extern(volatile, parallel_unsafe)]
    #[search_path(pg_catalog, pg_temp)]
    fn forget_positions(reset_table: Option<&str>) -> Result<i32, ErrorReport> {
        let id = reset_table_id(input::required(reset_table, "reset_table")?)?;
        let caller = access::caller();
        let _owner = access::as_owner("biomero_internal.forget_positions")?;
        Ok(statements::connected(|| {
            let Some(follower) = registry::names(&[id], Snapshot::Latest)?.remove(&id) else {
                return Ok(0); // an id never registered has no positions
            };
            if let Some(registered) = registry::find_latest(&follower)? {
                caller.authorize(&registered, Action::RecordPosition)?;
            }
            let (_, upstreams) = statements::execute(
                &statements::UPSTREAMS_OF,
                &[follower.as_str().into_datum()],
                Snapshot::Latest,
                |row| row.get::<String>(1),
            )?;
            let mut forgotten = 0;
            for upstream in upstreams.into_iter().flatten() {
                if forget(&follower, &upstream)?.is_some() {
                    forgotten += 1;
                }
            }
            Ok(forgotten)
        })?)
    }
}
