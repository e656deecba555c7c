//! Entry points of older releases whose functions are SQL now. A database still at an older
//! version calls them until it runs `ALTER EXTENSION biomero_tracking UPDATE`; they say so
//! instead of failing on a missing symbol, and they let that version's install script (used
//! by `CREATE EXTENSION … VERSION` and by the update path) find its symbols.

use crate::error::Error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// 0.1.0's `select_notifications` (PL/pgSQL since 0.2.0).
#[pg_extern(sql = false)]
fn select_notifications() -> Result<i64, ErrorReport> {
    Err(Error::UpdateRequired("biomero.select_notifications").into())
}

/// 0.1.0 and 0.2.0's `max_notification_id` (PL/pgSQL since 0.3.0).
#[pg_extern(sql = false)]
fn max_notification_id() -> Result<i64, ErrorReport> {
    Err(Error::UpdateRequired("biomero.max_notification_id").into())
}

/// 0.1.0 and 0.2.0's `max_tracking_id` (PL/pgSQL since 0.3.0).
#[pg_extern(sql = false)]
fn max_tracking_id() -> Result<i64, ErrorReport> {
    Err(Error::UpdateRequired("biomero.max_tracking_id").into())
}

/// 0.1.0 and 0.2.0's `summary` (SQL since 0.3.0).
#[pg_extern(sql = false)]
fn summary() -> Result<i64, ErrorReport> {
    Err(Error::UpdateRequired("biomero.summary").into())
}
