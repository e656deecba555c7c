//! Reads: one aggregate's events, heads and positions. `select_notifications`, which returns
//! pages of up to thousands of rows, is PL/pgSQL (`sql/read.sql`): it passes the rows of its
//! index scan through without converting each column to Rust and back.

use crate::error::{Error, Result};
use crate::input;
use pgrx::prelude::*;
use pgrx::Uuid;

/// (notification_id, originator_id, originator_version, topic, state); the `#[pg_extern]`
/// signatures below spell it out because pgrx reads column names from the tuple itself.
type EventRow = (i64, Uuid, i64, String, Vec<u8>);

fn event_rows(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<TableIterator<'static, EventRow>> {
    let rows = Spi::connect(|client| {
        let table = client.select(query, None, args)?;
        let mut rows = Vec::with_capacity(table.len());
        for row in table {
            rows.push((
                row.get::<i64>(1)?.expect("notification_id is NOT NULL"),
                row.get::<Uuid>(2)?.expect("originator_id is NOT NULL"),
                row.get::<i64>(3)?.expect("originator_version is NOT NULL"),
                row.get::<String>(4)?.expect("topic is NOT NULL"),
                row.get::<Vec<u8>>(5)?.expect("state is NOT NULL"),
            ));
        }
        Ok::<_, pgrx::spi::Error>(rows)
    })?;
    Ok(TableIterator::new(rows))
}

macro_rules! aggregate_events_query {
    ($direction:literal) => {
        concat!(
            "SELECT notification_id, originator_id, originator_version, topic, state \
             FROM biomero.events \
             WHERE application_name = $1 AND originator_id = $2 \
               AND originator_version > coalesce($3, -1) \
               AND originator_version <= coalesce($4, 9223372036854775807) \
             ORDER BY originator_version ",
            $direction,
            " LIMIT $5"
        )
    };
}

/// Events of one aggregate, by version: after `gt`, up to `lte`, descending when `desc`, at
/// most `limit` (NULL: all).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn select_events(
    application_name: Option<&str>,
    originator_id: Option<Uuid>,
    gt: default!(Option<i64>, "NULL"),
    lte: default!(Option<i64>, "NULL"),
    desc: default!(Option<bool>, false),
    limit: default!(Option<i64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(notification_id, i64),
        name!(originator_id, Uuid),
        name!(originator_version, i64),
        name!(topic, String),
        name!(state, Vec<u8>),
    ),
> {
    let run = || {
        let application = input::name(application_name, "application_name")?;
        let originator_id = input::required(originator_id, "originator_id")?;
        let descending = input::required(desc, "\"desc\"")?;
        let limit = input::limit(limit)?;
        // Two fixed statements (not a pasted direction), so each can walk the index in order.
        let query = if descending {
            aggregate_events_query!("DESC")
        } else {
            aggregate_events_query!("ASC")
        };
        event_rows(
            query,
            &[
                application.into(),
                originator_id.into(),
                gt.into(),
                lte.into(),
                limit.into(),
            ],
        )
    };
    run().unwrap_or_else(|error| error.raise())
}

/// The entry point of the 0.1.0 `select_notifications`, which was implemented here (it is
/// PL/pgSQL now, in `sql/read.sql`). A database still at 0.1.0 calls it until it runs `ALTER
/// EXTENSION biomero_tracking UPDATE`; it says so instead of failing on a missing symbol.
#[pg_extern(sql = false)]
fn select_notifications() -> i64 {
    Error::UpdateRequired("biomero.select_notifications").raise()
}

/// The highest notification id of `application_name`, NULL when it has no events.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn max_notification_id(application_name: Option<&str>) -> Option<i64> {
    let run = || -> Result<Option<i64>> {
        let application = input::name(application_name, "application_name")?;
        Ok(Spi::get_one_with_args(
            "SELECT max(notification_id) FROM biomero.events WHERE application_name = $1",
            &[application.into()],
        )?)
    };
    run().unwrap_or_else(|error| error.raise())
}

/// The last notification id of `upstream_application_name` that follower `application_name`
/// recorded, NULL when none.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn max_tracking_id(
    application_name: Option<&str>,
    upstream_application_name: Option<&str>,
) -> Option<i64> {
    let run = || -> Result<Option<i64>> {
        let follower = input::name(application_name, "application_name")?;
        let upstream = input::name(upstream_application_name, "upstream_application_name")?;
        Ok(Spi::get_one_with_args(
            "SELECT max(notification_id) FROM biomero.tracking \
             WHERE application_name = $1 AND upstream_application_name = $2",
            &[follower.into(), upstream.into()],
        )?)
    };
    run().unwrap_or_else(|error| error.raise())
}
