//! What needs servers of its own: concurrent mode without shared_preload_libraries, crashes
//! under concurrent load, and readers on a streaming replica, before and after its promotion.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::*;
use common::*;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel};
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PRELOAD: &str = "shared_preload_libraries=biomero_tracking";

/// Every notification a reader gets, page after page.
fn read_all(client: &mut Client, application: &str) -> Vec<i64> {
    let mut all: Vec<i64> = Vec::new();
    loop {
        let after = all.last().copied().unwrap_or(0);
        let page = page(client, application, after);
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[test]
fn concurrent_mode_needs_shared_preload_libraries() {
    let cluster = Cluster::start("nopreload", &[], &[PRELOAD]);
    let mut client = cluster.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    append_one(&mut client, application);
    drop(client);

    cluster.restart("fast", &[]);
    let mut client = cluster.connect_when_ready("biomero");
    let refused = client.query_one(APPEND, &[&application]).unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{refused}"
    );
    assert!(refused
        .as_db_error()
        .unwrap()
        .message()
        .contains("needs biomero_tracking in shared_preload_libraries"));
    let error = client
        .query_one("SELECT biomero.set_append_mode('Other', 'concurrent')", &[])
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    // Back to serialized works without it, and appends go on above the committed ids.
    set_append_mode(&mut client, application, "serialized");
    assert_eq!(append_one(&mut client, application), 2);
}

/// Writers appending concurrently until told to stop; returns the ids whose commit returned.
fn load(
    cluster: &Cluster,
    application: &str,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<i64>>> {
    (0..writers)
        .map(|_| {
            let (port, application, stop) = (cluster.port, application.to_string(), stop.clone());
            thread::spawn(move || {
                let mut committed = Vec::new();
                let mut rng = rand::thread_rng();
                let Ok(mut client) = try_connect_to_cluster(port, "biomero") else {
                    return committed;
                };
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut tx) = client.transaction() else {
                        break;
                    };
                    let Ok(row) = tx.query_one(APPEND, &[&application]) else {
                        break;
                    };
                    let id: i64 = row.get(0);
                    thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
                    if rng.gen_bool(0.1) {
                        let _ = tx.rollback();
                    } else if tx.commit().is_ok() {
                        committed.push(id);
                    } else {
                        break;
                    }
                }
                committed
            })
        })
        .collect()
}

fn crash_keeps_every_commit(how: &str) {
    let cluster = Cluster::start("crash", &[], &[PRELOAD]);
    let mut client = cluster.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&cluster, application, 8, stop.clone());
    thread::sleep(Duration::from_millis(1500));
    match how {
        "immediate stop" => {
            cluster.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        }
        _ => {
            // SIGKILL of one writer: the postmaster restarts every process.
            let victim: i32 = client
                .query_one(
                    "SELECT pid FROM pg_stat_activity WHERE datname = 'biomero' \
                     AND state = 'active' AND pid <> pg_backend_pid() LIMIT 1",
                    &[],
                )
                .map(|row| row.get(0))
                .or_else(|_| {
                    client
                        .query_one(
                            "SELECT pid FROM pg_stat_activity WHERE datname = 'biomero' \
                             AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
                             LIMIT 1",
                            &[],
                        )
                        .map(|row| row.get(0))
                })
                .unwrap();
            must_run_as_server_owner("kill", &["-KILL", &victim.to_string()]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let committed: BTreeSet<i64> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    if how == "immediate stop" {
        cluster.start_again(&[PRELOAD]);
    }
    let mut client = cluster.connect_when_ready("biomero");
    let stored: BTreeSet<i64> = stored_ids(&mut client, application).into_iter().collect();
    let lost: Vec<_> = committed.difference(&stored).collect();
    assert!(lost.is_empty(), "{how}: committed ids lost: {lost:?}");
    let max = stored.iter().max().copied().unwrap_or(0);
    // The counter continues above everything committed, and readers read everything.
    let next = append_one(&mut client, application);
    assert!(next > max, "{how}: id {next} reused (max committed {max})");
    let read: BTreeSet<i64> = read_all(&mut client, application).into_iter().collect();
    let expected: BTreeSet<i64> = stored.iter().copied().chain([next]).collect();
    assert_eq!(read, expected, "{how}: the horizon did not recover");
    eprintln!(
        "{how}: {} ids committed before the crash, all kept; next id {next} above {max}",
        committed.len()
    );
}

#[test]
fn an_immediate_stop_under_concurrent_load_loses_nothing_committed() {
    crash_keeps_every_commit("immediate stop");
}

#[test]
fn a_sigkilled_writer_under_concurrent_load_loses_nothing_committed() {
    crash_keeps_every_commit("SIGKILL");
}

#[test]
fn readers_on_a_hot_standby_never_skip_and_a_promoted_standby_continues() {
    let primary = Cluster::start("primary", &[], &[PRELOAD]);
    let mut client = primary.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    append_one(&mut client, application);
    let replica = Cluster::replica_of(&primary, &[PRELOAD]);

    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&primary, application, 8, stop.clone());
    let done = Arc::new(AtomicBool::new(false));
    let target = Arc::new(Mutex::new(None::<BTreeSet<i64>>));
    let readers: Vec<_> = [
        IsolationLevel::ReadCommitted,
        IsolationLevel::RepeatableRead,
    ]
    .into_iter()
    .map(|isolation| {
        let (port, done, target) = (replica.port, done.clone(), target.clone());
        thread::spawn(move || {
            let mut client = try_connect_to_cluster(port, "biomero").unwrap();
            let mut seen = Vec::new();
            let mut last = 0i64;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start()
                    .unwrap();
                let rows = page(&mut tx, application, last);
                tx.commit().unwrap();
                if let Some(&end) = rows.last() {
                    last = end;
                }
                seen.extend(rows);
                if done.load(Ordering::Relaxed) {
                    let target = target.lock().unwrap().clone().unwrap();
                    let have: BTreeSet<i64> = seen.iter().copied().collect();
                    if target.is_subset(&have) || Instant::now() > deadline {
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    })
    .collect();
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut committed: BTreeSet<i64> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    committed.insert(1);
    *target.lock().unwrap() = Some(committed.clone());
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        let seen = reader.join().unwrap();
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "a standby reader saw ids out of order or twice"
        );
        let seen: BTreeSet<i64> = seen.into_iter().collect();
        let missed: Vec<_> = committed.difference(&seen).collect();
        assert!(missed.is_empty(), "a standby reader skipped {missed:?}");
        eprintln!(
            "standby reader: {} committed ids, each seen once in order",
            committed.len()
        );
    }

    // Writes on the standby are refused before they touch its shared memory, which a
    // promotion keeps.
    let mut standby = replica.connect_when_ready("biomero");
    for call in [
        "SELECT biomero.record_event('WorkflowTracker', gen_random_uuid(), 0, 't', '')",
        "SELECT biomero.set_append_mode('WorkflowTracker', 'concurrent')",
    ] {
        let error = standby.query_one(call, &[]).unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
            "{call}: {error}"
        );
    }
    drop(standby);

    // Promotion: the former standby appends above everything committed and reads it all.
    replica.pg_ctl(&["-w", "promote"]);
    let mut client = replica.connect_when_ready("biomero");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(Instant::now() < deadline, "promotion did not finish");
        thread::sleep(Duration::from_millis(50));
    }
    let max = stored_ids(&mut client, application)
        .into_iter()
        .max()
        .unwrap();
    let next = append_one(&mut client, application);
    assert!(next > max);
    assert_eq!(page(&mut client, application, max - 1), vec![max, next]);
}

/// Waits until `query` (one bigint, or NULL) gives `expected` on `client`.
fn wait_for(client: &mut Client, query: &str, application: &str, expected: Option<i64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one(query, &[&application])
        .unwrap()
        .get::<_, Option<i64>>(0)
        != expected
    {
        assert!(
            Instant::now() < deadline,
            "{query} did not reach {expected:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_repeatable_read_reader_on_a_standby_never_skips_across_its_promotion() {
    let primary = Cluster::start("rrprimary", &[], &[PRELOAD]);
    let mut client = primary.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    for _ in 0..4 {
        append_one(&mut client, application);
    }
    let replica = Cluster::replica_of(&primary, &[PRELOAD]);
    // 5 in flight on the primary, 6 committed.
    let mut holder = primary.connect("biomero");
    let mut held = holder.transaction().unwrap();
    assert_eq!(append_one(&mut held, application), 5);
    assert_eq!(append_one(&mut client, application), 6);
    let published = "SELECT published_horizon FROM biomero.application_registry \
                     WHERE application_name = $1";
    let stored = "SELECT max(notification_id) FROM biomero.events WHERE application_name = $1";
    let mut watcher = replica.connect_when_ready("biomero");
    wait_for(&mut watcher, stored, application, Some(6));
    wait_for(&mut watcher, published, application, Some(4));
    // A REPEATABLE READ reader on the standby: its snapshot sees 6, not 5.
    let mut reader = replica.connect_when_ready("biomero");
    let mut old = reader
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    assert_eq!(page(&mut old, application, 0), vec![1, 2, 3, 4]);
    held.commit().unwrap();
    wait_for(&mut watcher, published, application, Some(6));
    drop(watcher);
    replica.pg_ctl(&["-w", "promote"]);
    let mut promoted = replica.connect_when_ready("biomero");
    let deadline = Instant::now() + Duration::from_secs(30);
    while promoted
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(Instant::now() < deadline, "promotion did not finish");
        thread::sleep(Duration::from_millis(50));
    }
    // Still inside the transaction begun on the standby: 6 is in its snapshot, 5 is not, so
    // it must not get 6.
    assert_eq!(page(&mut old, application, 4), Vec::<i64>::new());
    old.commit().unwrap();
    assert_eq!(page(&mut reader, application, 4), vec![5, 6]);
}

#[test]
fn the_first_concurrent_writer_after_a_restart_keeps_no_lock_to_its_commit() {
    let cluster = Cluster::start("restarted", &[], &[PRELOAD]);
    let mut client = cluster.database_with_extension("biomero");
    set_append_mode(&mut client, "WorkflowTracker", "concurrent");
    drop(client);
    cluster.restart("fast", &[PRELOAD]);
    let mut writer = cluster.connect_when_ready("biomero");
    writer.batch_execute("BEGIN").unwrap();
    // The first append since the restart sets the application's shared state up.
    assert_eq!(append_one(&mut writer, "WorkflowTracker"), 1);
    let mut other = cluster.connect("biomero");
    other.batch_execute("SET lock_timeout = '2s'").unwrap();
    // A change of mode takes the append lock: the writer's transaction does not hold it.
    let previous: String = other
        .query_one(
            "SELECT biomero.set_append_mode('WorkflowTracker', 'concurrent')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(previous, "concurrent");
    writer.batch_execute("COMMIT").unwrap();
}

/// Waits until `replica` has replayed everything `primary` has written so far.
fn wait_for_replay(primary: &mut Client, replica: &mut Client) {
    let target: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replica
        .query_one(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            &[&target],
        )
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {target}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Everything a reader on `client` may read of `application` now.
fn readable(client: &mut Client, application: &str) -> Vec<i64> {
    page(client, application, 0)
}

#[test]
fn a_switch_run_again_while_an_id_is_in_flight_lets_no_standby_reader_skip() {
    let primary = Cluster::start("reswitch", &[], &[PRELOAD]);
    let mut client = primary.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    let replica = Cluster::replica_of(&primary, &[PRELOAD]);
    let mut standby = replica.connect_when_ready("biomero");
    // 1 in flight, 2 committed: nothing is readable until 1 ends.
    let mut holder = primary.connect("biomero");
    let mut held = holder.transaction().unwrap();
    assert_eq!(append_one(&mut held, application), 1);
    assert_eq!(append_one(&mut client, application), 2);
    for modes in [&["concurrent"][..], &["serialized", "concurrent"][..]] {
        for mode in modes {
            set_append_mode(&mut client, application, mode);
        }
        wait_for_replay(&mut client, &mut standby);
        assert_eq!(
            readable(&mut standby, application),
            Vec::<i64>::new(),
            "after switching to {modes:?}, a standby reader got an id above 1, still in flight"
        );
        assert_eq!(readable(&mut client, application), Vec::<i64>::new());
    }
    held.commit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while readable(&mut standby, application) != vec![1, 2] {
        assert!(Instant::now() < deadline, "the standby never read 1 and 2");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_a_restart_above_rolled_back_ids_no_standby_reader_skips() {
    let primary = Cluster::start("rolledback", &[], &[PRELOAD]);
    let mut client = primary.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    assert_eq!(append_one(&mut client, application), 1);
    for expected in [2, 3] {
        let mut rolled_back = client.transaction().unwrap();
        assert_eq!(append_one(&mut rolled_back, application), expected);
        rolled_back.rollback().unwrap();
    }
    // The holes at the top are settled: the publisher publishes 3.
    let published = "SELECT published_horizon FROM biomero.application_registry \
                     WHERE application_name = $1";
    wait_for(&mut client, published, application, Some(3));
    drop(client);
    let replica = Cluster::replica_of(&primary, &[PRELOAD]);
    primary.restart("fast", &[PRELOAD]);
    let mut client = primary.connect_when_ready("biomero");
    // While the registry row is held, no publisher can correct what standbys read up to.
    let mut row_holder = primary.connect("biomero");
    let mut row = row_holder.transaction().unwrap();
    row.execute(
        "SELECT 1 FROM biomero.application_registry WHERE application_name = $1 FOR UPDATE",
        &[&application],
    )
    .unwrap();
    let mut holder = primary.connect("biomero");
    let mut held = holder.transaction().unwrap();
    let in_flight = append_one(&mut held, application);
    let committed = append_one(&mut client, application);
    assert!(
        in_flight > 3 && committed > 3,
        "ids {in_flight} and {committed} reuse ids standbys may have passed (published 3)"
    );
    let mut standby = replica.connect_when_ready("biomero");
    wait_for_replay(&mut client, &mut standby);
    assert_eq!(readable(&mut standby, application), vec![1]);
    row.commit().unwrap();
    held.commit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while readable(&mut standby, application) != vec![1, in_flight, committed] {
        assert!(
            Instant::now() < deadline,
            "the standby never read the new ids"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shared_memory_of_dropped_databases_and_installations_is_given_back() {
    let cluster = Cluster::start("reclaim", &[], &[PRELOAD, "biomero.max_applications=16"]);
    let fill = |client: &mut Client, prefix: &str| {
        for index in 0..16 {
            set_append_mode(client, &format!("{prefix}{index}"), "concurrent");
        }
        let full = client
            .query_one(
                "SELECT biomero.set_append_mode('OneTooMany', 'concurrent')",
                &[],
            )
            .unwrap_err();
        assert_eq!(
            full.code(),
            Some(&SqlState::CONFIGURATION_LIMIT_EXCEEDED),
            "{full}"
        );
        // An application without append state switches to serialized without any.
        client
            .query_one("SELECT biomero.set_append_mode('Plain', 'serialized')", &[])
            .unwrap();
    };
    let mut first = cluster.database_with_extension("first");
    fill(&mut first, "First");
    drop(first);
    cluster
        .connect("postgres")
        .batch_execute("DROP DATABASE first WITH (FORCE)")
        .unwrap();
    let mut second = cluster.database_with_extension("second");
    fill(&mut second, "Second");
    // The extension dropped and created again in the same database: a new installation.
    second
        .batch_execute("DROP EXTENSION biomero_tracking; CREATE EXTENSION biomero_tracking")
        .unwrap();
    fill(&mut second, "Again");
    assert_eq!(append_one(&mut second, "Again0"), 1);
}

/// A cluster whose horizon publishers leave after half a second without work.
fn quickly_idle_cluster(name: &str) -> Cluster {
    Cluster::start(
        name,
        &[],
        &[PRELOAD, "biomero.publisher_idle_timeout=500ms"],
    )
}

/// The pid of the database's horizon publisher, waiting up to 10 s for one to run.
fn publisher_pid(client: &mut Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = \
                 'biomero_tracking horizon publisher' AND datname = current_database()",
                &[],
            )
            .unwrap()
        {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "no horizon publisher runs");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The wake-up of `listener` that announces id `id` of `application`, within 10 s.
fn announced(listener: &mut Client, application: &str, id: i64) -> serde_json::Value {
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(10));
    while let Some(notification) = iter.next().unwrap() {
        let value: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
        let (first, last) = (
            value["first"].as_i64().unwrap(),
            value["last"].as_i64().unwrap(),
        );
        assert!(1 <= first && first <= last, "a wake-up for no ids: {value}");
        if value["application_name"] == application && first <= id && id <= last {
            return value;
        }
    }
    panic!("id {id} of {application} was not announced within 10 s of its commit");
}

#[test]
fn a_commit_after_the_publisher_had_nothing_to_do_for_long_is_announced() {
    let cluster = quickly_idle_cluster("idle");
    let mut client = cluster.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    let mut listener = cluster.connect("biomero");
    listener.batch_execute("LISTEN biomero_events").unwrap();
    let mut holder = cluster.connect("biomero");
    let mut held = holder.transaction().unwrap();
    let id = append_one(&mut held, application);
    publisher_pid(&mut client);
    // Ten idle timeouts while the id is in flight: the publisher stays for it.
    thread::sleep(Duration::from_secs(5));
    held.commit().unwrap();
    announced(&mut listener, application, id);
}

#[test]
fn a_commit_after_the_publisher_was_terminated_is_announced() {
    let cluster = quickly_idle_cluster("terminated");
    let mut client = cluster.database_with_extension("biomero");
    let application = "WorkflowTracker";
    set_append_mode(&mut client, application, "concurrent");
    let mut listener = cluster.connect("biomero");
    listener.batch_execute("LISTEN biomero_events").unwrap();
    for round in 0..3 {
        let mut holder = cluster.connect("biomero");
        let mut held = holder.transaction().unwrap();
        let id = append_one(&mut held, application);
        let pid = publisher_pid(&mut client);
        client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .unwrap()
            .is_some()
        {
            assert!(Instant::now() < deadline, "the publisher did not exit");
            thread::sleep(Duration::from_millis(20));
        }
        held.commit().unwrap();
        let value = announced(&mut listener, application, id);
        eprintln!("round {round}: id {id} announced after the publisher was terminated: {value}");
    }
}

#[test]
fn an_application_switched_with_no_events_is_not_announced() {
    let cluster = quickly_idle_cluster("empty");
    let mut client = cluster.database_with_extension("biomero");
    let mut listener = cluster.connect("biomero");
    listener.batch_execute("LISTEN biomero_events").unwrap();
    set_append_mode(&mut client, "Empty", "concurrent");
    let id = append_one(&mut client, "Empty");
    // `announced` refuses any wake-up for no ids (first 0, last 0) on its way.
    let value = announced(&mut listener, "Empty", id);
    assert_eq!(
        (value["first"].as_i64(), value["last"].as_i64()),
        (Some(1), Some(1))
    );
}

#[test]
fn a_database_with_a_publisher_is_copied_and_dropped_without_force() {
    let cluster = Cluster::start("template", &[], &[PRELOAD]);
    let mut client = cluster.database_with_extension("source");
    set_append_mode(&mut client, "WorkflowTracker", "concurrent");
    append_one(&mut client, "WorkflowTracker");
    publisher_pid(&mut client);
    drop(client);
    let mut admin = cluster.connect("postgres");
    // CREATE DATABASE and DROP DATABASE wait up to 5 s for other sessions to leave the
    // database; the publisher leaves within a second.
    admin
        .batch_execute("CREATE DATABASE copy TEMPLATE source")
        .unwrap();
    let mut copy = cluster.connect("copy");
    assert_eq!(stored_ids(&mut copy, "WorkflowTracker"), vec![1]);
    assert_eq!(append_one(&mut copy, "WorkflowTracker"), 2);
    drop(copy);
    admin.batch_execute("DROP DATABASE copy").unwrap();
    // The publisher came back for the source's next concurrent append, and leaves again.
    let mut client = cluster.connect("source");
    append_one(&mut client, "WorkflowTracker");
    publisher_pid(&mut client);
    drop(client);
    admin.batch_execute("DROP DATABASE source").unwrap();
}
