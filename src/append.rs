//! record_event / record_events: validate -> authorize -> (tracking) -> reserve ids -> insert
//! -> notify.

use crate::access::{self, Action};
use crate::error::{Error, Result};
use crate::registry::{self, Application, Mode};
use crate::statements::{self, Snapshot};
use crate::{ids, input, notify, tracking};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgSqlErrorCode, PgTryBuilder, Uuid};

/// One event as the eventsourcing library stores it.
struct NewEvent<'a> {
    originator_id: Uuid,
    originator_version: i64,
    topic: &'a str,
    state: &'a [u8],
}

/// Appends one event and returns its notification id.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn record_event(
    application_name: Option<&str>,
    originator_id: Option<Uuid>,
    originator_version: Option<i64>,
    topic: Option<&str>,
    state: Option<&[u8]>,
) -> Result<i64, ErrorReport> {
    let application = input::name(application_name, "application_name")?;
    let event = NewEvent {
        originator_id: input::required(originator_id, "originator_id")?,
        originator_version: input::at_least(
            input::required(originator_version, "originator_version")?,
            0,
            "originator_version",
        )?,
        topic: input::topic(topic, "topic")?,
        state: input::required(state, "state")?,
    };
    let caller = access::caller();
    let _owner = access::as_owner("biomero.record_event")?;
    let ids = statements::connected(|| {
        let registered = registry::register(application)?;
        caller.authorize(&registered, Action::Append)?;
        append(&registered, &[event])
    })?;
    Ok(ids[0])
}

/// Appends a batch of events of one application, all or nothing, and returns their
/// notification ids in order. With an upstream position it first records that the
/// application (as a follower) has processed it; when that position was already recorded it
/// writes nothing and returns NULL.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn record_events(
    application_name: Option<&str>,
    originator_ids: Option<Array<Uuid>>,
    originator_versions: Option<Array<i64>>,
    topics: Option<Array<&str>>,
    states: Option<Array<&[u8]>>,
    upstream_application_name: default!(Option<&str>, "NULL"),
    upstream_notification_id: default!(Option<i64>, "NULL"),
) -> Result<Option<Vec<i64>>, ErrorReport> {
    let application = input::name(application_name, "application_name")?;
    let ids = input::required(originator_ids, "originator_ids")?;
    let versions = input::required(originator_versions, "originator_versions")?;
    let topics = input::required(topics, "topics")?;
    let states = input::required(states, "states")?;
    let lengths = [ids.len(), versions.len(), topics.len(), states.len()];
    if lengths.iter().any(|length| *length != lengths[0]) {
        return Err(Error::InvalidArgument(format!(
            "originator_ids, originator_versions, topics and states must have the same \
             length, got {}, {}, {} and {}",
            lengths[0], lengths[1], lengths[2], lengths[3]
        ))
        .into());
    }
    let mut events = Vec::with_capacity(lengths[0]);
    for (index, (((id, version), topic), state)) in ids
        .iter()
        .zip(versions.iter())
        .zip(topics.iter())
        .zip(states.iter())
        .enumerate()
    {
        let element = |array: &str| format!("{array}[{}]", index + 1);
        events.push(NewEvent {
            originator_id: input::required(id, &element("originator_ids"))?,
            originator_version: input::at_least(
                input::required(version, &element("originator_versions"))?,
                0,
                &element("originator_versions"),
            )?,
            topic: input::topic(topic, &element("topics"))?,
            state: input::required(state, &element("states"))?,
        });
    }
    let position = match (upstream_application_name, upstream_notification_id) {
        (None, None) => None,
        (upstream, notification_id) => Some(tracking::Position::new(
            application,
            upstream,
            notification_id,
            "upstream_application_name",
            "upstream_notification_id",
        )?),
    };
    let caller = access::caller();
    let _owner = access::as_owner("biomero.record_events")?;
    let ids = statements::connected(|| {
        let registered = registry::register(application)?;
        caller.authorize(&registered, Action::Append)?;
        if let Some(position) = &position {
            if !tracking::advance(position)? {
                return Ok(None);
            }
        }
        if events.is_empty() {
            return Ok(Some(Vec::new()));
        }
        append(&registered, &events).map(Some)
    })?;
    Ok(ids)
}

/// The append itself; arguments are valid and the caller authorized.
fn append(application: &Application, events: &[NewEvent]) -> Result<Vec<i64>> {
    let count = events.len() as i64;
    let name = application.name.as_str();
    let reserved = ids::reserve(application, count)?;
    insert(name, reserved.first, events)?;
    let last = reserved.first + (count - 1);
    // Concurrent appends are announced by the horizon publisher, once per advance.
    if reserved.mode == Mode::Serialized {
        notify::appended(name, reserved.first, last);
    }
    Ok((reserved.first..=last).collect())
}

/// Inserts the events with ids from `first`. A duplicate aggregate version is the one unique
/// violation the API raises, worded by [`version_conflict`].
fn insert(name: &str, first: i64, events: &[NewEvent]) -> Result<()> {
    let (statement, arguments) = match events {
        [event] => (
            &statements::INSERT_EVENT,
            [
                name.into_datum(),
                first.into_datum(),
                event.originator_id.into_datum(),
                event.originator_version.into_datum(),
                event.topic.into_datum(),
                event.state.into_datum(),
            ],
        ),
        _ => (
            &statements::INSERT_EVENTS,
            [
                name.into_datum(),
                first.into_datum(),
                events
                    .iter()
                    .map(|event| event.originator_id)
                    .collect::<Vec<Uuid>>()
                    .into_datum(),
                events
                    .iter()
                    .map(|event| event.originator_version)
                    .collect::<Vec<i64>>()
                    .into_datum(),
                events
                    .iter()
                    .map(|event| event.topic)
                    .collect::<Vec<&str>>()
                    .into_datum(),
                events
                    .iter()
                    .map(|event| event.state)
                    .collect::<Vec<&[u8]>>()
                    .into_datum(),
            ],
        ),
    };
    let name = name.to_string();
    PgTryBuilder::new(|| {
        statements::execute(statement, &arguments, Snapshot::Current, |_| ()).map(|_| ())
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, move |caught| {
        let (message, detail) = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(report) => (
                report.message().to_string(),
                report.detail().map(str::to_string),
            ),
            _ => caught.rethrow(),
        };
        if !message.contains("\"events_aggregate_version_key\"") {
            caught.rethrow()
        }
        version_conflict(&name, detail.as_deref()).raise()
    })
    .execute()
}

/// The conflict error, naming the aggregate and version from the unique violation's detail
/// (`Key (application_name, originator_id, originator_version)=(…, <uuid>, <version>) …`).
fn version_conflict(application: &str, detail: Option<&str>) -> Error {
    let key = detail
        .and_then(|detail| detail.rsplit_once("=(").map(|(_, values)| values))
        .and_then(|values| values.rsplit_once(')').map(|(values, _)| values));
    let mut parts = key.map(|key| key.rsplitn(3, ", ")).into_iter().flatten();
    let version = parts.next().unwrap_or("?").to_string();
    let originator_id = parts.next().unwrap_or("?").to_string();
    Error::VersionConflict {
        application: application.to_string(),
        originator_id,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(detail: Option<&str>) -> (String, String, String) {
        match version_conflict("WorkflowTracker", detail) {
            Error::VersionConflict {
                application,
                originator_id,
                version,
            } => (application, originator_id, version),
            other => panic!("not a version conflict: {other:?}"),
        }
    }

    #[test]
    fn the_conflict_names_the_aggregate_and_version_from_the_detail() {
        let detail = "Key (application_name, originator_id, originator_version)=(Workflow, \
                      Tracker, 0b6c1a94-3b8e-4c59-9a53-7b1e9d0f5a11, 7) already exists.";
        assert_eq!(
            named(Some(detail)),
            (
                "WorkflowTracker".into(),
                "0b6c1a94-3b8e-4c59-9a53-7b1e9d0f5a11".into(),
                "7".into()
            )
        );
        // A name with ", " and "=(" in it does not mislead it: the values are read from the
        // right.
        let tricky = "Key (application_name, originator_id, originator_version)=(a=(b, c, \
                      0b6c1a94-3b8e-4c59-9a53-7b1e9d0f5a11, 12) already exists.";
        assert_eq!(named(Some(tricky)).2, "12");
    }

    #[test]
    fn without_a_detail_the_conflict_still_names_the_application() {
        assert_eq!(
            named(None),
            ("WorkflowTracker".into(), "?".into(), "?".into())
        );
    }
}
