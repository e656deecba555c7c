//! The production race: many processes of one follower (`WorkflowProgress`) processing the
//! notifications of one upstream (`WorkflowTracker`) while writers append.
//!
//! The same harness runs the old way (read the max tracked id, insert a tracking row keyed by
//! (application_name, notification_id)) and must see it fail, which shows it can see the race.

mod common;
#[path = "common/follower.rs"]
mod follower;

use common::*;
use follower::FollowerStep;
use postgres::{Client, IsolationLevel};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const FOLLOWER_SESSIONS: usize = 8;
const WRITERS: usize = 4;
const EVENTS_PER_WRITER: usize = 60;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// claim -> read next -> write read model -> record_tracking -> commit
    Extension,
    /// read max tracked id -> read next -> write read model -> INSERT tracking -> commit
    Old,
}

#[derive(Debug, Default)]
struct Outcome {
    events: i64,
    processed_rows: i64,
    duplicate_notifications: i64,
    unprocessed_notifications: i64,
    errors: Vec<String>,
    retries: usize,
    final_position: i64,
    head: i64,
    elapsed: Duration,
}

fn setup_tables() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        connect()
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS race_read_model ( \
                 follower text NOT NULL, upstream text NOT NULL, \
                 notification_id bigint NOT NULL, session int NOT NULL); \
             CREATE TABLE IF NOT EXISTS race_old_tracking ( \
                 follower text NOT NULL, application_name text NOT NULL, \
                 notification_id bigint NOT NULL, \
                 PRIMARY KEY (follower, application_name, notification_id));",
            )
            .unwrap()
    });
}

/// One follower step in the extension's way; returns false when there was nothing to process.
fn step_extension(
    client: &mut Client,
    isolation: IsolationLevel,
    follower: &str,
    upstream: &str,
    session: i32,
) -> Result<bool, postgres::Error> {
    let step = FollowerStep {
        follower,
        upstream,
        max: 1,
        wait: true,
        isolation,
        read_model: Some(("race_read_model", session)),
        emit: None,
    };
    let processed = step
        .run(client)?
        .expect("a step that waits takes the claim");
    Ok(!processed.is_empty())
}

/// One follower step the way eventsourcing's multi-row tracking table invites.
fn step_old(
    client: &mut Client,
    follower: &str,
    upstream: &str,
    session: i32,
) -> Result<bool, postgres::Error> {
    let mut tx = client.transaction()?;
    let position: i64 = tx
        .query_one(
            "SELECT coalesce(max(notification_id), 0) FROM race_old_tracking \
             WHERE follower = $1 AND application_name = $2",
            &[&follower, &upstream],
        )?
        .get(0);
    let next = tx.query_opt(
        "SELECT notification_id FROM biomero.events WHERE application_name = $1 \
         AND notification_id > $2 ORDER BY notification_id LIMIT 1",
        &[&upstream, &position],
    )?;
    let Some(next) = next else {
        tx.commit()?;
        return Ok(false);
    };
    let notification_id: i64 = next.get(0);
    tx.execute(
        "INSERT INTO race_read_model VALUES ($1, $2, $3, $4)",
        &[&follower, &upstream, &notification_id, &session],
    )?;
    tx.execute(
        "INSERT INTO race_old_tracking VALUES ($1, $2, $3)",
        &[&follower, &upstream, &notification_id],
    )?;
    tx.commit()?;
    Ok(true)
}

fn run(way: Way, isolation: IsolationLevel) -> Outcome {
    let follower = unique_name("WorkflowProgress");
    let upstream = unique_name("WorkflowTracker");
    setup_tables();
    let started = Instant::now();
    let writers_done = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(Mutex::new(0usize));

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let upstream = upstream.clone();
            thread::spawn(move || {
                let mut client = connect();
                for _ in 0..EVENTS_PER_WRITER {
                    client
                        .query_one(
                            "SELECT biomero.record_event($1, $2::text::uuid, 0, \
                             'biomero.eventsourcing:WorkflowRun.WorkflowInitiated', '\\x7b7d')",
                            &[&upstream, &random_uuid()],
                        )
                        .unwrap();
                }
            })
        })
        .collect();

    let followers: Vec<_> = (0..FOLLOWER_SESSIONS as i32)
        .map(|session| {
            let (follower, upstream) = (follower.clone(), upstream.clone());
            let (writers_done, errors, retries) =
                (writers_done.clone(), errors.clone(), retries.clone());
            thread::spawn(move || {
                let mut client = connect();
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let done = writers_done.load(Ordering::SeqCst);
                    let step = match way {
                        Way::Extension => {
                            step_extension(&mut client, isolation, &follower, &upstream, session)
                        }
                        Way::Old => step_old(&mut client, &follower, &upstream, session),
                    };
                    match step {
                        Ok(true) => {}
                        Ok(false) if done => break,
                        Ok(false) => thread::sleep(Duration::from_millis(2)),
                        Err(error)
                            if !matches!(isolation, IsolationLevel::ReadCommitted)
                                && is_serialization_failure(&error) =>
                        {
                            *retries.lock().unwrap() += 1
                        }
                        Err(error) => errors.lock().unwrap().push(describe(&error)),
                    }
                    assert!(
                        Instant::now() < deadline,
                        "followers did not finish in time"
                    );
                }
            })
        })
        .collect();

    for writer in writers {
        writer.join().unwrap();
    }
    writers_done.store(true, Ordering::SeqCst);
    for follower in followers {
        follower.join().unwrap();
    }

    let mut client = connect();
    let head = notification_head(&mut client, &upstream);
    let final_position = match way {
        Way::Extension => follower_position(&mut client, &follower, &upstream),
        Way::Old => client
            .query_one(
                "SELECT coalesce(max(notification_id), 0) FROM race_old_tracking \
                 WHERE follower = $1 AND application_name = $2",
                &[&follower, &upstream],
            )
            .unwrap()
            .get(0),
    };
    let per_notification = "SELECT e.notification_id, count(r.notification_id) AS times \
         FROM biomero.events e LEFT JOIN race_read_model r \
           ON r.follower = $1 AND r.upstream = e.application_name \
          AND r.notification_id = e.notification_id \
         WHERE e.application_name = $2 GROUP BY e.notification_id";
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(times), 0)::bigint, \
                 count(*) FILTER (WHERE times > 1), count(*) FILTER (WHERE times = 0) \
                 FROM ({per_notification}) p"
            ),
            &[&follower, &upstream],
        )
        .unwrap();
    let outcome = Outcome {
        events: row.get(0),
        processed_rows: row.get(1),
        duplicate_notifications: row.get(2),
        unprocessed_notifications: row.get(3),
        errors: errors.lock().unwrap().clone(),
        retries: *retries.lock().unwrap(),
        final_position,
        head,
        elapsed: started.elapsed(),
    };
    eprintln!(
        "{} way, {isolation:?}: {FOLLOWER_SESSIONS} follower sessions, {WRITERS} writers, \
         {} events, {} read-model rows, {} duplicates, {} unprocessed, {} errors, \
         {} serialization retries, position {} of head {}, {:.1?}",
        if way == Way::Extension {
            "extension"
        } else {
            "old"
        },
        outcome.events,
        outcome.processed_rows,
        outcome.duplicate_notifications,
        outcome.unprocessed_notifications,
        outcome.errors.len(),
        outcome.retries,
        outcome.final_position,
        outcome.head,
        outcome.elapsed
    );
    outcome
}

fn assert_exactly_once(outcome: &Outcome) {
    assert_eq!(outcome.events, (WRITERS * EVENTS_PER_WRITER) as i64);
    assert!(outcome.errors.is_empty(), "errors: {:?}", outcome.errors);
    assert_eq!(outcome.duplicate_notifications, 0);
    assert_eq!(outcome.unprocessed_notifications, 0);
    assert_eq!(outcome.processed_rows, outcome.events);
    assert_eq!(outcome.final_position, outcome.head);
}

#[test]
fn old_way_shows_the_race() {
    let outcome = run(Way::Old, IsolationLevel::ReadCommitted);
    let duplicate_key_errors = outcome
        .errors
        .iter()
        .filter(|error| error.starts_with("23505"))
        .count();
    assert!(
        duplicate_key_errors > 0,
        "the harness must see the race the old way: {outcome:?}"
    );
}

#[test]
fn claimed_followers_process_each_notification_once_read_committed() {
    let outcome = run(Way::Extension, IsolationLevel::ReadCommitted);
    assert_exactly_once(&outcome);
    assert_eq!(outcome.retries, 0, "READ COMMITTED needs no retries");
}

#[test]
fn claimed_followers_process_each_notification_once_repeatable_read() {
    assert_exactly_once(&run(Way::Extension, IsolationLevel::RepeatableRead));
}

#[test]
fn claimed_followers_process_each_notification_once_serializable() {
    assert_exactly_once(&run(Way::Extension, IsolationLevel::Serializable));
}
