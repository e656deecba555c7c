//! Faults: sessions terminated (`pg_terminate_backend`) or killed (SIGKILL) in the middle of
//! appends and claims, an immediate shutdown and restart during a 16-writer load, a backend
//! killed during that load, and lock waits cut by `lock_timeout`, `statement_timeout` and a
//! cancel. After each: no committed event is lost, no partial batch is visible, ids have no
//! gap and no duplicate, no position is ahead of the work committed with it, and the next
//! writers and followers proceed at once (no lock stays held).
//!
//! A SIGKILLed backend makes the postmaster end every session and recover, and a restart ends
//! them too, so the tests of this file run one at a time (`serial()`) and each opens its own
//! sessions, waiting for the server to accept them again.

mod common;
#[path = "common/follower.rs"]
mod follower;

use biomero_tracking::locks::{APPEND_LOCK_KIND as APPEND_LOCK, CLAIM_LOCK_KIND as CLAIM_LOCK};
use common::*;
use follower::FollowerStep;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time in this binary; a failed test does not block the others. The first
/// caller also quiets the server's log (see `quiet_server_log`).
fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(quiet_server_log);
    guard
}

const READY: Duration = Duration::from_secs(60);

/// How long the sessions of these tests wait for a lock: one left held by a killed session
/// makes the test fail instead of hang.
const LOCK_TIMEOUT: &str = "30s";

/// A session as `session(LOCK_TIMEOUT)`, or None while the server is not accepting sessions.
fn try_session() -> Option<Client> {
    let mut client = try_connect_to(pgrx_tests::get_pg_dbname()).ok()?;
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .ok()?;
    Some(client)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kill {
    /// `pg_terminate_backend`: the backend exits cleanly, the others go on.
    Terminate,
    /// `kill -9`: the postmaster ends every session and runs crash recovery.
    Sigkill,
}

/// Sets the server's log_min_messages to `fatal` for this binary's server and waits until
/// new sessions run with it. The test framework reads the server's log and takes a second
/// "database system is ready to accept connections" (after the crash recovery a SIGKILL
/// causes) for an unexpected crash; at `fatal` that line is not logged.
fn quiet_server_log() {
    let mut client = connect_when_ready(READY);
    client
        .batch_execute("ALTER SYSTEM SET log_min_messages = 'fatal'")
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current: String = connect_when_ready(READY)
            .query_one("SHOW log_min_messages", &[])
            .unwrap()
            .get(0);
        if current == "fatal" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "log_min_messages stays {current}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until process `pid` has exited (gone, or a zombie not yet reaped).
fn wait_for_exit(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().next().map(str::to_string)
            });
        if state.is_none() || state.as_deref() == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Kills backend `pid`. After a SIGKILL, `witness` (another backend) is waited for too: the
/// postmaster ends every session, so once it is gone they all are.
fn kill(pid: i32, how: Kill) {
    kill_and_wait(pid, how, None)
}

fn kill_and_wait(pid: i32, how: Kill, witness: Option<i32>) {
    match how {
        Kill::Terminate => {
            let mut observer = connect_when_ready(READY);
            let gone: bool = observer
                .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
                .unwrap()
                .get(0);
            assert!(
                gone,
                "backend {pid} did not exit after pg_terminate_backend"
            );
        }
        Kill::Sigkill => {
            must_run_as_server_owner("kill", &["-KILL", &pid.to_string()]);
            wait_for_exit(pid);
            if let Some(witness) = witness {
                wait_for_exit(witness);
            }
            // Crash recovery is over once a session is accepted again.
            drop(connect_when_ready(READY));
        }
    }
}

/// A new session to the tests' database, retrying while the server restarts or recovers.
fn connect_when_ready(timeout: Duration) -> Client {
    // The port is asked (once) of a session while the server is up.
    test_server();
    retry_connect("the test server", timeout, || {
        try_connect_to(pgrx_tests::get_pg_dbname())
    })
}

/// Waits until backend `pid` is blocked waiting for one of the extension's locks of `kind`.
fn wait_until_blocked(observer: &mut Client, pid: i32, kind: i16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted \
                 AND locktype = 'advisory' AND objsubid = $2",
                &[&pid, &kind],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} did not start waiting for lock kind {kind:#x}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The extension's locks held or awaited by anyone, as (pid, objsubid, granted).
fn extension_locks(client: &mut Client) -> Vec<(i32, i16, bool)> {
    client
        .query(
            "SELECT pid, objsubid::int2, granted FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid IN ($1, $2) ORDER BY pid",
            &[&APPEND_LOCK, &CLAIM_LOCK],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Errors a session may see when its backend or the server goes away under it.
fn is_connection_loss(error: &postgres::Error) -> bool {
    error.is_closed()
        || match error.code() {
            None => true,
            Some(code) => {
                code == &SqlState::ADMIN_SHUTDOWN
                    || code == &SqlState::CRASH_SHUTDOWN
                    || code == &SqlState::CANNOT_CONNECT_NOW
                    || code.code().starts_with("08")
            }
        }
}

/// One batch of events: `size` versions (0, 1, …) of one fresh aggregate, so a stored
/// batch is found by its aggregate and a partial one shows as fewer versions.
#[derive(Clone, Debug)]
struct Batch {
    application: String,
    aggregate: String,
    size: usize,
}

impl Batch {
    fn new(application: &str, size: usize) -> Self {
        Batch {
            application: application.to_string(),
            aggregate: random_uuid(),
            size,
        }
    }

    fn append(&self, client: &mut Client) -> Result<Vec<i64>, postgres::Error> {
        append_versions(
            client,
            &self.application,
            &self.aggregate,
            0..self.size as i64,
            "biomero.test:Batch.Appended",
            |version| format!("{{\"version\": {version}}}").into_bytes(),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// The writer saw its COMMIT (or autocommit call) succeed: the batch must be stored.
    Committed,
    /// The connection broke during COMMIT: stored entirely or not at all.
    Unknown,
    /// It failed or was rolled back before COMMIT: nothing of it may be stored.
    NotCommitted,
}

#[derive(Clone, Debug)]
struct Attempt {
    batch: Batch,
    /// The ids record_events returned, when it returned.
    ids: Option<Vec<i64>>,
    outcome: Outcome,
}

#[derive(Debug, Default, PartialEq)]
struct Tally {
    committed: usize,
    unknown_stored: usize,
    unknown_absent: usize,
    not_committed: usize,
    events: usize,
}

/// Checks what is stored in `applications` against every attempt made on them: committed
/// batches are stored whole under the ids their writer saw, unknown ones whole or not at
/// all, the others not at all, and nothing else is stored.
fn check_attempts(client: &mut Client, applications: &[String], attempts: &[Attempt]) -> Tally {
    let mut stored: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for row in client
        .query(
            "SELECT application_name, originator_id::text, \
                    array_agg(notification_id ORDER BY originator_version), \
                    array_agg(originator_version ORDER BY originator_version) \
             FROM biomero.events WHERE application_name = ANY($1) GROUP BY 1, 2",
            &[&applications],
        )
        .unwrap()
    {
        let versions: Vec<i64> = row.get(3);
        let ids: Vec<i64> = row.get(2);
        assert_eq!(
            versions,
            (0..versions.len() as i64).collect::<Vec<_>>(),
            "a batch is stored partially: {ids:?}"
        );
        stored.insert((row.get(0), row.get(1)), ids);
    }
    let mut tally = Tally::default();
    for attempt in attempts {
        let key = (
            attempt.batch.application.clone(),
            attempt.batch.aggregate.clone(),
        );
        let found = stored.remove(&key);
        if let Some(ids) = &found {
            assert_eq!(
                ids.len(),
                attempt.batch.size,
                "partial batch stored: {attempt:?}"
            );
            if let Some(seen) = &attempt.ids {
                assert_eq!(
                    ids, seen,
                    "stored under other ids than returned: {attempt:?}"
                );
            }
            tally.events += ids.len();
        }
        match (attempt.outcome, found.is_some()) {
            (Outcome::Committed, true) => tally.committed += 1,
            (Outcome::Committed, false) => panic!("a committed batch was lost: {attempt:?}"),
            (Outcome::Unknown, true) => tally.unknown_stored += 1,
            (Outcome::Unknown, false) => tally.unknown_absent += 1,
            (Outcome::NotCommitted, false) => tally.not_committed += 1,
            (Outcome::NotCommitted, true) => {
                panic!("an uncommitted batch is visible: {attempt:?}")
            }
        }
    }
    assert!(
        stored.is_empty(),
        "events stored that no writer appended: {stored:?}"
    );
    tally
}

/// The topic of the events the followers of these tests commit with their position, one per
/// notification processed, whose state is the upstream id (`check_follower` reads them).
const PROCESSED: &str = "biomero.test:Processed";

/// One step of a follower: claim, read up to `max` notifications after the position, and
/// commit one `PROCESSED` event per notification together with the new position. Returns how
/// many notifications it processed.
fn follower_step(
    client: &mut Client,
    follower: &str,
    upstream: &str,
    max: i64,
) -> Result<usize, postgres::Error> {
    let step = FollowerStep {
        follower,
        upstream,
        max,
        wait: true,
        isolation: IsolationLevel::ReadCommitted,
        read_model: None,
        emit: Some(PROCESSED),
    };
    let processed = step
        .run(client)?
        .expect("a step that waits takes the claim");
    Ok(processed.len())
}

/// The follower's log and position agree: it holds one processed event for each upstream id
/// 1..=position, once, and nothing past the position (the position is never ahead of the
/// work committed with it, nor behind). Returns the position.
fn check_follower(client: &mut Client, follower: &str, upstream: &str) -> i64 {
    let position = follower_position(client, follower, upstream);
    let processed: Vec<i64> = client
        .query(
            "SELECT convert_from(state, 'UTF8')::int8 AS upstream_id FROM biomero.events \
             WHERE application_name = $1 AND topic = $2 ORDER BY upstream_id",
            &[&follower, &PROCESSED],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        processed,
        (1..=position).collect::<Vec<_>>(),
        "follower {follower}: processed upstream ids vs position {position}"
    );
    position
}

/// After a fault: with lock_timeout set, an append to each application and a claim of the
/// follower succeed at once (nothing stays locked), and no extension lock is left held.
fn check_next_sessions_proceed(applications: &[String], follower: &str, upstream: &str) {
    let mut client = connect_when_ready(READY);
    client
        .batch_execute("SET lock_timeout = '2s'; SET statement_timeout = '10s'")
        .unwrap();
    for application in applications {
        let head = notification_head(&mut client, application);
        let ids = Batch::new(application, 2)
            .append(&mut client)
            .unwrap_or_else(|error| panic!("append after the fault: {}", db_message(&error)));
        assert_eq!(ids, vec![head + 1, head + 2], "next ids continue the log");
    }
    client.batch_execute("BEGIN").unwrap();
    assert!(
        try_claim(&mut client, follower, upstream).is_some(),
        "the claim is still held by a dead session"
    );
    client.batch_execute("COMMIT").unwrap();
    // The follower catches up with the upstream head.
    while follower_step(&mut client, follower, upstream, 5000).unwrap() > 0 {}
    let head: i64 = client
        .query_one("SELECT biomero.max_notification_id($1)", &[&upstream])
        .unwrap()
        .get(0);
    assert_eq!(check_follower(&mut client, follower, upstream), head);
    let locks: Vec<_> = extension_locks(&mut client)
        .into_iter()
        .filter(|(pid, _, _)| *pid != backend_pid(&mut client))
        .collect();
    assert!(locks.is_empty(), "extension locks left: {locks:?}");
    assert_store_invariants(&mut client);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    /// The session inside the open transaction: claim, follower commit and an upstream
    /// append returned, COMMIT not yet sent.
    Holder,
    /// A session blocked in record_events, waiting for the upstream's append lock.
    AppendWaiter,
    /// A session blocked in claim, waiting for the follower's claim.
    ClaimWaiter,
}

/// A holder with an open transaction (claim, a follower commit, an upstream batch) and two
/// sessions waiting behind it (an append, a claim); `victim` is terminated or killed.
fn interrupted(how: Kill, victim: Victim) {
    let _serial = serial();
    let (upstream, follower) = (unique_name("Upstream"), unique_name("Follower"));
    let mut setup = connect_when_ready(READY);
    let mut attempts = Vec::new();
    for size in [2, 3, 1] {
        let batch = Batch::new(&upstream, size);
        let ids = batch.append(&mut setup).unwrap();
        attempts.push(Attempt {
            batch,
            ids: Some(ids),
            outcome: Outcome::Committed,
        });
    }
    assert_eq!(
        follower_step(&mut setup, &follower, &upstream, 2).unwrap(),
        2
    );

    // The holder: everything returned, nothing committed.
    let mut holder = connect();
    let holder_pid = backend_pid(&mut holder);
    holder.batch_execute("BEGIN").unwrap();
    assert_eq!(claim(&mut holder, &follower, &upstream), 2);
    let followed: Option<Vec<i64>> = holder
        .query_one(
            "SELECT biomero.record_events($1, ARRAY[$2::text::uuid, $3::text::uuid], \
             ARRAY[0, 0]::int8[], ARRAY['biomero.test:Processed', 'biomero.test:Processed'], \
             ARRAY['3'::bytea, '4'::bytea], $4, 4)",
            &[&follower, &random_uuid(), &random_uuid(), &upstream],
        )
        .unwrap()
        .get(0);
    assert_eq!(followed, Some(vec![3, 4]));
    let holder_batch = Batch::new(&upstream, 3);
    assert_eq!(holder_batch.append(&mut holder).unwrap(), vec![7, 8, 9]);

    // Two sessions wait behind it.
    let (pids, pid_of) = mpsc::channel();
    let append_batch = Batch::new(&upstream, 2);
    let append_waiter = {
        let (batch, pids) = (append_batch.clone(), pids.clone());
        thread::spawn(move || {
            let mut client = session(LOCK_TIMEOUT);
            pids.send(("append", backend_pid(&mut client))).unwrap();
            batch.append(&mut client)
        })
    };
    let claim_waiter = {
        let (follower, upstream) = (follower.clone(), upstream.clone());
        thread::spawn(move || {
            let mut client = session(LOCK_TIMEOUT);
            pids.send(("claim", backend_pid(&mut client))).unwrap();
            client.batch_execute("BEGIN")?;
            let position: i64 = client
                .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])?
                .get(0);
            client.batch_execute("COMMIT")?;
            Ok::<_, postgres::Error>(position)
        })
    };
    let mut observer = connect();
    let waiters: HashMap<&str, i32> = pid_of.iter().take(2).collect();
    wait_until_blocked(&mut observer, waiters["append"], APPEND_LOCK);
    wait_until_blocked(&mut observer, waiters["claim"], CLAIM_LOCK);

    let victim_pid = match victim {
        Victim::Holder => holder_pid,
        Victim::AppendWaiter => waiters["append"],
        Victim::ClaimWaiter => waiters["claim"],
    };
    kill_and_wait(victim_pid, how, Some(holder_pid));
    if how == Kill::Sigkill || victim == Victim::Holder {
        // A terminated holder's transaction is gone; after a SIGKILL every session is.
        holder
            .batch_execute("COMMIT")
            .expect_err("the holder's session must be gone");
    } else {
        // The terminated waiter has left the queue; the holder commits and the rest follow.
        holder.batch_execute("COMMIT").unwrap();
    }
    let append_result = append_waiter.join().unwrap();
    let claim_result = claim_waiter.join().unwrap();

    let holder_committed = how == Kill::Terminate && victim != Victim::Holder;
    attempts.push(Attempt {
        batch: holder_batch,
        ids: Some(vec![7, 8, 9]),
        outcome: if holder_committed {
            Outcome::Committed
        } else {
            Outcome::NotCommitted
        },
    });
    let expected_position = if holder_committed { 4 } else { 2 };
    match (how, victim) {
        (Kill::Sigkill, _) => {
            let append_error = append_result.expect_err("every session ends after a SIGKILL");
            let claim_error = claim_result.expect_err("every session ends after a SIGKILL");
            assert!(is_connection_loss(&append_error), "{append_error}");
            assert!(is_connection_loss(&claim_error), "{claim_error}");
            attempts.push(Attempt {
                batch: append_batch,
                ids: None,
                outcome: Outcome::NotCommitted,
            });
        }
        (Kill::Terminate, Victim::AppendWaiter) => {
            let error = append_result.expect_err("the terminated waiter fails");
            // 57P01 "terminating connection due to administrator command", or the closed
            // connection when the client reads the close before that message.
            assert!(is_connection_loss(&error), "{error}");
            assert_eq!(claim_result.unwrap(), expected_position);
            attempts.push(Attempt {
                batch: append_batch,
                ids: None,
                outcome: Outcome::NotCommitted,
            });
        }
        (Kill::Terminate, Victim::ClaimWaiter) => {
            let error = claim_result.expect_err("the terminated waiter fails");
            // 57P01 "terminating connection due to administrator command", or the closed
            // connection when the client reads the close before that message.
            assert!(is_connection_loss(&error), "{error}");
            // It takes the ids after the holder's.
            let ids = append_result.unwrap();
            assert_eq!(ids, vec![10, 11]);
            attempts.push(Attempt {
                batch: append_batch,
                ids: Some(ids),
                outcome: Outcome::Committed,
            });
        }
        (Kill::Terminate, Victim::Holder) => {
            // The holder's ids go to the waiter (no gap) and its position was not kept.
            let ids = append_result.unwrap();
            assert_eq!(ids, vec![7, 8]);
            assert_eq!(claim_result.unwrap(), expected_position);
            attempts.push(Attempt {
                batch: append_batch,
                ids: Some(ids),
                outcome: Outcome::Committed,
            });
        }
    }

    let mut client = connect_when_ready(READY);
    let tally = check_attempts(&mut client, std::slice::from_ref(&upstream), &attempts);
    assert_eq!(
        check_follower(&mut client, &follower, &upstream),
        expected_position
    );
    eprintln!("{how:?} of the {victim:?}: {tally:?}, follower position {expected_position}");
    check_next_sessions_proceed(&[upstream.clone(), follower.clone()], &follower, &upstream);
}

#[test]
fn fault_terminated_holder_of_an_open_append_and_claim() {
    interrupted(Kill::Terminate, Victim::Holder);
}

#[test]
fn fault_terminated_writer_waiting_for_the_append_lock() {
    interrupted(Kill::Terminate, Victim::AppendWaiter);
}

#[test]
fn fault_terminated_follower_waiting_for_a_claim() {
    interrupted(Kill::Terminate, Victim::ClaimWaiter);
}

#[test]
fn fault_sigkilled_holder_of_an_open_append_and_claim() {
    interrupted(Kill::Sigkill, Victim::Holder);
}

#[test]
fn fault_sigkilled_writer_waiting_for_the_append_lock() {
    interrupted(Kill::Sigkill, Victim::AppendWaiter);
}

#[test]
fn fault_sigkilled_follower_waiting_for_a_claim() {
    interrupted(Kill::Sigkill, Victim::ClaimWaiter);
}

/// A large record_events call (autocommit) is killed while it runs: its batch is stored
/// whole (when the kill came after the commit) or not at all, and the log goes on.
fn killed_while_appending(how: Kill) {
    const SIZE: usize = 20_000;
    let _serial = serial();
    let upstream = unique_name("Running");
    let follower = unique_name("RunningFollower");
    let mut client = connect_when_ready(READY);
    let first = Batch::new(&upstream, 5);
    let mut attempts = vec![Attempt {
        ids: Some(first.append(&mut client).unwrap()),
        batch: first,
        outcome: Outcome::Committed,
    }];
    let mut landed = 0;
    for round in 0..3 {
        let batch = Batch::new(&upstream, SIZE);
        let (pid_sender, pid) = mpsc::channel();
        let writer = {
            let batch = batch.clone();
            thread::spawn(move || {
                let mut client = connect();
                pid_sender.send(backend_pid(&mut client)).unwrap();
                batch.append(&mut client)
            })
        };
        let pid = pid.recv().unwrap();
        let mut observer = connect();
        // Wait until the call is running, then let it get a little way in.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let active: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 \
                     AND state = 'active' AND query LIKE '%record_events%'",
                    &[&pid],
                )
                .unwrap()
                .get(0);
            if active > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the append did not start");
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20 * round));
        drop(observer);
        kill(pid, how);
        let result = writer.join().unwrap();
        attempts.push(match result {
            Ok(ids) => Attempt {
                batch,
                ids: Some(ids),
                outcome: Outcome::Committed,
            },
            Err(error) => {
                assert!(is_connection_loss(&error), "{error}");
                landed += 1;
                Attempt {
                    batch,
                    ids: None,
                    outcome: Outcome::Unknown,
                }
            }
        });
        client = connect_when_ready(READY);
    }
    let tally = check_attempts(&mut client, std::slice::from_ref(&upstream), &attempts);
    eprintln!(
        "{how:?} during a running {SIZE}-event record_events, 3 times: {landed} landed inside \
         the call; {tally:?}"
    );
    assert!(landed > 0, "no kill landed while record_events ran");
    assert_store_invariants(&mut client);
    check_next_sessions_proceed(std::slice::from_ref(&upstream), &follower, &upstream);
}

#[test]
fn fault_terminated_during_a_running_record_events() {
    killed_while_appending(Kill::Terminate);
}

#[test]
fn fault_sigkilled_during_a_running_record_events() {
    killed_while_appending(Kill::Sigkill);
}

/// statement_timeout cuts a large record_events while it inserts (not while it waits for a
/// lock): PostgreSQL's own 57014, nothing of the batch or of the follower position that came
/// with it is kept, and the next append takes the next id.
#[test]
fn fault_statement_timeout_during_a_running_record_events() {
    const SIZE: i32 = 20_000;
    let _serial = serial();
    let (upstream, follower) = (unique_name("Cut"), unique_name("CutFollower"));
    let tracked = unique_name("CutTracked");
    let mut client = connect_when_ready(READY);
    let first = Batch::new(&upstream, 3);
    assert_eq!(first.append(&mut client).unwrap(), vec![1, 2, 3]);
    let (mut cut, mut kept, mut position_kept) = (0, 0, false);
    for (timeout, with_position) in [("30ms", false), ("60ms", true), ("120ms", false)] {
        client
            .batch_execute(&format!("SET statement_timeout = '{timeout}'"))
            .unwrap();
        let result = client.query_one(
            "SELECT biomero.record_events($1, array_agg(gen_random_uuid()), \
             array_agg(0::int8), array_agg('biomero.test:Large'::text), \
             array_agg(convert_to(repeat('x', 100), 'UTF8')), $2, $3) \
             FROM generate_series(1, $4) AS n",
            &[
                &follower,
                &with_position.then_some(tracked.as_str()),
                &with_position.then_some(7i64),
                &SIZE,
            ],
        );
        client.batch_execute("SET statement_timeout = 0").unwrap();
        if let Err(error) = result {
            assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
            cut += 1;
        } else {
            // Too fast for this timeout on this machine: then it is stored whole.
            kept += i64::from(SIZE);
            position_kept |= with_position;
        }
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM biomero.events WHERE application_name = $1",
            &[&follower],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        stored, kept,
        "only the batches whose call succeeded are stored"
    );
    let position: Option<i64> = client
        .query_one(
            "SELECT biomero.max_tracking_id($1, $2)",
            &[&follower, &tracked],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        position,
        position_kept.then_some(7),
        "the position is kept only with its batch"
    );
    assert!(cut > 0, "statement_timeout never cut the running call");
    eprintln!(
        "statement_timeout during a running {SIZE}-event record_events: cut {cut} of 3 times, \
         {stored} events kept"
    );
    assert_store_invariants(&mut client);
    check_next_sessions_proceed(&[upstream.clone(), follower.clone()], &follower, &upstream);
}

#[test]
fn fault_timeouts_and_cancels_cut_claim_and_append_waits_and_leave_nothing_behind() {
    let _serial = serial();
    let (follower, upstream, other_upstream, other) = (
        unique_name("TimeoutFollower"),
        unique_name("TimeoutUpstream"),
        unique_name("TimeoutOtherUpstream"),
        unique_name("TimeoutOther"),
    );
    let claim_name = format!("the claim of follower \"{follower}\" on upstream \"{upstream}\"");
    let append_name = format!("the append lock of application \"{follower}\"");
    let fresh = unique_name("TimeoutFresh");
    let mut setup = connect_when_ready(READY);
    Batch::new(&upstream, 3).append(&mut setup).unwrap();
    // The names are used once (and so registered) before the waits below: the first use of a
    // name is waited for too, and is shown last.
    claim(&mut setup, &follower, &upstream);

    // The holder claims the pair and appends to the follower's log and to a name it is the
    // first to use, and does not commit.
    let mut holder = connect();
    holder.batch_execute("BEGIN").unwrap();
    holder
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, 0, 'biomero.test:Other', '')",
            &[&fresh, &random_uuid()],
        )
        .unwrap();
    claim(&mut holder, &follower, &upstream);
    holder
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, 0, 'biomero.test:Other', '')",
            &[&follower, &random_uuid()],
        )
        .unwrap();

    let mut waiter = connect();
    // lock_timeout while waiting for the claim: 55P03 naming the claim.
    waiter.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let started = Instant::now();
    let error = waiter
        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    assert_eq!(
        db_message(&error),
        format!("lock timeout expired while waiting for {claim_name}")
    );
    assert!(started.elapsed() >= Duration::from_millis(190));

    // statement_timeout while waiting for the claim: 57014 naming the claim.
    waiter
        .batch_execute("SET lock_timeout = 0; SET statement_timeout = '1s'")
        .unwrap();
    let error = waiter
        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(
        db_message(&error),
        format!("canceling statement while waiting for {claim_name}")
    );
    waiter.batch_execute("SET statement_timeout = 0").unwrap();

    // lock_timeout while waiting for the first use of a name by another transaction: 55P03
    // naming the registration.
    waiter.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let error = waiter
        .query_one(
            "SELECT biomero.record_event($1, $2::text::uuid, 1, 'biomero.test:Other', '')",
            &[&fresh, &random_uuid()],
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    assert_eq!(
        db_message(&error),
        format!(
            "lock timeout expired while waiting for the registration of application \"{fresh}\" \
             by another transaction"
        )
    );
    waiter.batch_execute("SET lock_timeout = 0").unwrap();

    // A timeout inside a transaction that had appended: the transaction's events go with it
    // and its append lock is released.
    let lost = Batch::new(&other, 4);
    waiter.batch_execute("BEGIN").unwrap();
    assert_eq!(lost.append(&mut waiter).unwrap(), vec![1, 2, 3, 4]);
    waiter
        .batch_execute("SET LOCAL lock_timeout = '200ms'")
        .unwrap();
    let error = waiter
        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    waiter.batch_execute("ROLLBACK").unwrap();

    // A follower commit whose position is recorded first and whose append then waits for the
    // follower's append lock: the timeout takes the position back with it.
    waiter.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let error = waiter
        .query_one(
            "SELECT biomero.record_events($1, ARRAY[$2::text::uuid], ARRAY[0]::int8[], \
             ARRAY['biomero.test:Other'], ARRAY[''::bytea], $3, 5)",
            &[&follower, &random_uuid(), &other_upstream],
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    assert_eq!(
        db_message(&error),
        format!("lock timeout expired while waiting for {append_name}")
    );
    let position: Option<i64> = waiter
        .query_one(
            "SELECT biomero.max_tracking_id($1, $2)",
            &[&follower, &other_upstream],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        position, None,
        "a position is ahead of the work it came with"
    );

    // A cancel (pg_cancel_backend) of a claim wait: 57014 naming the claim.
    waiter.batch_execute("SET lock_timeout = 0").unwrap();
    let waiter_pid = backend_pid(&mut waiter);
    let canceled = {
        let (follower, upstream) = (follower.clone(), upstream.clone());
        thread::spawn(move || {
            waiter
                .query_one("SELECT biomero.claim($1, $2)", &[&follower, &upstream])
                .map(|_| ())
                .map_err(|error| (error.code().cloned(), db_message(&error)))
        })
    };
    let mut observer = connect();
    wait_until_blocked(&mut observer, waiter_pid, CLAIM_LOCK);
    observer
        .execute("SELECT pg_cancel_backend($1)", &[&waiter_pid])
        .unwrap();
    let (code, message) = canceled.join().unwrap().unwrap_err();
    assert_eq!(code, Some(SqlState::QUERY_CANCELED));
    assert_eq!(
        message,
        format!("canceling statement while waiting for {claim_name}")
    );

    // Nothing of the cut attempts is stored; the holder commits; the next ones proceed.
    assert_eq!(stored_ids(&mut observer, &other), Vec::<i64>::new());
    let mut next = connect();
    next.batch_execute("SET lock_timeout = '1s'").unwrap();
    assert_eq!(
        Batch::new(&other, 1).append(&mut next).unwrap(),
        vec![1],
        "the rolled-back transaction's ids go to the next writer"
    );
    holder.batch_execute("COMMIT").unwrap();
    let recorded: Option<Vec<i64>> = next
        .query_one(
            "SELECT biomero.record_events($1, ARRAY[$2::text::uuid], ARRAY[0]::int8[], \
             ARRAY['biomero.test:Other'], ARRAY[''::bytea], $3, 5)",
            &[&follower, &random_uuid(), &other_upstream],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, Some(vec![2]));
    eprintln!(
        "timeouts: lock_timeout and statement_timeout on a claim, a cancel of a claim wait, \
         lock_timeout on a follower commit's append lock: all named their lock, none left a trace"
    );
    check_next_sessions_proceed(&[other.clone(), follower.clone()], &follower, &upstream);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum LoadFault {
    /// `pg_ctl -m immediate restart`: every process ends without a checkpoint.
    ImmediateRestart,
    /// `kill -9` of one writer's backend: the postmaster restarts all backends.
    SigkillWriter,
}

const LOAD_WRITERS: usize = 16;
const LOAD_FOLLOWERS: usize = 4;

/// 16 writers append batches of 1-4 events (a fifth of them rolled back on purpose) to two
/// applications while 4 processes of one follower track the first; halfway, `fault`.
fn load_with_fault(fault: LoadFault) {
    let _serial = serial();
    let applications = [unique_name("LoadA"), unique_name("LoadB")];
    let follower = unique_name("LoadFollower");
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let pids: Arc<Vec<AtomicI32>> =
        Arc::new((0..LOAD_WRITERS).map(|_| AtomicI32::new(0)).collect());
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let losses = Arc::new(AtomicUsize::new(0));
    connect_when_ready(READY);

    let writers: Vec<_> = (0..LOAD_WRITERS)
        .map(|writer| {
            let application = applications[writer % 2].clone();
            let (stop, committed, pids) = (stop.clone(), committed.clone(), pids.clone());
            let (unexpected, losses) = (unexpected.clone(), losses.clone());
            thread::spawn(move || {
                let mut rng = rand::thread_rng();
                let mut attempts = Vec::new();
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::SeqCst) {
                    let session = match client.as_mut() {
                        Some(session) if !session.is_closed() => session,
                        _ => {
                            client = try_session();
                            match client.as_mut() {
                                Some(session) => {
                                    pids[writer].store(backend_pid(session), Ordering::SeqCst);
                                    session
                                }
                                None => {
                                    thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            }
                        }
                    };
                    let batch = Batch::new(&application, rng.gen_range(1..=4));
                    let roll_back = rng.gen_bool(0.2);
                    let mut attempt = Attempt {
                        batch,
                        ids: None,
                        outcome: Outcome::NotCommitted,
                    };
                    let result = session.batch_execute("BEGIN").and_then(|_| {
                        attempt.ids = Some(attempt.batch.append(session)?);
                        if roll_back {
                            return session.batch_execute("ROLLBACK");
                        }
                        attempt.outcome = Outcome::Unknown;
                        session.batch_execute("COMMIT")?;
                        attempt.outcome = Outcome::Committed;
                        committed.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    });
                    if let Err(error) = result {
                        if is_connection_loss(&error) {
                            losses.fetch_add(1, Ordering::SeqCst);
                        } else {
                            unexpected.lock().unwrap().push(format!(
                                "writer: {:?} {}",
                                error.code(),
                                db_message(&error)
                            ));
                        }
                        let _ = session.batch_execute("ROLLBACK");
                    }
                    attempts.push(attempt);
                }
                attempts
            })
        })
        .collect();

    let followers: Vec<_> = (0..LOAD_FOLLOWERS)
        .map(|_| {
            let (upstream, follower) = (applications[0].clone(), follower.clone());
            let (stop, unexpected, losses) = (stop.clone(), unexpected.clone(), losses.clone());
            thread::spawn(move || {
                let mut processed = 0;
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::SeqCst) {
                    let session = match client.as_mut() {
                        Some(session) if !session.is_closed() => session,
                        _ => {
                            client = try_session();
                            if client.is_none() {
                                thread::sleep(Duration::from_millis(20));
                            }
                            continue;
                        }
                    };
                    match follower_step(session, &follower, &upstream, 10) {
                        Ok(0) => thread::sleep(Duration::from_millis(5)),
                        Ok(count) => processed += count,
                        Err(error) if is_connection_loss(&error) => {
                            losses.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => unexpected.lock().unwrap().push(format!(
                            "follower: {:?} {}",
                            error.code(),
                            db_message(&error)
                        )),
                    }
                }
                processed
            })
        })
        .collect();

    let started = Instant::now();
    let wait_for = |count: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "no progress {what}");
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(300, "before the fault");
    thread::sleep(Duration::from_millis(500));
    let before_fault = committed.load(Ordering::SeqCst);
    let fault_at = Instant::now();
    match fault {
        LoadFault::ImmediateRestart => {
            let data = test_server().data_directory;
            must_run_as_server_owner(
                &format!("{}/pg_ctl", pg_bin()),
                &[
                    "restart",
                    "-D",
                    &data,
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    &format!("{data}/restart.log"),
                ],
            );
        }
        LoadFault::SigkillWriter => {
            let victim = pids[rand::thread_rng().gen_range(0..LOAD_WRITERS)].load(Ordering::SeqCst);
            kill(victim, Kill::Sigkill);
        }
    }
    drop(connect_when_ready(READY));
    let recovered_in = fault_at.elapsed();
    // The writers come back and go on.
    wait_for(
        committed.load(Ordering::SeqCst) + 300,
        "after the server came back",
    );
    stop.store(true, Ordering::SeqCst);
    let attempts: Vec<Attempt> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    let processed: usize = followers.into_iter().map(|f| f.join().unwrap()).sum();
    let after_fault = committed.load(Ordering::SeqCst) - before_fault;
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    assert!(
        losses.load(Ordering::SeqCst) > 0,
        "the fault must have cut some sessions"
    );

    let mut client = connect_when_ready(READY);
    let tally = check_attempts(&mut client, &applications, &attempts);
    let position = check_follower(&mut client, &follower, &applications[0]);
    let (applications_stored, events_stored) = assert_store_invariants(&mut client);
    eprintln!(
        "{fault:?} during a load of {LOAD_WRITERS} writers and {LOAD_FOLLOWERS} follower \
         processes: {} transactions ({} committed, {} before the fault, {after_fault} after it), \
         {tally:?}, {} sessions cut, back in {recovered_in:.1?}, follower processed {processed} \
         (position {position}), {events_stored} events in {applications_stored} applications \
         on the server, {:.1?}",
        attempts.len(),
        tally.committed,
        before_fault,
        losses.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert_eq!(tally.committed, committed.load(Ordering::SeqCst));
    check_next_sessions_proceed(&applications, &follower, &applications[0]);
}

#[test]
fn fault_immediate_restart_during_a_16_writer_load() {
    load_with_fault(LoadFault::ImmediateRestart);
}

#[test]
fn fault_sigkilled_writer_during_a_16_writer_load() {
    load_with_fault(LoadFault::SigkillWriter);
}
