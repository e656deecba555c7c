//! The randomized checker: many sessions run random operations against a primary and a hot
//! standby while faults are injected, every operation and its outcome is recorded, and the
//! recorded history is checked against what the extension promises:
//!
//! * no reader, on either server and at any isolation level, skips or repeats an id: every
//!   page it got holds exactly the ids committed (in the end) between where it started and
//!   the last one it got;
//! * no follower processes a notification twice or leaves a committed one unprocessed;
//! * every acknowledged commit is stored, with its state, and readable on both servers, and
//!   nothing is stored that no one wrote;
//! * every committed id is announced (`NOTIFY biomero_events`) within a bound of its commit,
//!   with a well-formed payload, except while listeners cannot be reached (a restart) or no
//!   worker slot is free;
//! * only documented SQLSTATEs, each where the README says it can occur.
//!
//! Operations: appends in both modes (single events and batches, in several applications,
//! first uses of names), savepoints rolled back, commits and rollbacks, `PREPARE` with
//! `COMMIT PREPARED` or `ROLLBACK PREPARED` from another session, mode switches (alone,
//! rolled back, twice in a row, inside writing transactions, on empty applications), imports
//! (good, malformed, into applications that refuse them), restrictions and what a non-member
//! may not do, administrative resets, claims and positions of competing followers, readers at
//! every isolation level on both servers, and a look at the operator views. Faults:
//! terminated and cancelled sessions, a terminated horizon publisher, worker slots used up,
//! databases created from a template and dropped under the publisher, immediate restarts of
//! the primary.
//!
//! Before its findings count, a run shows that it sees the races it is looking for: a
//! control reader that reads the table without the extension's bound skips ids, and a
//! control follower that tracks its position the client-side way processes notifications
//! twice.
//!
//!   CHECK_SEEDS=1,2,3   the seeds to run (default: one random seed, printed)
//!   CHECK_SECONDS=40    how long each seed's load runs
//!
//! `scripts/check.sh` runs long checks.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::*;
use common::*;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const DATABASE: &str = "checked";
/// Upstream applications; the admin switches the first three between the modes, the last
/// stays concurrent (the control reader tails it).
const APPS: [&str; 4] = ["App0", "App1", "App2", "App3"];
/// Claiming followers and their upstreams, and how many processes each runs.
const FOLLOWERS: [(&str, &str, usize); 2] = [("Follower0", "App0", 3), ("Follower1", "App1", 2)];
/// The control follower (client-side tracking, no claim) and its upstream.
const CONTROL_FOLLOWER: (&str, &str) = ("Unclaimed", "App3");
const WRITERS: usize = 6;
/// How long after its commit an id must be announced.
const WAKE_UP_BOUND: f64 = 10.0;
/// How long after a fault a session may see its connection lost or its statement cancelled.
const FAULT_GRACE: f64 = 15.0;

// ---- the history ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    Primary,
    Standby,
}

/// How an appending transaction ended, as its client knows it.
#[derive(Clone, Debug)]
enum Outcome {
    Committed,
    RolledBack,
    /// The commit's answer was lost (the connection broke): stored or not.
    Uncertain,
    /// Prepared under this gid; the resolver records how it ended.
    Prepared(String),
}

#[derive(Clone, Debug)]
struct Append {
    app: String,
    ids: Vec<i64>,
    states: Vec<Vec<u8>>,
    outcome: Outcome,
    /// When its commit was acknowledged (seconds since the start).
    at: f64,
}

#[derive(Clone, Debug)]
struct Read {
    server: Server,
    reader: String,
    app: String,
    after: i64,
    ids: Vec<i64>,
    control: bool,
}

#[derive(Clone, Debug)]
struct Wake {
    at: f64,
    app: String,
    first: i64,
    last: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    Terminate,
    Cancel,
    TerminatePublisher,
    ExhaustWorkers,
    DatabaseCycle,
    Restart,
}

#[derive(Clone, Debug)]
struct Fault {
    kind: FaultKind,
    from: f64,
    until: f64,
}

/// What every thread shares while a seed runs.
struct Run {
    seed: u64,
    started: Instant,
    primary: u16,
    standby: u16,
    stop: AtomicBool,
    /// Set once the last commits had time to be announced: the listener stops.
    quiet: AtomicBool,
    listened_until: Mutex<f64>,
    faults: Mutex<Vec<Fault>>,
    violations: Mutex<Vec<(String, String)>>,
    prepared: Mutex<Vec<(String, f64)>>,
    resolved: Mutex<HashMap<String, (bool, f64)>>,
    fresh: Mutex<Vec<String>>,
    restriction_changes: Mutex<Vec<f64>>,
    restricted: Mutex<BTreeSet<String>>,
    next: AtomicU64,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Mode switches and faults as they happened, for the history a failing seed leaves.
    timeline: Mutex<Vec<(f64, String)>>,
}

impl Run {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn note(&self, what: String) {
        let at = self.now();
        self.timeline.lock().unwrap().push((at, what));
    }

    fn count(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }

    fn violation(&self, category: &str, detail: String) {
        self.violations
            .lock()
            .unwrap()
            .push((category.to_string(), detail));
    }

    fn unique(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}_{}",
            self.seed % 100_000,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Whether a fault of one of `kinds` was in progress or ended less than `grace` seconds
    /// before `at`.
    fn fault_near(&self, at: f64, kinds: &[FaultKind], grace: f64) -> bool {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .any(|f| kinds.contains(&f.kind) && f.from - 1.0 <= at && at <= f.until + grace)
    }

    fn in_restart(&self) -> bool {
        let now = self.now();
        self.fault_near(now, &[FaultKind::Restart], 0.0)
    }

    fn connect(&self, server: Server, name: &str) -> Client {
        let port = match server {
            Server::Primary => self.primary,
            Server::Standby => self.standby,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let connected = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user("postgres")
                .dbname(DATABASE)
                .application_name(&format!("checker-{name}"))
                .connect_timeout(Duration::from_secs(5))
                .connect(postgres::NoTls);
            match connected {
                Ok(mut client) => {
                    if client
                        .batch_execute(
                            "SET lock_timeout = '2s'; SET idle_in_transaction_session_timeout = 0",
                        )
                        .is_ok()
                    {
                        return client;
                    }
                }
                Err(error) if Instant::now() > deadline => {
                    panic!("checker-{name}: no session within 120 s: {error}")
                }
                Err(_) => {}
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---- errors --------------------------------------------------------------------------------

/// What a failed statement was doing, for the SQLSTATEs it may end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doing {
    Append,
    Commit,
    Prepare,
    Switch,
    Import,
    MalformedImport,
    Conflict,
    Restricted,
    Follow,
    Read,
    Admin,
}

fn is_connection_loss(error: &postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// Whether `error` is one the README documents for what the statement was doing; a
/// violation is recorded otherwise. Retryable ones need the caller to roll back.
fn check_error(run: &Run, doing: Doing, serializable: bool, error: &postgres::Error) {
    let at = run.now();
    if is_connection_loss(error) {
        if !run.fault_near(
            at,
            &[
                FaultKind::Terminate,
                FaultKind::Restart,
                FaultKind::TerminatePublisher,
            ],
            FAULT_GRACE,
        ) {
            run.violation(
                "connection lost without a fault",
                format!("{doing:?}: {}", describe(error)),
            );
        }
        return;
    }
    let code = error.code().map(|code| code.code()).unwrap_or("-");
    let message = db_message(error);
    let documented = match code {
        // Our waits cut by lock_timeout (2 s) and PostgreSQL's own lock waits.
        "55P03" => true,
        "57014" => run.fault_near(at, &[FaultKind::Cancel], 5.0),
        // Ours end so; PostgreSQL's own SSI failures under SERIALIZABLE.
        "40001" => {
            message.ends_with("retry the transaction")
                || (serializable
                    && message
                        .starts_with("could not serialize access due to read/write dependencies"))
        }
        "23505" => doing == Doing::Conflict && message.contains("already has version"),
        "0A000" => doing == Doing::Prepare && message.starts_with("cannot PREPARE"),
        "42501" => doing == Doing::Restricted,
        "22023" => doing == Doing::MalformedImport,
        "55000" | "23000" => doing == Doing::Import,
        "25P02" => true, // a statement after an earlier error in the same transaction
        _ => false,
    };
    if !documented {
        run.violation(
            "undocumented error",
            format!("{doing:?}: {code}: {message}"),
        );
    }
}

// ---- writers -------------------------------------------------------------------------------

struct Writer<'a> {
    run: &'a Run,
    index: usize,
    rng: StdRng,
    client: Client,
    sequence: u64,
    appends: Vec<Append>,
    /// (application, aggregate) of events known committed: a second version 0 conflicts.
    committed_aggregates: Vec<(String, String)>,
}

fn isolation_name(rng: &mut StdRng) -> (&'static str, bool) {
    match rng.gen_range(0..20) {
        0..=13 => ("READ COMMITTED", false),
        14..=16 => ("REPEATABLE READ", false),
        _ => ("SERIALIZABLE", true),
    }
}

impl Writer<'_> {
    fn reconnect(&mut self) {
        self.client = self
            .run
            .connect(Server::Primary, &format!("writer-{}", self.index));
    }

    fn state(&mut self) -> Vec<u8> {
        self.sequence += 1;
        let mut state = (self.index as u16).to_be_bytes().to_vec();
        state.extend_from_slice(&self.sequence.to_be_bytes());
        state
    }

    fn pick_app(&mut self) -> String {
        let fresh = self.run.fresh.lock().unwrap().clone();
        if !fresh.is_empty() && self.rng.gen_bool(0.08) {
            return fresh[self.rng.gen_range(0..fresh.len())].clone();
        }
        if self.rng.gen_bool(0.02) {
            let name = self.run.unique("Fresh");
            self.run.fresh.lock().unwrap().push(name.clone());
            return name;
        }
        APPS[self.rng.gen_range(0..APPS.len())].to_string()
    }

    /// One transaction: its appends are recorded with how it ended.
    fn transaction(&mut self) {
        let run = self.run;
        let (isolation, serializable) = isolation_name(&mut self.rng);
        let ending = match self.rng.gen_range(0..100) {
            0..=74 => "commit",
            75..=89 => "rollback",
            _ => "prepare",
        };
        let mut apps: Vec<String> = (0..self.rng.gen_range(1..=2))
            .map(|_| self.pick_app())
            .collect();
        if ending == "prepare" && self.rng.gen_bool(0.5) {
            // A first use of a name in a transaction that may be rolled back from elsewhere.
            let name = run.unique("Prepared");
            run.fresh.lock().unwrap().push(name.clone());
            apps.push(name);
        }
        // The documented lock order between applications: by name.
        apps.sort();
        apps.dedup();
        let mut begin = format!("BEGIN ISOLATION LEVEL {isolation}");
        if ending == "prepare" {
            // PostgreSQL cannot prepare a transaction that sent NOTIFY.
            begin.push_str("; SET LOCAL biomero.notify = off");
        }
        if let Err(error) = self.client.batch_execute(&begin) {
            check_error(run, Doing::Append, serializable, &error);
            self.reconnect();
            return;
        }
        let mut pending: Vec<Append> = Vec::new();
        let result = (|| -> Result<(), (Doing, postgres::Error)> {
            if self.rng.gen_bool(0.03) {
                // A switch inside a writing transaction: its appends go the serialized way.
                let mode = if self.rng.gen_bool(0.5) {
                    "concurrent"
                } else {
                    "serialized"
                };
                // The switch takes the application's append lock first: the transaction
                // appends to it alone, so that its locks stay in one order.
                let app = APPS[self.rng.gen_range(0..3)];
                self.client
                    .query_one("SELECT biomero.set_append_mode($1, $2)", &[&app, &mode])
                    .map_err(|e| (Doing::Switch, e))?;
                run.count("switches inside writing transactions");
                run.note(format!(
                    "writer: {app} to {mode} inside a writing transaction"
                ));
                apps = vec![app.to_string()];
            }
            for app in apps.clone() {
                for _ in 0..self.rng.gen_range(1..=2) {
                    let savepoint = self.rng.gen_bool(0.1);
                    if savepoint {
                        self.client
                            .batch_execute("SAVEPOINT s")
                            .map_err(|e| (Doing::Append, e))?;
                    }
                    let count = self.rng.gen_range(1..=4usize);
                    let states: Vec<Vec<u8>> = (0..count).map(|_| self.state()).collect();
                    let aggregates: Vec<String> = (0..count).map(|_| random_uuid()).collect();
                    let ids: Vec<i64> = if count == 1 {
                        let row = self
                            .client
                            .query_one(
                                "SELECT biomero.record_event($1, $2::text::uuid, 0, 't', $3)",
                                &[&app, &aggregates[0], &states[0]],
                            )
                            .map_err(|e| (Doing::Append, e))?;
                        vec![row.get(0)]
                    } else {
                        let versions = vec![0i64; count];
                        let topics = vec!["t"; count];
                        let row = self
                            .client
                            .query_one(
                                "SELECT biomero.record_events($1, $2::text[]::uuid[], $3, $4, \
                                 $5)",
                                &[&app, &aggregates, &versions, &topics, &states],
                            )
                            .map_err(|e| (Doing::Append, e))?;
                        row.get(0)
                    };
                    run.count("appends");
                    if savepoint {
                        self.client
                            .batch_execute("ROLLBACK TO SAVEPOINT s")
                            .map_err(|e| (Doing::Append, e))?;
                        run.count("appends rolled back to a savepoint");
                    } else {
                        for aggregate in aggregates {
                            self.committed_aggregates.push((app.clone(), aggregate));
                        }
                        pending.push(Append {
                            app: app.clone(),
                            ids,
                            states,
                            outcome: Outcome::RolledBack,
                            at: 0.0,
                        });
                    }
                    if self.rng.gen_bool(0.3) {
                        thread::sleep(Duration::from_millis(self.rng.gen_range(0..10)));
                    }
                }
            }
            // A real conflict: version 0 of an aggregate already stored, in an application
            // this transaction already appended to (its lock is held: the order stays).
            let known = self.committed_aggregates.len().saturating_sub(16);
            let candidates: Vec<(String, String)> = self.committed_aggregates[..known]
                .iter()
                .filter(|(app, _)| apps.contains(app))
                .cloned()
                .collect();
            if self.rng.gen_bool(0.05) && !candidates.is_empty() {
                let (app, aggregate) = candidates[self.rng.gen_range(0..candidates.len())].clone();
                self.client
                    .batch_execute("SAVEPOINT c")
                    .map_err(|e| (Doing::Append, e))?;
                match self.client.query_one(
                    "SELECT biomero.record_event($1, $2::text::uuid, 0, 't', '')",
                    &[&app, &aggregate],
                ) {
                    Ok(_) => run.violation(
                        "no conflict",
                        format!("version 0 of {aggregate} appended twice to {app}"),
                    ),
                    Err(error) => {
                        check_error(run, Doing::Conflict, serializable, &error);
                        if is_connection_loss(&error) {
                            return Err((Doing::Conflict, error));
                        }
                        run.count("version conflicts");
                    }
                }
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT c")
                    .map_err(|e| (Doing::Append, e))?;
            }
            Ok(())
        })();
        // Known committed only from here on.
        let known_before = self
            .committed_aggregates
            .len()
            .saturating_sub(pending.iter().map(|a| a.ids.len()).sum());
        if let Err((doing, error)) = result {
            check_error(run, doing, serializable, &error);
            self.committed_aggregates.truncate(known_before);
            if is_connection_loss(&error) {
                // The transaction is gone with its session.
                self.reconnect();
            } else if self.client.batch_execute("ROLLBACK").is_err() {
                self.reconnect();
            }
            return;
        }
        let outcome = match ending {
            "commit" => match self.client.batch_execute("COMMIT") {
                Ok(()) => Outcome::Committed,
                Err(error) => {
                    check_error(run, Doing::Commit, serializable, &error);
                    let lost = is_connection_loss(&error);
                    if lost {
                        self.reconnect();
                        Outcome::Uncertain
                    } else {
                        Outcome::RolledBack
                    }
                }
            },
            "rollback" => {
                if self.client.batch_execute("ROLLBACK").is_err() {
                    self.reconnect();
                }
                Outcome::RolledBack
            }
            _ => {
                let gid = run.unique("gid");
                match self
                    .client
                    .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
                {
                    Ok(()) => {
                        run.prepared.lock().unwrap().push((gid.clone(), run.now()));
                        run.count("prepared transactions");
                        Outcome::Prepared(gid)
                    }
                    Err(error) => {
                        check_error(run, Doing::Prepare, serializable, &error);
                        if is_connection_loss(&error) {
                            self.reconnect();
                        }
                        Outcome::RolledBack
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::Committed) {
            self.committed_aggregates.truncate(known_before);
        }
        let at = run.now();
        for mut append in pending {
            append.outcome = outcome.clone();
            append.at = at;
            self.appends.push(append);
        }
        run.count("writing transactions");
    }
}

fn writer(run: &Run, index: usize) -> Vec<Append> {
    let mut writer = Writer {
        run,
        index,
        rng: StdRng::seed_from_u64(run.seed ^ (0x100 + index as u64)),
        client: run.connect(Server::Primary, &format!("writer-{index}")),
        sequence: 0,
        appends: Vec::new(),
        committed_aggregates: Vec::new(),
    };
    while !run.stopped() {
        writer.transaction();
    }
    writer.appends
}

// ---- prepared transactions -----------------------------------------------------------------

/// Ends prepared transactions from another session, each after a random delay; at the end
/// (`drain`) every one left.
fn resolve(run: &Run, client: &mut Client, rng: &mut StdRng, drain: bool) {
    let now = run.now();
    let due: Vec<String> = {
        let mut prepared = run.prepared.lock().unwrap();
        let (due, wait): (Vec<_>, Vec<_>) = prepared
            .drain(..)
            .partition(|(_, at)| drain || now - at > rng.gen_range(0.2..2.0));
        *prepared = wait;
        due.into_iter().map(|(gid, _)| gid).collect()
    };
    for gid in due {
        let commit = rng.gen_bool(0.7);
        let statement = if commit {
            format!("COMMIT PREPARED '{gid}'")
        } else {
            format!("ROLLBACK PREPARED '{gid}'")
        };
        match client.batch_execute(&statement) {
            Ok(()) => {
                run.resolved
                    .lock()
                    .unwrap()
                    .insert(gid, (commit, run.now()));
                run.count(if commit {
                    "prepared and committed"
                } else {
                    "prepared and rolled back"
                });
            }
            Err(error) => {
                check_error(run, Doing::Commit, false, &error);
                // Still prepared (it survives a restart): tried again.
                run.prepared.lock().unwrap().push((gid, 0.0));
                *client = run.connect(Server::Primary, "resolver");
            }
        }
    }
}

fn resolver(run: &Run) {
    let mut rng = StdRng::seed_from_u64(run.seed ^ 0x200);
    let mut client = run.connect(Server::Primary, "resolver");
    while !run.stopped() {
        resolve(run, &mut client, &mut rng, false);
        thread::sleep(Duration::from_millis(100));
    }
}

// ---- followers -----------------------------------------------------------------------------

/// One step of a claiming follower's process: claim, read, write the read model, record the
/// position, and commit, roll back or prepare.
fn follow_step(run: &Run, client: &mut Client, rng: &mut StdRng, follower: &str, upstream: &str) {
    let (isolation, serializable) = isolation_name(rng);
    let wait = rng.gen_bool(0.5);
    let limit = rng.gen_range(1..=20i64);
    let ending = match rng.gen_range(0..100) {
        0..=84 => "commit",
        85..=94 => "rollback",
        _ => "prepare",
    };
    let step = (|| -> Result<bool, postgres::Error> {
        client.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}"))?;
        let position: Option<i64> = client
            .query_one(
                "SELECT biomero.claim($1, $2, wait => $3)",
                &[&follower, &upstream, &wait],
            )?
            .get(0);
        let Some(position) = position else {
            client.batch_execute("ROLLBACK")?;
            return Ok(false);
        };
        let ids: Vec<i64> = client
            .query(PAGE, &[&upstream, &position, &limit])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if let Some(last) = ids.last() {
            client.execute(
                "INSERT INTO checker_processed SELECT $1, $2, unnest($3::int8[])",
                &[&follower, &upstream, &ids],
            )?;
            let advanced: bool = client
                .query_one(
                    "SELECT biomero.record_tracking($1, $2, $3)",
                    &[&follower, &upstream, last],
                )?
                .get(0);
            if !advanced {
                run.violation(
                    "claimed position did not advance",
                    format!("{follower} on {upstream} at {last} after claiming {position}"),
                );
            }
        }
        match ending {
            "commit" => client.batch_execute("COMMIT")?,
            "rollback" => client.batch_execute("ROLLBACK")?,
            _ => {
                let gid = run.unique("fgid");
                client.batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))?;
                run.prepared.lock().unwrap().push((gid, run.now()));
                run.count("prepared follower steps");
            }
        }
        Ok(true)
    })();
    match step {
        Ok(true) => run.count("follower steps"),
        Ok(false) => run.count("claims found taken"),
        Err(error) => {
            check_error(run, Doing::Follow, serializable, &error);
            if is_connection_loss(&error) || client.batch_execute("ROLLBACK").is_err() {
                *client = run.connect(Server::Primary, &format!("follower-{follower}"));
            }
        }
    }
}

/// The client-side way (read the position, process, record it), without a claim: the
/// control that shows the checker sees notifications processed twice.
fn control_follow_step(run: &Run, client: &mut Client) {
    let (follower, upstream) = CONTROL_FOLLOWER;
    let step = (|| -> Result<(), postgres::Error> {
        client.batch_execute("BEGIN")?;
        let position: i64 = client
            .query_one(
                "SELECT coalesce(biomero.max_tracking_id($1, $2), 0)",
                &[&follower, &upstream],
            )?
            .get(0);
        let ids: Vec<i64> = client
            .query(PAGE, &[&upstream, &position, &10i64])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if let Some(last) = ids.last() {
            client.execute(
                "INSERT INTO checker_processed SELECT $1, $2, unnest($3::int8[])",
                &[&follower, &upstream, &ids],
            )?;
            thread::sleep(Duration::from_millis(2));
            client.query_one(
                "SELECT biomero.record_tracking($1, $2, $3)",
                &[&follower, &upstream, last],
            )?;
        }
        client.batch_execute("COMMIT")
    })();
    if let Err(error) = step {
        check_error(run, Doing::Follow, false, &error);
        if is_connection_loss(&error) || client.batch_execute("ROLLBACK").is_err() {
            *client = run.connect(Server::Primary, "control-follower");
        }
    }
}

fn follower_process(run: &Run, follower: &'static str, upstream: &'static str, index: usize) {
    let mut rng = StdRng::seed_from_u64(run.seed ^ (0x300 + index as u64));
    let mut client = run.connect(Server::Primary, &format!("follower-{follower}"));
    while !run.stopped() {
        follow_step(run, &mut client, &mut rng, follower, upstream);
        if rng.gen_bool(0.2) {
            thread::sleep(Duration::from_millis(rng.gen_range(0..20)));
        }
    }
}

fn control_follower(run: &Run) {
    let mut client = run.connect(Server::Primary, "control-follower");
    while !run.stopped() {
        control_follow_step(run, &mut client);
    }
}

// ---- readers -------------------------------------------------------------------------------

fn reader(run: &Run, server: Server, index: usize) -> Vec<Read> {
    let mut rng = StdRng::seed_from_u64(run.seed ^ (0x400 + index as u64));
    let name = format!("reader-{server:?}-{index}");
    let mut client = run.connect(server, &name);
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut reads = Vec::new();
    let levels: &[&str] = match server {
        // A hot standby has no SERIALIZABLE.
        Server::Standby => &["READ COMMITTED", "REPEATABLE READ"],
        Server::Primary => &["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"],
    };
    while !run.stopped() {
        let app = APPS[rng.gen_range(0..APPS.len())];
        let isolation = levels[rng.gen_range(0..levels.len())];
        let after = *last.get(app).unwrap_or(&0);
        let read = (|| -> Result<Vec<i64>, postgres::Error> {
            client.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation} READ ONLY"))?;
            let ids = client
                .query(PAGE, &[&app, &after, &50i64])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            client.batch_execute("COMMIT")?;
            Ok(ids)
        })();
        match read {
            Ok(ids) => {
                if let Some(&end) = ids.last() {
                    last.insert(app, end);
                }
                run.count(match server {
                    Server::Primary => "reads on the primary",
                    Server::Standby => "reads on the standby",
                });
                reads.push(Read {
                    server,
                    reader: name.clone(),
                    app: app.to_string(),
                    after,
                    ids,
                    control: false,
                });
            }
            Err(error) => {
                check_error(run, Doing::Read, isolation == "SERIALIZABLE", &error);
                if is_connection_loss(&error) || client.batch_execute("ROLLBACK").is_err() {
                    client = run.connect(server, &name);
                }
            }
        }
        thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
    }
    reads
}

/// Reads the table directly, without the extension's bound: the control that shows the
/// checker sees skips.
fn control_reader(run: &Run) -> Vec<Read> {
    let app = CONTROL_FOLLOWER.1;
    let mut client = run.connect(Server::Primary, "control-reader");
    let mut after = 0;
    let mut reads = Vec::new();
    while !run.stopped() {
        match client.query(
            "SELECT notification_id FROM biomero.events WHERE application_name = $1 \
             AND notification_id > $2 ORDER BY notification_id LIMIT 50",
            &[&app, &after],
        ) {
            Ok(rows) => {
                let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
                let start = after;
                if let Some(&end) = ids.last() {
                    after = end;
                }
                reads.push(Read {
                    server: Server::Primary,
                    reader: "control".into(),
                    app: app.into(),
                    after: start,
                    ids,
                    control: true,
                });
            }
            Err(_) => client = run.connect(Server::Primary, "control-reader"),
        }
        thread::sleep(Duration::from_millis(1));
    }
    reads
}

// ---- the listener --------------------------------------------------------------------------

fn listening(run: &Run) -> Client {
    loop {
        let mut client = run.connect(Server::Primary, "listener");
        if client.batch_execute("LISTEN biomero_events").is_ok() {
            return client;
        }
    }
}

fn listener(run: &Run) -> Vec<Wake> {
    let mut wakes = Vec::new();
    let mut client = listening(run);
    while !run.quiet.load(Ordering::Relaxed) {
        let mut lost = false;
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(Duration::from_millis(200));
            loop {
                match iter.next() {
                    Ok(Some(notification)) => {
                        let payload = notification.payload();
                        let parsed = serde_json::from_str::<serde_json::Value>(payload).ok();
                        let fields = parsed.as_ref().and_then(|value| {
                            Some((
                                value["application_name"].as_str()?.to_string(),
                                value["first"].as_i64()?,
                                value["last"].as_i64()?,
                            ))
                        });
                        match fields {
                            Some((app, first, last)) if 1 <= first && first <= last => {
                                wakes.push(Wake {
                                    at: run.now(),
                                    app,
                                    first,
                                    last,
                                })
                            }
                            _ => run.violation("malformed wake-up", payload.to_string()),
                        }
                        run.count("wake-ups received");
                    }
                    Ok(None) => break,
                    Err(_) => {
                        lost = true;
                        break;
                    }
                }
            }
        }
        if lost || client.is_closed() {
            client = listening(run);
        }
    }
    *run.listened_until.lock().unwrap() = run.now();
    wakes
}

// ---- the administrator ---------------------------------------------------------------------

fn admin(run: &Run) {
    let mut rng = StdRng::seed_from_u64(run.seed ^ 0x500);
    let mut client = run.connect(Server::Primary, "admin");
    let mut outsider = run.connect(Server::Primary, "outsider");
    outsider.batch_execute("SET ROLE checker_outsider").unwrap();
    while !run.stopped() {
        thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        let choice = rng.gen_range(0..100);
        let outcome: Result<(), (Doing, postgres::Error)> = (|| match choice {
            0..=29 => {
                let app = APPS[rng.gen_range(0..3)];
                let mode = if rng.gen_bool(0.5) {
                    "concurrent"
                } else {
                    "serialized"
                };
                client
                    .query_one("SELECT biomero.set_append_mode($1, $2)", &[&app, &mode])
                    .map_err(|e| (Doing::Switch, e))?;
                run.count("mode switches");
                run.note(format!("admin: {app} to {mode}"));
                Ok(())
            }
            30..=39 => {
                // Twice in a row, while ids may be in flight.
                let app = APPS[rng.gen_range(0..3)];
                for mode in ["serialized", "concurrent"] {
                    client
                        .query_one("SELECT biomero.set_append_mode($1, $2)", &[&app, &mode])
                        .map_err(|e| (Doing::Switch, e))?;
                    run.note(format!("admin: {app} to {mode}"));
                }
                run.count("mode switches");
                run.count("mode switches");
                Ok(())
            }
            40..=44 => {
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT biomero.set_append_mode('{}', 'concurrent'); ROLLBACK",
                        APPS[rng.gen_range(0..3)]
                    ))
                    .map_err(|e| (Doing::Switch, e))?;
                run.count("mode switches rolled back");
                Ok(())
            }
            45..=49 => {
                // An application with no events yet switched to concurrent (no wake-up for
                // no ids).
                // A few of them: each takes an entry of shared memory.
                let app = format!("Empty{}", rng.gen_range(0..6));
                client
                    .query_one("SELECT biomero.set_append_mode($1, 'concurrent')", &[&app])
                    .map_err(|e| (Doing::Switch, e))?;
                run.count("empty applications switched");
                Ok(())
            }
            50..=59 => {
                let target = if rng.gen_bool(0.5) {
                    "App2"
                } else {
                    FOLLOWERS[0].0
                };
                let restrict = rng.gen_bool(0.5);
                let role: Option<&str> = restrict.then_some("checker_members");
                run.restriction_changes.lock().unwrap().push(run.now());
                client
                    .execute(
                        "SELECT biomero.restrict_application($1, $2::text::regrole)",
                        &[&target, &role],
                    )
                    .map_err(|e| (Doing::Admin, e))?;
                run.restriction_changes.lock().unwrap().push(run.now());
                let mut restricted = run.restricted.lock().unwrap();
                if restrict {
                    restricted.insert(target.to_string());
                } else {
                    restricted.remove(target);
                }
                run.count("restrictions changed");
                Ok(())
            }
            60..=69 => {
                outsider_attempts(run, &mut outsider);
                Ok(())
            }
            70..=84 => import(run, &mut client, &mut rng),
            85..=92 => {
                // An administrator's reset under the follower's claim: to where it is.
                let (follower, upstream, _) = FOLLOWERS[rng.gen_range(0..FOLLOWERS.len())];
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT biomero.claim('{follower}', '{upstream}'); \
                         SELECT biomero.reset_position('{follower}', '{upstream}', \
                             coalesce(biomero.max_tracking_id('{follower}', '{upstream}'), 0)); \
                         COMMIT"
                    ))
                    .map_err(|e| (Doing::Admin, e))?;
                run.count("administrative resets");
                Ok(())
            }
            _ => {
                let unnamed: Vec<String> = client
                    .query(
                        "SELECT format('locks: %s pid %s granted %s upstream %s', kind, pid, \
                             granted, upstream_application_name) \
                         FROM biomero.locks WHERE application_name IS NULL \
                         UNION ALL \
                         SELECT format('appends_in_flight: pid %s lowest %s', pid, lowest_id) \
                         FROM biomero.appends_in_flight WHERE application_name IS NULL",
                        &[],
                    )
                    .map_err(|e| (Doing::Admin, e))?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if !unnamed.is_empty() {
                    run.violation("operator view without a name", unnamed.join("; "));
                }
                run.count("operator views read");
                Ok(())
            }
        })();
        if let Err((doing, error)) = outcome {
            check_error(run, doing, false, &error);
            if is_connection_loss(&error) || client.batch_execute("ROLLBACK").is_err() {
                client = run.connect(Server::Primary, "admin");
            }
        }
        if outsider.is_closed() {
            outsider = run.connect(Server::Primary, "outsider");
            outsider.batch_execute("SET ROLE checker_outsider").unwrap();
        }
    }
}

/// What a role that is not a member of a restriction's role may not do: append to App2 and
/// reset Follower0's position (in a transaction rolled back, whatever happens).
fn outsider_attempts(run: &Run, outsider: &mut Client) {
    let attempts = [
        (
            "App2",
            "SELECT biomero.record_event('App2', gen_random_uuid(), 0, 't', '')".to_string(),
        ),
        (
            FOLLOWERS[0].0,
            format!(
                "SELECT biomero.reset_position('{0}', '{1}', \
                 coalesce(biomero.max_tracking_id('{0}', '{1}'), 0))",
                FOLLOWERS[0].0, FOLLOWERS[0].1
            ),
        ),
    ];
    for (target, statement) in attempts {
        let before = run.now();
        let restricted = run.restricted.lock().unwrap().contains(target);
        let result = outsider
            .batch_execute("BEGIN")
            .and_then(|()| outsider.batch_execute(&statement));
        let _ = outsider.batch_execute("ROLLBACK");
        let after = run.now();
        // A restriction changing meanwhile decides either way.
        let changing = run
            .restriction_changes
            .lock()
            .unwrap()
            .iter()
            .any(|&at| before - 1.0 <= at && at <= after + 1.0);
        match result {
            Ok(()) if restricted && !changing => run.violation(
                "restriction not applied",
                format!("a non-member ran {statement} on restricted {target}"),
            ),
            Ok(()) => {}
            Err(error) => {
                if error.code().map(|c| c.code()) == Some("42501") && !restricted && !changing {
                    run.violation(
                        "restriction applied to an unrestricted application",
                        format!("{statement}: {}", describe(&error)),
                    );
                } else {
                    check_error(run, Doing::Restricted, false, &error);
                }
            }
        }
        run.count("non-member attempts");
    }
}

/// Imports an eventsourcing-sqlalchemy events table: into a new application (its events
/// must be readable), malformed (refused with 22023), or into an application that already
/// has events (refused).
fn import(
    run: &Run,
    client: &mut Client,
    rng: &mut StdRng,
) -> Result<(), (Doing, postgres::Error)> {
    let table = run.unique("checker_source_");
    let malformed = rng.gen_bool(0.3);
    let existing = !malformed && rng.gen_bool(0.2);
    let rows = rng.gen_range(1..=30i64);
    let fail = |e| (Doing::Import, e);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint, originator_id uuid, originator_version integer, \
                                   topic text, state bytea); \
             INSERT INTO {table} SELECT i, gen_random_uuid(), 0, 'imported', '\\x01' \
             FROM generate_series(1, {rows}) AS i"
        ))
        .map_err(fail)?;
    if malformed {
        let corruption = match rng.gen_range(0..4) {
            0 => format!("INSERT INTO {table} VALUES (1, gen_random_uuid(), 0, 't', '')"),
            1 => format!("INSERT INTO {table} VALUES (NULL, gen_random_uuid(), 0, 't', '')"),
            2 => format!("UPDATE {table} SET topic = '' WHERE id = 1"),
            _ => format!("UPDATE {table} SET state = NULL WHERE id = 1"),
        };
        client.batch_execute(&corruption).map_err(fail)?;
    }
    let app = if existing {
        APPS[rng.gen_range(0..APPS.len())].to_string()
    } else {
        run.unique("Imported")
    };
    let imported = client.query_one(
        "SELECT events_imported FROM biomero.import_eventsourcing($1, $2::text::regclass)",
        &[&app, &table],
    );
    let _ = client.batch_execute(&format!("DROP TABLE {table}"));
    match imported {
        Ok(row) => {
            let count: i64 = row.get(0);
            if malformed {
                run.violation(
                    "malformed import accepted",
                    format!("{table} into {app}: {count} of {rows}+1 rows imported"),
                );
            } else if !existing {
                let readable: Vec<i64> = client
                    .query(PAGE, &[&app, &0i64, &1000i64])
                    .map_err(fail)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if count != rows || readable != (1..=rows).collect::<Vec<_>>() {
                    run.violation(
                        "import lost events",
                        format!("{app}: {count} of {rows} imported, {readable:?} readable"),
                    );
                }
            }
            run.count("imports");
            Ok(())
        }
        Err(error) => {
            let doing = if malformed {
                Doing::MalformedImport
            } else if existing {
                Doing::Import
            } else {
                Doing::Append
            };
            check_error(run, doing, false, &error);
            if is_connection_loss(&error) {
                return Err((Doing::Import, error));
            }
            run.count("imports refused");
            Ok(())
        }
    }
}

// ---- faults --------------------------------------------------------------------------------

fn faults(run: &Run, primary: &Cluster, seconds: u64) {
    let mut rng = StdRng::seed_from_u64(run.seed ^ 0x600);
    let mut client = run.connect(Server::Primary, "faults");
    // At most one immediate restart per 30 s of load, after the first quarter of the run.
    let mut restarts_left = (seconds / 30).max(1);
    let mut cycles = 0;
    let mut schedule: Vec<FaultKind> = Vec::new();
    while !run.stopped() {
        thread::sleep(Duration::from_millis(rng.gen_range(1000..3000)));
        if run.stopped() {
            break;
        }
        let from = run.now();
        // Every kind in turn, in an order of the seed's, so that a short run has each.
        if schedule.is_empty() {
            schedule = vec![
                FaultKind::Terminate,
                FaultKind::Terminate,
                FaultKind::Cancel,
                FaultKind::TerminatePublisher,
                FaultKind::ExhaustWorkers,
                FaultKind::DatabaseCycle,
                FaultKind::DatabaseCycle,
                FaultKind::Restart,
            ];
            schedule.shuffle(&mut rng);
        }
        let mut kind = schedule.pop().unwrap();
        if kind == FaultKind::Restart {
            if restarts_left == 0 || from < seconds as f64 / 4.0 {
                kind = FaultKind::Terminate;
            } else {
                restarts_left -= 1;
            }
        }
        // Recorded before the fault so that the sessions it hits know why.
        run.faults.lock().unwrap().push(Fault {
            kind,
            from,
            until: f64::INFINITY,
        });
        let done = match kind {
            FaultKind::Terminate | FaultKind::Cancel => {
                let function = if kind == FaultKind::Terminate {
                    "pg_terminate_backend"
                } else {
                    "pg_cancel_backend"
                };
                client
                    .query(
                        &format!(
                            "SELECT {function}(pid) FROM pg_stat_activity \
                             WHERE application_name ~ '^checker-(writer|follower|reader|control)' \
                             ORDER BY random() LIMIT 2"
                        ),
                        &[],
                    )
                    .map(|_| ())
            }
            FaultKind::TerminatePublisher => client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'biomero_tracking horizon publisher'",
                    &[],
                )
                .map(|_| ()),
            FaultKind::ExhaustWorkers => exhaust_workers(run, &mut client),
            FaultKind::DatabaseCycle => {
                cycles += 1;
                database_cycle(run, cycles);
                Ok(())
            }
            FaultKind::Restart => {
                primary.restart("immediate", &primary_settings());
                Ok(())
            }
        };
        if done.is_err() {
            client = run.connect(Server::Primary, "faults");
        }
        // The fault's window ends now.
        let mut faults = run.faults.lock().unwrap();
        if let Some(fault) = faults.iter_mut().rev().find(|f| f.until.is_infinite()) {
            fault.until = run.now();
        }
        drop(faults);
        run.count(match kind {
            FaultKind::Terminate => "faults: sessions terminated",
            FaultKind::Cancel => "faults: statements cancelled",
            FaultKind::TerminatePublisher => "faults: publisher terminated",
            FaultKind::ExhaustWorkers => "faults: worker slots used up",
            FaultKind::DatabaseCycle => "faults: databases copied and dropped",
            FaultKind::Restart => "faults: immediate restarts",
        });
    }
}

/// Uses up every worker slot for a few seconds (a parallel query with as many workers as it
/// can get) and terminates the publisher meanwhile: the next one cannot start until it ends.
fn exhaust_workers(run: &Run, client: &mut Client) -> Result<(), postgres::Error> {
    let port = run.primary;
    let filler = thread::spawn(move || {
        let mut session = try_connect_to_cluster(port, DATABASE).ok()?;
        session
            .batch_execute(
                "SET max_parallel_workers_per_gather = 8; SET parallel_setup_cost = 0; \
                 SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0",
            )
            .ok()?;
        session
            .query_one(
                "SELECT count(*) FROM checker_filler WHERE checker_slow(i)",
                &[],
            )
            .ok()
            .map(|_| ())
    });
    thread::sleep(Duration::from_millis(300));
    client.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'biomero_tracking horizon publisher'",
        &[],
    )?;
    let _ = filler.join();
    Ok(())
}

/// A database with concurrent appends (so a publisher runs in it), copied with CREATE
/// DATABASE … TEMPLATE and dropped without FORCE: neither may meet the publisher. Its shared
/// memory comes back for the next databases (the primary keeps room for 32 applications).
fn database_cycle(run: &Run, cycle: usize) {
    let name = format!("cycle{cycle}");
    let port = run.primary;
    let result = (|| -> Result<(), String> {
        let mut admin = try_connect_to_cluster(port, "postgres").map_err(|e| e.to_string())?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| describe(&e))?;
        {
            let mut client = try_connect_to_cluster(port, &name).map_err(|e| e.to_string())?;
            client
                .batch_execute("CREATE EXTENSION biomero_tracking")
                .map_err(|e| describe(&e))?;
            for app in 0..8 {
                client
                    .batch_execute(&format!(
                        "SELECT biomero.set_append_mode('Cycled{app}', 'concurrent'); \
                         SELECT biomero.record_event('Cycled{app}', gen_random_uuid(), 0, 't', '')"
                    ))
                    .map_err(|e| format!("{}: {}", name, describe(&e)))?;
            }
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {name}_copy TEMPLATE {name}"))
            .map_err(|e| format!("CREATE DATABASE TEMPLATE: {}", describe(&e)))?;
        for database in [format!("{name}_copy"), name.clone()] {
            admin
                .batch_execute(&format!("DROP DATABASE {database}"))
                .map_err(|e| format!("DROP DATABASE {database}: {}", describe(&e)))?;
        }
        Ok(())
    })();
    if let Err(error) = result {
        if !run.in_restart() {
            run.violation("database cycle failed", error);
        }
        // Leave nothing behind for the next cycle.
        if let Ok(mut admin) = try_connect_to_cluster(port, "postgres") {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {name}_copy WITH (FORCE); \
                 DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            ));
        }
    }
}

// ---- a run ---------------------------------------------------------------------------------

fn primary_settings() -> Vec<&'static str> {
    vec![
        "shared_preload_libraries=biomero_tracking",
        "max_prepared_transactions=50",
        "max_worker_processes=8",
        "max_parallel_workers=8",
        "biomero.max_applications=32",
        "biomero.publisher_idle_timeout=1s",
        // The standby must find the WAL it needs after the primary's immediate restarts.
        "wal_keep_size=2GB",
        "max_connections=100",
    ]
}

struct Report {
    seed: u64,
    text: String,
    violations: Vec<(String, String)>,
    control_skips: usize,
    control_duplicates: i64,
}

fn check(seed: u64, seconds: u64) -> Report {
    let settings = primary_settings();
    let primary = Cluster::start("checked", &[], &settings);
    let mut setup = primary.database_with_extension(DATABASE);
    setup
        .batch_execute(
            "CREATE TABLE checker_processed (follower text, upstream text, notification_id bigint); \
             CREATE TABLE checker_filler AS SELECT i FROM generate_series(1, 20000) AS i; \
             ALTER TABLE checker_filler SET (parallel_workers = 8); \
             CREATE FUNCTION checker_slow(i integer) RETURNS boolean LANGUAGE sql PARALLEL SAFE \
                 AS $$ SELECT pg_sleep(0.0002) IS NOT NULL $$; \
             CREATE ROLE checker_members; CREATE ROLE checker_outsider; \
             GRANT USAGE ON SCHEMA biomero TO checker_outsider; \
             GRANT EXECUTE ON FUNCTION biomero.record_event, biomero.reset_position, \
                 biomero.max_tracking_id TO checker_outsider; \
             GRANT SELECT ON biomero.tracking TO checker_outsider; \
             SELECT biomero.set_append_mode('App3', 'concurrent')",
        )
        .unwrap();
    // A hot standby needs at least the primary's prepared transactions and worker slots.
    let replica = Cluster::replica_of(&primary, &settings);
    drop(setup);
    let run = Run {
        seed,
        started: Instant::now(),
        primary: primary.port,
        standby: replica.port,
        stop: AtomicBool::new(false),
        quiet: AtomicBool::new(false),
        listened_until: Mutex::new(0.0),
        faults: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        prepared: Mutex::new(Vec::new()),
        resolved: Mutex::new(HashMap::new()),
        fresh: Mutex::new(Vec::new()),
        restriction_changes: Mutex::new(Vec::new()),
        restricted: Mutex::new(BTreeSet::new()),
        next: AtomicU64::new(0),
        counts: Mutex::new(BTreeMap::new()),
        timeline: Mutex::new(Vec::new()),
    };
    let run = Arc::new(run);

    let (appends, reads, wakes) = thread::scope(|scope| {
        let listener = scope.spawn(|| listener(&run));
        thread::sleep(Duration::from_millis(200));
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                scope.spawn({
                    let run = &run;
                    move || writer(run, i)
                })
            })
            .collect();
        let mut readers: Vec<_> = (0..2)
            .map(|i| {
                scope.spawn({
                    let run = &run;
                    move || reader(run, Server::Primary, i)
                })
            })
            .chain((0..2).map(|i| {
                scope.spawn({
                    let run = &run;
                    move || reader(run, Server::Standby, 10 + i)
                })
            }))
            .collect();
        readers.push(scope.spawn(|| control_reader(&run)));
        let mut others = Vec::new();
        let mut index = 0;
        for (follower, upstream, processes) in FOLLOWERS {
            for _ in 0..processes {
                index += 1;
                let run = &run;
                others.push(scope.spawn(move || follower_process(run, follower, upstream, index)));
            }
        }
        for _ in 0..2 {
            others.push(scope.spawn(|| control_follower(&run)));
        }
        others.push(scope.spawn(|| resolver(&run)));
        others.push(scope.spawn(|| admin(&run)));
        others.push(scope.spawn(|| faults(&run, &primary, seconds)));

        thread::sleep(Duration::from_secs(seconds));
        run.stop.store(true, Ordering::Relaxed);
        let appends: Vec<Append> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        for other in others {
            other.join().unwrap();
        }
        let reads: Vec<Read> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        // The last prepared transactions, then the wake-ups of the last commits.
        let mut client = run.connect(Server::Primary, "resolver");
        let mut rng = StdRng::seed_from_u64(seed ^ 0x700);
        while !run.prepared.lock().unwrap().is_empty() {
            resolve(&run, &mut client, &mut rng, true);
        }
        thread::sleep(Duration::from_secs(5));
        run.quiet.store(true, Ordering::Relaxed);
        let wakes = listener.join().unwrap();
        (appends, reads, wakes)
    });

    let history = history(&run, &appends, &wakes);
    let text = analyse(&run, &primary, &replica, appends, reads, wakes, seconds);
    let violations = run.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        keep_history(seed, &primary, &history);
    }
    let control_skips = text.1;
    let control_duplicates = text.2;
    Report {
        seed,
        text: text.0,
        violations,
        control_skips,
        control_duplicates,
    }
}

/// The run as one timeline: commits, wake-ups, mode switches and faults, by time.
fn history(run: &Run, appends: &[Append], wakes: &[Wake]) -> Vec<(f64, String)> {
    let mut lines = run.timeline.lock().unwrap().clone();
    for fault in run.faults.lock().unwrap().iter() {
        lines.push((
            fault.from,
            format!("fault: {:?} until {:.3} s", fault.kind, fault.until),
        ));
    }
    for append in appends {
        lines.push((
            append.at,
            format!(
                "append {} {:?}: {:?}",
                append.app, append.outcome, append.ids
            ),
        ));
    }
    for wake in wakes {
        lines.push((
            wake.at,
            format!("wake {} {}..={}", wake.app, wake.first, wake.last),
        ));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines
}

/// Leaves a failing seed's timeline and the primary's server log for a look afterwards.
fn keep_history(seed: u64, primary: &Cluster, history: &[(f64, String)]) {
    let directory = format!("{}/checker-{seed}", env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(&directory);
    let text: String = history
        .iter()
        .map(|(at, line)| format!("{at:9.3} {line}\n"))
        .collect();
    let _ = std::fs::write(format!("{directory}/timeline.txt"), text);
    let _ = std::fs::copy(
        format!("{}/server.log", primary.data),
        format!("{directory}/primary.log"),
    );
    eprintln!("checker: seed {seed}: timeline and server log in {directory}");
}

/// The checks over the history; returns the report and the controls' findings.
fn analyse(
    run: &Run,
    primary: &Cluster,
    replica: &Cluster,
    appends: Vec<Append>,
    reads: Vec<Read>,
    wakes: Vec<Wake>,
    seconds: u64,
) -> (String, usize, i64) {
    let mut client = primary.connect_when_ready(DATABASE);
    let resolved = run.resolved.lock().unwrap().clone();

    // What was written, and how each append ended in the end.
    let mut acknowledged: BTreeMap<(String, i64), (Vec<u8>, f64, bool)> = BTreeMap::new();
    let mut possible: BTreeSet<(String, i64)> = BTreeSet::new();
    for append in &appends {
        let (committed, at, announced) = match &append.outcome {
            Outcome::Committed => (Some(true), append.at, true),
            Outcome::RolledBack => (Some(false), append.at, false),
            Outcome::Uncertain => (None, append.at, false),
            // With biomero.notify off (PostgreSQL cannot prepare a NOTIFY).
            Outcome::Prepared(gid) => match resolved.get(gid) {
                Some(&(committed, at)) => (Some(committed), at, false),
                None => (None, append.at, false),
            },
        };
        for (id, state) in append.ids.iter().zip(&append.states) {
            let key = (append.app.clone(), *id);
            match committed {
                Some(true) => {
                    acknowledged.insert(key.clone(), (state.clone(), at, announced));
                    possible.insert(key);
                }
                Some(false) => {}
                None => {
                    possible.insert(key);
                }
            }
        }
    }
    let stored: BTreeMap<(String, i64), Vec<u8>> = client
        .query(
            "SELECT application_name, notification_id, state FROM biomero.events",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    let mut lost = 0;
    for (key, (state, _, _)) in &acknowledged {
        match stored.get(key) {
            None => {
                lost += 1;
                run.violation("committed event lost", format!("{key:?}"));
            }
            Some(found) if found != state => {
                run.violation("committed event changed", format!("{key:?}"))
            }
            Some(_) => {}
        }
    }
    for key in stored.keys() {
        let imported = key.0.starts_with("Imported") || key.0.starts_with("App");
        if !(possible.contains(key) || imported && stored[key] == b"\x01") {
            run.violation("event stored that no one committed", format!("{key:?}"));
        }
    }
    let committed_ids = |app: &str| -> BTreeSet<i64> {
        stored
            .keys()
            .filter(|(a, _)| a == app)
            .map(|(_, id)| *id)
            .collect()
    };

    // Readers: every page is exactly the committed ids from where it started to its end.
    let mut checked_reads = 0;
    let mut control_skips = 0;
    let mut per_app: HashMap<&str, BTreeSet<i64>> = HashMap::new();
    for read in &reads {
        let Some(&end) = read.ids.last() else {
            continue;
        };
        let committed = per_app
            .entry(read.app.as_str())
            .or_insert_with(|| committed_ids(&read.app));
        let expected: Vec<i64> = committed.range(read.after + 1..=end).copied().collect();
        if read.ids != expected {
            let got: BTreeSet<i64> = read.ids.iter().copied().collect();
            let skipped: Vec<i64> = expected
                .iter()
                .filter(|id| !got.contains(id))
                .copied()
                .collect();
            if read.control {
                control_skips += skipped.len();
            } else {
                run.violation(
                    "reader skipped or repeated",
                    format!(
                        "{} ({:?}) on {} after {}: got {:?}, committed {:?}",
                        read.reader, read.server, read.app, read.after, read.ids, expected
                    ),
                );
            }
        }
        if !read.control {
            checked_reads += 1;
        }
    }

    // Followers: drain them, then every committed id processed exactly once.
    let mut processed_report = Vec::new();
    let mut drain_rng = StdRng::seed_from_u64(run.seed ^ 0x800);
    for (follower, upstream, _) in FOLLOWERS {
        let target = committed_ids(upstream).last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut resolver = primary.connect(DATABASE);
        while follower_position(&mut client, follower, upstream) < target {
            assert!(
                Instant::now() < deadline,
                "{follower} did not catch up to {target}"
            );
            follow_step(run, &mut client, &mut drain_rng, follower, upstream);
            // Prepared steps of the drain are resolved at once.
            while !run.prepared.lock().unwrap().is_empty() {
                resolve(run, &mut resolver, &mut drain_rng, true);
            }
        }
        let counts: BTreeMap<i64, i64> = client
            .query(
                "SELECT notification_id, count(*) FROM checker_processed \
                 WHERE follower = $1 GROUP BY 1",
                &[&follower],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let committed = committed_ids(upstream);
        let twice: Vec<_> = counts
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(id, _)| *id)
            .collect();
        let never: Vec<_> = committed
            .iter()
            .filter(|id| !counts.contains_key(id))
            .collect();
        let invented: Vec<_> = counts.keys().filter(|id| !committed.contains(id)).collect();
        if !twice.is_empty() || !never.is_empty() || !invented.is_empty() {
            run.violation(
                "follower not exactly once",
                format!(
                    "{follower}: processed twice {twice:?}, never {never:?}, not committed \
                     {invented:?}"
                ),
            );
        }
        processed_report.push(format!(
            "{follower}: {} committed notifications of {upstream}, {} processed twice, {} never",
            committed.len(),
            twice.len(),
            never.len()
        ));
    }
    let control_duplicates: i64 = client
        .query_one(
            "SELECT coalesce(sum(n - 1), 0)::bigint FROM (SELECT count(*) AS n FROM \
             checker_processed WHERE follower = $1 GROUP BY notification_id) AS c",
            &[&CONTROL_FOLLOWER.0],
        )
        .unwrap()
        .get(0);

    // The standby reads everything in the end.
    let mut standby = replica.connect_when_ready(DATABASE);
    for app in APPS {
        let committed: Vec<i64> = committed_ids(app).into_iter().collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = Vec::new();
            loop {
                let page = page(&mut standby, app, all.last().copied().unwrap_or(0));
                if page.is_empty() {
                    break;
                }
                all.extend(page);
            }
            if all == committed {
                break;
            }
            if Instant::now() > deadline {
                run.violation(
                    "standby never read every committed event",
                    format!("{app}: {} of {} readable", all.len(), committed.len()),
                );
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    // Wake-ups: each acknowledged commit announced within the bound, or its window
    // excused (a restart: listeners cannot be reached; no worker slot: no publisher).
    let excusing = [FaultKind::Restart, FaultKind::ExhaustWorkers];
    let listened_until = *run.listened_until.lock().unwrap();
    let mut wake_checked = 0;
    let mut wake_excused = 0;
    let mut late = Vec::new();
    for ((app, id), (_, at, announced)) in &acknowledged {
        if !APPS.contains(&app.as_str()) {
            continue;
        }
        if !announced {
            wake_excused += 1; // prepared, with biomero.notify off
            continue;
        }
        let faults = run.faults.lock().unwrap();
        let excused_until = faults
            .iter()
            .filter(|f| excusing.contains(&f.kind) && f.from - 1.0 <= *at && *at <= f.until + 1.0)
            .map(|f| f.until)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        drop(faults);
        let from = excused_until.map_or(*at, |until| until.max(*at));
        let found = wakes.iter().any(|w| {
            &w.app == app && w.first <= *id && *id <= w.last && w.at <= from + WAKE_UP_BOUND
        });
        if found {
            wake_checked += 1;
        } else if excused_until.is_some() {
            wake_excused += 1;
        } else if from + WAKE_UP_BOUND <= listened_until {
            let announced = wakes
                .iter()
                .find(|w| &w.app == app && w.first <= *id && *id <= w.last)
                .map_or("never announced".to_string(), |w| {
                    format!("announced at {:.2} s", w.at)
                });
            late.push(format!("{app} {id} (committed at {at:.2} s, {announced})"));
        } else {
            wake_excused += 1; // committed too near the end to tell
        }
    }
    if !late.is_empty() {
        run.violation(
            "commit not announced in time",
            format!(
                "{} ids, first: {:?}",
                late.len(),
                &late[..late.len().min(5)]
            ),
        );
    }

    let counts = run.counts.lock().unwrap().clone();
    let faults = run.faults.lock().unwrap().len();
    let mut text = format!(
        "seed {} ({} s of load): {} acknowledged commits of {} appended events ({} possible), \
         {} lost, {} reads checked ({} on the standby), {} wake-ups ({} commits checked, {} \
         excused), {} faults\n",
        run.seed,
        seconds,
        acknowledged.len(),
        appends.iter().map(|a| a.ids.len()).sum::<usize>(),
        possible.len(),
        lost,
        checked_reads,
        reads
            .iter()
            .filter(|r| r.server == Server::Standby && !r.ids.is_empty())
            .count(),
        wakes.len(),
        wake_checked,
        wake_excused,
        faults
    );
    for line in processed_report {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!(
        "  controls: the table read without the bound skipped {control_skips} ids; the \
         client-side follower processed {control_duplicates} notifications twice\n"
    ));
    for (what, n) in counts {
        text.push_str(&format!("  {what}: {n}\n"));
    }
    let windows: Vec<String> = run
        .faults
        .lock()
        .unwrap()
        .iter()
        .map(|f| format!("{:?} {:.1}-{:.1} s", f.kind, f.from, f.until))
        .collect();
    text.push_str(&format!("  faults: {}\n", windows.join(", ")));
    (text, control_skips, control_duplicates)
}

fn seeds() -> Vec<u64> {
    match std::env::var("CHECK_SEEDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|seed| {
                seed.trim()
                    .parse()
                    .expect("CHECK_SEEDS: comma-separated integers")
            })
            .collect(),
        _ => vec![rand::random::<u32>() as u64],
    }
}

#[test]
fn randomized_histories_keep_every_guarantee() {
    let seconds: u64 = std::env::var("CHECK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut failed = Vec::new();
    let mut controls_silent = Vec::new();
    for seed in seeds() {
        eprintln!("checker: seed {seed}, {seconds} s (CHECK_SEEDS={seed} runs it again)");
        let report = check(seed, seconds);
        eprint!("{}", report.text);
        let mut categories: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (category, detail) in &report.violations {
            categories.entry(category).or_default().push(detail);
        }
        for (category, details) in &categories {
            // Up to three different ones (told apart without their numbers).
            let mut kinds: Vec<(String, &str)> = Vec::new();
            for detail in details {
                let kind: String = detail
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(80)
                    .collect();
                if kinds.len() < 3 && !kinds.iter().any(|(k, _)| *k == kind) {
                    kinds.push((kind, detail));
                }
            }
            eprintln!("  VIOLATION {category}: {} times", details.len());
            for (_, detail) in kinds {
                eprintln!("    e.g. {detail}");
            }
        }
        if !report.violations.is_empty() {
            failed.push(report.seed);
        }
        if report.control_skips == 0 || report.control_duplicates == 0 {
            controls_silent.push(report.seed);
        }
    }
    assert!(
        controls_silent.is_empty(),
        "seeds {controls_silent:?}: a control saw no race, so the checker cannot be trusted"
    );
    assert!(
        failed.is_empty(),
        "seeds {failed:?} found violations (above)"
    );
}
