//! record_event / record_events: validate -> (tracking) -> reserve ids -> insert -> notify.

use crate::error::{self, Error, Result};
use crate::{ids, input, notify, tracking};
use pgrx::prelude::*;
use pgrx::Uuid;

/// One event as the eventsourcing library stores it.
struct NewEvent<'a> {
    originator_id: Uuid,
    originator_version: i64,
    topic: &'a str,
    state: &'a [u8],
}

/// Appends one event and returns its notification id.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_event(
    application_name: Option<&str>,
    originator_id: Option<Uuid>,
    originator_version: Option<i64>,
    topic: Option<&str>,
    state: Option<&[u8]>,
) -> i64 {
    let run = || -> Result<i64> {
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
        Ok(append(application, &[event])?[0])
    };
    run().unwrap_or_else(|error| error.raise())
}

/// Appends a batch of events of one application, all or nothing, and returns their
/// notification ids in order. With an upstream position it first records that the
/// application (as a follower) has processed it; when that position was already recorded it
/// writes nothing and returns NULL.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_events(
    application_name: Option<&str>,
    originator_ids: Option<Array<Uuid>>,
    originator_versions: Option<Array<i64>>,
    topics: Option<Array<&str>>,
    states: Option<Array<&[u8]>>,
    upstream_application_name: default!(Option<&str>, "NULL"),
    upstream_notification_id: default!(Option<i64>, "NULL"),
) -> Option<Vec<i64>> {
    let run = || -> Result<Option<Vec<i64>>> {
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
            )));
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
        if let Some(position) = position {
            if !tracking::advance(&position)? {
                return Ok(None);
            }
        }
        if events.is_empty() {
            return Ok(Some(Vec::new()));
        }
        append(application, &events).map(Some)
    };
    run().unwrap_or_else(|error| error.raise())
}

/// The append itself; arguments are already valid.
fn append(application: &str, events: &[NewEvent]) -> Result<Vec<i64>> {
    let first = ids::reserve(application)?;
    let inserted = insert(application, first, events)?;
    if inserted.len() != events.len() {
        return Err(version_conflict(application, events, &inserted));
    }
    let last = first + events.len() as i64 - 1;
    notify::appended(application, first, last)?;
    Ok((first..=last).collect())
}

/// Inserts the events with ids from `first`, returning the aggregate keys actually inserted,
/// in order. A key that already exists is skipped (and reported by the caller) rather than
/// raised here, so that the only unique violation the API raises is the one it words itself.
fn insert(application: &str, first: i64, events: &[NewEvent]) -> Result<Vec<(Uuid, i64)>> {
    let originator_ids: Vec<Uuid> = events.iter().map(|event| event.originator_id).collect();
    let versions: Vec<i64> = events
        .iter()
        .map(|event| event.originator_version)
        .collect();
    let topics: Vec<&str> = events.iter().map(|event| event.topic).collect();
    let states: Vec<&[u8]> = events.iter().map(|event| event.state).collect();
    let run = move || {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "INSERT INTO biomero.events (application_name, notification_id, originator_id, \
                     originator_version, topic, state) \
                 SELECT $1, $2 + e.ordinality - 1, e.originator_id, e.originator_version, \
                     e.topic, e.state \
                 FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::bytea[]) \
                     WITH ORDINALITY AS e(originator_id, originator_version, topic, state, \
                     ordinality) \
                 ON CONFLICT DO NOTHING \
                 RETURNING originator_id, originator_version",
                None,
                &[
                    application.into(),
                    first.into(),
                    originator_ids.into(),
                    versions.into(),
                    topics.into(),
                    states.into(),
                ],
            )?;
            let mut keys = Vec::with_capacity(rows.len());
            for row in rows {
                keys.push((
                    row.get::<Uuid>(1)?.expect("originator_id is NOT NULL"),
                    row.get::<i64>(2)?.expect("originator_version is NOT NULL"),
                ));
            }
            Ok::<_, pgrx::spi::Error>(keys)
        })
    };
    // Under REPEATABLE READ and SERIALIZABLE a conflict with a row committed after the
    // transaction's snapshot is a serialization failure.
    let conflict = || {
        format!(
            "application \"{application}\" received events committed after this \
             transaction's snapshot was taken"
        )
    };
    let keys = error::reword_serialization_failure(conflict, run)?;
    Ok(keys)
}

/// Names the first event whose aggregate version was not inserted.
fn version_conflict(application: &str, events: &[NewEvent], inserted: &[(Uuid, i64)]) -> Error {
    let mut inserted = inserted.iter().peekable();
    let skipped = events
        .iter()
        .find(|event| {
            let key = (event.originator_id, event.originator_version);
            if inserted.peek() == Some(&&key) {
                inserted.next();
                false
            } else {
                true
            }
        })
        .expect("fewer rows inserted than events given");
    Error::VersionConflict {
        application: application.to_string(),
        originator_id: skipped.originator_id.to_string(),
        version: skipped.originator_version,
    }
}
