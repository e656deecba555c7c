//! One guarantee per test, each shown with real sessions against one server.

mod common;

use biomero_tracking::locks::CLAIM_LOCK_KIND as CLAIM_LOCK;
use common::*;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel};
use std::thread;
use std::time::Duration;

fn record(client: &mut Client, application: &str) -> Result<i64, postgres::Error> {
    client
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, 0, 't', '\\x00')",
            &[&application, &random_uuid()],
        )
        .map(|row| row.get(0))
}

/// Registers `application` (its first use), committed.
fn register(client: &mut Client, application: &str) {
    set_append_mode(client, application, "serialized");
}

#[test]
fn appends_to_different_applications_never_wait_for_each_other() {
    let (busy, free) = (unique_name("Busy"), unique_name("Free"));
    // Used (so registered) once before: a first use by an open transaction is waited for.
    register(&mut connect(), &busy);
    let mut holder = connect();
    let mut tx = holder.transaction().unwrap();
    append_one(&mut tx, &busy);

    // The holder keeps busy's lock to the end of the test: a wait for it would end in
    // 55P03, not in an id.
    let mut other = connect();
    other.batch_execute("SET lock_timeout = '5s'").unwrap();
    assert_eq!(record(&mut other, &free).unwrap(), 1);

    // The same application does wait: lock_timeout cuts it with 55P03 and a clear message.
    other.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let error = record(&mut other, &busy).unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    assert_eq!(
        db_message(&error),
        format!("lock timeout expired while waiting for the append lock of application \"{busy}\"")
    );
    other
        .batch_execute("SET lock_timeout = 0; SET statement_timeout = '1s'")
        .unwrap();
    let error = record(&mut other, &busy).unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(db_message(&error).contains(&format!("append lock of application \"{busy}\"")));
    other.batch_execute("SET statement_timeout = 0").unwrap();
    tx.commit().unwrap();
    // Nothing of the cut attempts was written, and the next append proceeds.
    assert_eq!(record(&mut other, &busy).unwrap(), 2);
}

/// The registry id of `application`, which keys its locks.
fn application_id(client: &mut Client, application: &str) -> i32 {
    client
        .query_one(
            "SELECT application_id FROM biomero.application_registry WHERE application_name = $1",
            &[&application],
        )
        .unwrap()
        .get(0)
}

#[test]
fn extension_locks_cannot_collide_with_user_advisory_locks() {
    let application = unique_name("Keys");
    let (follower, upstream) = (unique_name("F"), unique_name("U"));
    let mut ours = connect();
    ours.batch_execute("SET lock_timeout = '1s'").unwrap();
    // Registered (and their ids known) by a first use.
    assert_eq!(record(&mut ours, &application).unwrap(), 1);
    ours.execute("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap();
    let keys = [
        (application_id(&mut ours, &application), 0),
        (
            application_id(&mut ours, &follower),
            application_id(&mut ours, &upstream),
        ),
    ];
    let mut user = connect();
    let mut tx = user.transaction().unwrap();
    // The user's code takes every advisory lock that shares our keys' numbers.
    for (high, low) in keys {
        let big = (i64::from(high) << 32) | i64::from(low as u32);
        tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&high, &low])
            .unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&big])
            .unwrap();
    }
    assert_eq!(record(&mut ours, &application).unwrap(), 2);
    let mut claim = ours.transaction().unwrap();
    assert_eq!(try_claim(&mut claim, &follower, &upstream), Some(0));
    // ... and our locks show in pg_locks with their own objsubid, not 1 or 2, keyed by ids.
    let held: Vec<(i16, i64, i64)> = claim
        .query(
            "SELECT objsubid::int2, classid::int8, objid::int8 FROM pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        held,
        vec![(CLAIM_LOCK, i64::from(keys[1].0), i64::from(keys[1].1))]
    );
    claim.commit().unwrap();
    tx.commit().unwrap();
}

/// Two names with the same 64-bit FNV-1a hash, the key of the locks up to release 0.2.0 (a
/// common suffix keeps them colliding, so each test run can make its own pair).
fn colliding_names() -> (String, String) {
    let suffix = unique_name("");
    (
        format!("App_56fXTZcL8Ta{suffix}"),
        format!("App_1AUfo6pVE7o{suffix}"),
    )
}

#[test]
fn distinct_names_never_share_a_lock() {
    let (a, b) = colliding_names();
    let upstream = unique_name("U");
    register(&mut connect(), &upstream);
    let mut holder = connect();
    let mut tx = holder.transaction().unwrap();
    append_one(&mut tx, &a);
    claim(&mut tx, &a, &upstream);

    let mut other = connect();
    other.batch_execute("SET lock_timeout = '2s'").unwrap();
    // An append to B does not wait for A's append lock...
    assert_eq!(record(&mut other, &b).unwrap(), 1);
    // ... and B's claim is free while only A's is held.
    let mut claim = other.transaction().unwrap();
    assert_eq!(try_claim(&mut claim, &b, &upstream), Some(0));
    claim.commit().unwrap();
    tx.commit().unwrap();

    // Appends to A then C, and to C then B: with shared keys these two deadlocked.
    let c = unique_name("C");
    let append = "SELECT biomero.record_event($1, $2::text::uuid, 1, 't', '')";
    let (appended_a, go_on) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
    let first = {
        let (a, c) = (a.clone(), c.clone());
        thread::spawn(move || {
            let mut client = connect();
            let mut one = client.transaction().unwrap();
            one.query_one(append, &[&a, &random_uuid()]).unwrap();
            appended_a.0.send(()).unwrap();
            go_on.1.recv().unwrap();
            one.query_one(append, &[&c, &random_uuid()]).unwrap();
            one.commit().unwrap();
        })
    };
    appended_a.1.recv().unwrap();
    let mut second = connect();
    second.batch_execute("SET lock_timeout = '2s'").unwrap();
    let mut two = second.transaction().unwrap();
    two.query_one(append, &[&c, &random_uuid()]).unwrap();
    two.query_one(append, &[&b, &random_uuid()]).unwrap();
    go_on.0.send(()).unwrap();
    thread::sleep(Duration::from_millis(200));
    two.commit().unwrap();
    first.join().unwrap();
}

#[test]
fn a_rolled_back_append_leaves_no_hole_and_a_waiting_writer_takes_its_id() {
    let application = unique_name("Rollback");
    let mut first = connect();
    let mut tx = first.transaction().unwrap();
    assert_eq!(append_one(&mut tx, &application), 1);
    let waiting = {
        let application = application.clone();
        thread::spawn(move || record(&mut connect(), &application).unwrap())
    };
    thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "the second writer must wait for the first"
    );
    tx.rollback().unwrap();
    assert_eq!(waiting.join().unwrap(), 1);
    assert_eq!(record(&mut first, &application).unwrap(), 2);
    assert_eq!(stored_ids(&mut first, &application), vec![1, 2]);
}

#[test]
fn a_waiting_claimer_sees_the_position_the_holder_committed() {
    let (follower, upstream) = (
        unique_name("WorkflowProgress"),
        unique_name("WorkflowTracker"),
    );
    let mut holder = connect();
    let mut tx = holder.transaction().unwrap();
    assert_eq!(claim(&mut tx, &follower, &upstream), 0);

    let mut other = connect();
    assert_eq!(
        try_claim(&mut other, &follower, &upstream),
        None,
        "wait => false returns NULL while another transaction holds it"
    );

    let waiting = {
        let (follower, upstream) = (follower.clone(), upstream.clone());
        thread::spawn(move || {
            let mut client = connect();
            let mut tx = client.transaction().unwrap();
            let position = claim(&mut tx, &follower, &upstream);
            tx.commit().unwrap();
            position
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "a claimer waits for the holder");
    tx.execute(
        "SELECT biomero.record_tracking($1, $2, 7)",
        &[&follower, &upstream],
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(waiting.join().unwrap(), 7);
}

#[test]
fn locks_are_transaction_scoped_only() {
    let (follower, upstream) = (unique_name("F"), unique_name("U"));
    let application = unique_name("A");
    let mut client = connect();
    let held =
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()";
    let mut tx = client.transaction().unwrap();
    tx.execute("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap();
    append_one(&mut tx, &application);
    assert_eq!(tx.query_one(held, &[]).unwrap().get::<_, i64>(0), 2);
    tx.commit().unwrap();
    // A pooler may hand this connection to another client now: nothing may stay held.
    assert_eq!(count(&mut client, held), 0);
}

#[test]
fn a_second_event_for_an_aggregate_version_is_the_only_unique_violation() {
    let application = unique_name("Conflict");
    let aggregate = random_uuid();
    let mut client = connect();
    let append = "SELECT biomero.record_event($1, $2::text::uuid, 3, 't', '')";
    client
        .query_one(append, &[&application, &aggregate])
        .unwrap();
    let error = client
        .query_one(append, &[&application, &aggregate])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        db_message(&error),
        format!("application \"{application}\" already has version 3 of aggregate {aggregate}")
    );
    // The same version appended concurrently from two sessions: one wins, one conflicts.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (application, aggregate) = (application.clone(), aggregate.clone());
            thread::spawn(move || {
                let mut client = connect();
                client
                    .query_one(
                        "SELECT biomero.record_event($1, $2::text::uuid, 4, 't', '')",
                        &[&application, &aggregate],
                    )
                    .map(|_| ())
                    .map_err(|error| error.code().cloned())
            })
        })
        .collect();
    let mut results: Vec<_> = racers
        .into_iter()
        .map(|racer| racer.join().unwrap())
        .collect();
    results.sort_by_key(|result| result.is_err());
    assert_eq!(results, vec![Ok(()), Err(Some(SqlState::UNIQUE_VIOLATION))]);
    assert_eq!(stored_ids(&mut client, &application), vec![1, 2]);
}

#[test]
fn bad_input_gets_its_sqlstate_and_writes_nothing() {
    let application = unique_name("Bad");
    let mut client = connect();
    record(&mut client, &application).unwrap();
    let u = "'7f3c2a1e-0000-4000-8000-000000000002'::uuid";
    let null = SqlState::NULL_VALUE_NOT_ALLOWED;
    let invalid = SqlState::INVALID_PARAMETER_VALUE;
    let calls: Vec<(String, SqlState)> = vec![
        (format!("SELECT biomero.record_event(NULL, {u}, 0, 't', '')"), null.clone()),
        (format!("SELECT biomero.record_event('', {u}, 0, 't', '')"), invalid.clone()),
        (format!("SELECT biomero.record_event(repeat('é', 256), {u}, 0, 't', '')"), invalid.clone()),
        ("SELECT biomero.record_event('$A', NULL, 0, 't', '')".into(), null.clone()),
        (format!("SELECT biomero.record_event('$A', {u}, NULL, 't', '')"), null.clone()),
        (format!("SELECT biomero.record_event('$A', {u}, -1, 't', '')"), invalid.clone()),
        (format!("SELECT biomero.record_event('$A', {u}, 0, NULL, '')"), null.clone()),
        (format!("SELECT biomero.record_event('$A', {u}, 0, '', '')"), invalid.clone()),
        (format!("SELECT biomero.record_event('$A', {u}, 0, 't', NULL)"), null.clone()),
        (
            format!("SELECT biomero.record_events('$A', ARRAY[{u}], ARRAY[1, 2], ARRAY['t'], ARRAY[''::bytea])"),
            invalid.clone(),
        ),
        (
            format!("SELECT biomero.record_events('$A', ARRAY[{u}, {u}], ARRAY[1, NULL]::bigint[], ARRAY['t', 't'], ARRAY[''::bytea, ''])"),
            null.clone(),
        ),
        (
            format!("SELECT biomero.record_events('$A', ARRAY[{u}], ARRAY[1], ARRAY['t'], ARRAY[''::bytea], 'U', 0)"),
            invalid.clone(),
        ),
        (
            format!("SELECT biomero.record_events('$A', ARRAY[{u}], ARRAY[1], ARRAY['t'], ARRAY[''::bytea], NULL, 3)"),
            null.clone(),
        ),
        (
            "SELECT biomero.record_events('$A', NULL, ARRAY[1], ARRAY['t'], ARRAY[''::bytea])".into(),
            null.clone(),
        ),
        ("SELECT biomero.record_tracking('$A', 'U', 0)".into(), invalid.clone()),
        ("SELECT biomero.record_tracking('$A', 'U', -9)".into(), invalid.clone()),
        ("SELECT biomero.record_tracking('$A', NULL, 1)".into(), null.clone()),
        ("SELECT biomero.record_tracking(repeat('x', 300), 'U', 1)".into(), invalid.clone()),
        ("SELECT biomero.claim('', 'U')".into(), invalid.clone()),
        ("SELECT biomero.claim('$A', 'U', NULL)".into(), null.clone()),
        ("SELECT * FROM biomero.select_notifications('$A', 1, -1)".into(), invalid.clone()),
        ("SELECT * FROM biomero.select_notifications('$A', 1, NULL)".into(), null.clone()),
        ("SELECT * FROM biomero.select_notifications('$A', 1, 5, topics => NULL)".into(), null.clone()),
        (format!("SELECT * FROM biomero.select_events('$A', {u}, \"limit\" => -1)"), invalid.clone()),
        ("SELECT * FROM biomero.select_events('$A', NULL)".into(), null.clone()),
        ("SELECT biomero.max_notification_id(NULL)".into(), null.clone()),
        ("SELECT biomero.max_tracking_id('$A', '')".into(), invalid.clone()),
    ];
    let totals = format!(
        "SELECT (SELECT count(*) FROM biomero.events WHERE application_name = '{application}') \
         + (SELECT count(*) FROM biomero.tracking WHERE application_name = '{application}')"
    );
    for (call, expected) in calls {
        let call = call.replace("$A", &application);
        let before = count(&mut client, &totals);
        let error = client.batch_execute(&call).expect_err(&call);
        assert_eq!(
            error.code(),
            Some(&expected),
            "{call}: {}",
            db_message(&error)
        );
        assert!(!db_message(&error).is_empty());
        assert_eq!(
            count(&mut client, &totals),
            before,
            "{call} wrote something"
        );
    }
}

#[test]
fn stricter_isolation_levels_see_contention_only_as_retryable_serialization_failures() {
    for isolation in [IsolationLevel::RepeatableRead, IsolationLevel::Serializable] {
        let application = unique_name("Strict");
        let (follower, upstream) = (unique_name("F"), unique_name("U"));
        let mut stale = connect();
        let mut other = connect();
        record(&mut other, &application).unwrap();
        other
            .execute(
                "SELECT biomero.record_tracking($1, $2, 1)",
                &[&follower, &upstream],
            )
            .unwrap();

        // An append reads the head with the latest snapshot under its lock, so a commit after
        // the transaction's snapshot is built on, not a conflict.
        let mut tx = snapshot_transaction(&mut stale, isolation);
        record(&mut other, &application).unwrap();
        assert_eq!(append_one(&mut tx, &application), 3, "{isolation:?}");
        tx.commit().unwrap();

        // A position moved after the snapshot is a conflict to retry, for tracking and claims.
        for (function, position) in [("record_tracking", 5i64), ("claim", 9)] {
            let mut tx = snapshot_transaction(&mut stale, isolation);
            other
                .execute(
                    "SELECT biomero.record_tracking($1, $2, $3)",
                    &[&follower, &upstream, &position],
                )
                .unwrap();
            let call = match function {
                "record_tracking" => tx
                    .query_one(
                        "SELECT biomero.record_tracking($1, $2, 3)",
                        &[&follower, &upstream],
                    )
                    .map(|_| ()),
                _ => tx
                    .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
                    .map(|_| ()),
            };
            let error = call.expect_err(function);
            assert_eq!(
                error.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE),
                "{function}"
            );
            assert!(
                db_message(&error).ends_with("retry the transaction"),
                "{}",
                db_message(&error)
            );
            drop(tx);
        }
    }
}

#[test]
fn appends_notify_listeners_at_commit_only() {
    let application = unique_name("Notify");
    let mut listener = connect();
    listener.batch_execute("LISTEN biomero_events").unwrap();
    let mut writer = connect();
    let mut tx = writer.transaction().unwrap();
    append_one(&mut tx, &application);
    tx.rollback().unwrap();
    let mut tx = writer.transaction().unwrap();
    tx.query_one(
        "SELECT biomero.record_events($1, ARRAY[$2::text::uuid, $2::text::uuid], ARRAY[0, 1]::bigint[], \
         ARRAY['t', 't'], ARRAY[''::bytea, ''::bytea])",
        &[&application, &random_uuid()],
    )
    .unwrap();
    tx.commit().unwrap();
    let mut payloads = Vec::new();
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(3));
    while let Some(notification) = iter.next().unwrap() {
        if notification.payload().contains(&application) {
            payloads.push(notification.payload().to_string());
            break;
        }
    }
    assert_eq!(
        payloads,
        vec![format!(
            "{{\"application_name\":\"{application}\",\"first\":1,\"last\":2}}"
        )],
        "one notification for the committed batch, none for the rolled-back append"
    );
}

#[test]
fn append_cost_does_not_grow_with_stored_events() {
    let (small, large) = (unique_name("Small"), unique_name("Large"));
    let mut client = connect();
    for (application, events) in [(&small, 10i64), (&large, 300_000)] {
        client
            .execute(
                "INSERT INTO biomero.events SELECT $1, n, gen_random_uuid(), 0, 't', '' \
                 FROM generate_series(1, $2::int8) AS n",
                &[application, &events],
            )
            .unwrap();
    }
    client.batch_execute("ANALYZE biomero.events").unwrap();
    // Blocks the append touched in biomero.events and its indexes, in this transaction only.
    // Blocks the append touched in biomero.events and its indexes: the backend's counters
    // before and after the call (they may include earlier, not yet flushed transactions).
    let touched = "SELECT sum(pg_stat_get_xact_blocks_fetched(oid))::int8 FROM pg_class \
                   WHERE oid = 'biomero.events'::regclass \
                      OR oid IN (SELECT indexrelid FROM pg_index \
                                 WHERE indrelid = 'biomero.events'::regclass)";
    let blocks = |client: &mut Client, application: &str| -> i64 {
        let mut tx = client.transaction().unwrap();
        let before: i64 = tx.query_one(touched, &[]).unwrap().get(0);
        tx.query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, 1, 't', '')",
            &[&application, &random_uuid()],
        )
        .unwrap();
        let after: i64 = tx.query_one(touched, &[]).unwrap().get(0);
        tx.commit().unwrap();
        after - before
    };
    let small_blocks = blocks(&mut client, &small);
    let large_blocks = blocks(&mut client, &large);
    eprintln!(
        "blocks touched by one append: {small_blocks} with 10 events, {large_blocks} with 300,000"
    );
    assert!(
        large_blocks <= small_blocks + 4,
        "{large_blocks} vs {small_blocks}"
    );
    assert!(large_blocks < 40);
}

#[test]
fn a_claim_taken_in_a_savepoint_is_held_to_the_end_of_the_transaction() {
    let (follower, upstream) = (unique_name("F"), unique_name("U"));
    register(&mut connect(), &follower);
    register(&mut connect(), &upstream);
    let mut holder = connect();
    holder
        .batch_execute(&format!(
            "BEGIN; SAVEPOINT s; SELECT biomero.claim('{follower}', '{upstream}'); \
             ROLLBACK TO SAVEPOINT s"
        ))
        .unwrap();
    let busy: Option<i64> = connect()
        .query_one(
            "SELECT biomero.claim($1, $2, wait => false)",
            &[&follower, &upstream],
        )
        .unwrap()
        .get(0);
    assert_eq!(busy, None, "the claim went with the savepoint");
    holder.batch_execute("COMMIT").unwrap();
}
