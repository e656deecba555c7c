//! Notification ids under concurrent appends: 16 writers with random rollbacks, in each
//! isolation level, while readers tail select_notifications from their last id. Every reader
//! must see exactly the committed sequence, ids contiguous from 1.

mod common;

use common::*;
use postgres::IsolationLevel;
use rand::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WRITERS: usize = 16;
const TRANSACTIONS_PER_WRITER: usize = 25;
const READERS: usize = 4;

type Key = (String, i64);

fn run(isolation: IsolationLevel) {
    let application = unique_name("Ordering");
    let done = Arc::new(AtomicBool::new(false));
    let committed: Arc<Mutex<Vec<Key>>> = Arc::default();
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let (retries, rollbacks) = (Arc::new(Mutex::new(0usize)), Arc::new(Mutex::new(0usize)));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (application, done) = (application.clone(), done.clone());
            thread::spawn(move || {
                let mut client = connect();
                let mut seen: Vec<(i64, Key)> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(180);
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let last = seen.last().map_or(0, |(id, _)| *id);
                    let rows = client
                        .query(
                            "SELECT notification_id, originator_id::text, originator_version \
                             FROM biomero.select_notifications($1, $2, 50, \
                             inclusive_of_start => false)",
                            &[&application, &last],
                        )
                        .unwrap();
                    seen.extend(
                        rows.iter()
                            .map(|row| (row.get(0), (row.get(1), row.get(2)))),
                    );
                    if rows.is_empty() {
                        if finished {
                            return seen;
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                    assert!(Instant::now() < deadline, "reader did not finish in time");
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let application = application.clone();
            let (committed, unexpected) = (committed.clone(), unexpected.clone());
            let (retries, rollbacks) = (retries.clone(), rollbacks.clone());
            thread::spawn(move || {
                let mut client = connect();
                let mut rng = rand::thread_rng();
                let aggregate = random_uuid();
                let mut version = 0i64;
                let mut transactions = 0;
                while transactions < TRANSACTIONS_PER_WRITER {
                    let size = rng.gen_range(1..=3i64);
                    let keys: Vec<Key> = (version..version + size)
                        .map(|v| (aggregate.clone(), v))
                        .collect();
                    let roll_back = rng.gen_bool(0.2);
                    let attempt = (|| -> Result<(), postgres::Error> {
                        let mut tx = client
                            .build_transaction()
                            .isolation_level(isolation)
                            .start()?;
                        if size == 1 {
                            tx.query_one(
                                "SELECT biomero.record_event($1, $2::text::uuid, $3, 't', '\\x00')",
                                &[&application, &aggregate, &version],
                            )?;
                        } else {
                            append_versions(
                                &mut tx,
                                &application,
                                &aggregate,
                                version..version + size,
                                "t",
                                |_| vec![0],
                            )?;
                        }
                        if roll_back {
                            tx.rollback()
                        } else {
                            tx.commit()
                        }
                    })();
                    match attempt {
                        Ok(()) if roll_back => *rollbacks.lock().unwrap() += 1,
                        Ok(()) => {
                            committed.lock().unwrap().extend(keys);
                            version += size;
                        }
                        Err(error)
                            if !matches!(isolation, IsolationLevel::ReadCommitted)
                                && is_serialization_failure(&error) =>
                        {
                            *retries.lock().unwrap() += 1;
                            continue;
                        }
                        Err(error) => unexpected.lock().unwrap().push(error.to_string()),
                    }
                    transactions += 1;
                }
            })
        })
        .collect();

    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let sequences: Vec<Vec<(i64, Key)>> = readers
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .collect();

    let mut client = connect();
    let stored: Vec<(i64, Key)> = client
        .query(
            "SELECT notification_id, originator_id::text, originator_version FROM biomero.events \
             WHERE application_name = $1 ORDER BY notification_id",
            &[&application],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let committed = committed.lock().unwrap().clone();
    eprintln!(
        "{isolation:?}: {WRITERS} writers, {READERS} readers, {} events committed, \
         {} transactions rolled back, {} serialization retries, {} unexpected errors",
        committed.len(),
        rollbacks.lock().unwrap(),
        retries.lock().unwrap(),
        unexpected.lock().unwrap().len()
    );

    assert!(
        unexpected.lock().unwrap().is_empty(),
        "{:?}",
        unexpected.lock().unwrap()
    );
    if matches!(isolation, IsolationLevel::ReadCommitted) {
        assert_eq!(
            *retries.lock().unwrap(),
            0,
            "READ COMMITTED needs no retries"
        );
    }
    let ids: Vec<i64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=committed.len() as i64).collect::<Vec<_>>(),
        "ids contiguous from 1"
    );
    let stored_keys: HashSet<&Key> = stored.iter().map(|(_, key)| key).collect();
    let committed_keys: HashSet<&Key> = committed.iter().collect();
    assert_eq!(
        stored_keys, committed_keys,
        "exactly the committed events are stored"
    );
    for sequence in &sequences {
        assert_eq!(sequence, &stored, "a reader saw a different sequence");
    }
}

#[test]
fn readers_see_the_committed_sequence_read_committed() {
    run(IsolationLevel::ReadCommitted);
}

#[test]
fn readers_see_the_committed_sequence_repeatable_read() {
    run(IsolationLevel::RepeatableRead);
}

#[test]
fn readers_see_the_committed_sequence_serializable() {
    run(IsolationLevel::Serializable);
}
