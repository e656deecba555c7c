//! Notification-id allocation: the one boundary every append goes through.
//!
//! Today's strategy serializes the appends of one application: it takes the application's
//! append lock (held to commit) and continues from the highest committed id. The lock is
//! released only after the holder's commit is visible, so ids become visible in id order; a
//! rolled-back append hands its ids to the next writer, so there are no gaps. The max() is one
//! descent of the primary-key index, so its cost does not grow with the log.

use crate::error::Result;
use crate::locks::{self, LockKind};
use pgrx::prelude::*;

/// Reserves the next notification ids of `application` for the current transaction and
/// returns the first; the caller inserts consecutive ids from it before anything else appends.
pub fn reserve(application: &str) -> Result<i64> {
    locks::acquire(LockKind::Append, &[application], true)?;
    // `update` (not `select`) makes SPI take a fresh snapshot under READ COMMITTED: the
    // statement's own snapshot predates the lock wait and could miss the last holder's ids.
    let head = Spi::connect_mut(|client| {
        client
            .update(
                "SELECT coalesce(max(notification_id), 0) FROM biomero.events \
                 WHERE application_name = $1",
                None,
                &[application.into()],
            )?
            .first()
            .get_one::<i64>()
    })?;
    Ok(head.unwrap_or(0) + 1)
}
