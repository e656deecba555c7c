//! Follower positions: record_tracking and claim.
//!
//! A follower application processes the notifications of an upstream application and records
//! the last one it processed. Recording is `INSERT … ON CONFLICT DO UPDATE … WHERE` on one row
//! per (follower, upstream) pair, so it never raises a unique violation: it advances the
//! position or reports that it was already there. The claim lets several processes of one
//! follower take turns instead of processing the same notification twice.

use crate::error::{self, Result};
use crate::input;
use crate::locks::{self, LockKind};
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

/// Moves the pair's position forward to `position`; false when it was already at or past it.
pub fn advance(position: &Position) -> Result<bool> {
    let conflict = || {
        format!(
            "the position of follower \"{}\" on upstream \"{}\" was recorded after this \
             transaction's snapshot was taken",
            position.follower, position.upstream
        )
    };
    let advanced = error::reword_serialization_failure(conflict, || {
        Spi::connect_mut(|client| {
            client
                .update(
                    "INSERT INTO biomero.tracking AS t \
                     (application_name, upstream_application_name, notification_id) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (application_name, upstream_application_name) DO UPDATE \
                     SET notification_id = excluded.notification_id \
                     WHERE t.notification_id < excluded.notification_id \
                 RETURNING true",
                    None,
                    &[
                        position.follower.into(),
                        position.upstream.into(),
                        position.notification_id.into(),
                    ],
                )
                .map(|rows| !rows.is_empty())
        })
    })?;
    Ok(advanced)
}

/// Records that follower `application_name` has processed notification `notification_id` of
/// `upstream_application_name`. True when the position advanced, false when it was already at
/// or past it.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_tracking(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
    notification_id: Option<i64>,
) -> bool {
    let run = || -> Result<bool> {
        let follower = input::name(application_name, "application_name")?;
        let position = Position::new(
            follower,
            upstream_application_name,
            notification_id,
            "upstream_application_name",
            "notification_id",
        )?;
        advance(&position)
    };
    run().unwrap_or_else(|error| error.raise())
}

/// Claims the (follower, upstream) pair until the end of the transaction and returns its last
/// processed notification id (0 when none). With `wait => false` it returns NULL at once when
/// another transaction holds the claim.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn claim(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
    wait: default!(Option<bool>, true),
) -> Option<i64> {
    let run = || -> Result<Option<i64>> {
        let follower = input::name(application_name, "application_name")?;
        let upstream = input::name(upstream_application_name, "upstream_application_name")?;
        let wait = input::required(wait, "wait")?;
        if !locks::acquire(LockKind::Claim, &[follower, upstream], wait)? {
            return Ok(None);
        }
        // A fresh snapshot (`update`) so that a processor that waited sees the position the
        // previous holder committed. Under REPEATABLE READ and SERIALIZABLE the row lock makes
        // a position committed after the transaction's snapshot a serialization failure now,
        // before the caller processes anything twice.
        let conflict = || {
            format!(
                "the position of follower \"{follower}\" on upstream \"{upstream}\" was \
                 recorded after this transaction's snapshot was taken"
            )
        };
        let position = error::reword_serialization_failure(conflict, || {
            Spi::connect_mut(|client| {
                client
                    .update(
                        "SELECT notification_id FROM biomero.tracking \
                     WHERE application_name = $1 AND upstream_application_name = $2 \
                     FOR NO KEY UPDATE",
                        None,
                        &[follower.into(), upstream.into()],
                    )?
                    .next()
                    .map_or(Ok(None), |row| row.get::<i64>(1))
            })
        })?;
        Ok(Some(position.unwrap_or(0)))
    };
    run().unwrap_or_else(|error| error.raise())
}
