//! Soak: 64 concurrent sessions, writers and competing processes of four followers, for a
//! minute (in the suite) or as long as asked (`scripts/soak.sh SECONDS [SESSIONS]`).
//!
//! At the end: no unexpected error, every committed event stored under contiguous ids, every
//! notification processed exactly once by each follower, every position equal to its
//! upstream's head, and the server's private memory steady (RssAnon of the sessions'
//! backends sampled at start, middle and end; VmRSS printed alongside).

mod common;
#[path = "common/follower.rs"]
mod follower;

use common::*;
use follower::FollowerStep;
use postgres::{Client, IsolationLevel};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const UPSTREAMS: [&str; 2] = ["WorkflowTracker", "JobTracker"];

/// A follower application, what it follows, and how its processes work.
#[derive(Clone, Copy)]
struct Follower {
    name: &'static str,
    upstream: &'static str,
    /// Commits its own events with the position (record_events with upstream arguments)
    /// instead of record_tracking.
    emits: bool,
    /// Takes the claim with `wait => false` and does something else when it is busy.
    polls: bool,
}

const FOLLOWERS: [Follower; 4] = [
    Follower {
        name: "WorkflowProgress",
        upstream: "WorkflowTracker",
        emits: false,
        polls: false,
    },
    Follower {
        name: "JobAccounting",
        upstream: "JobTracker",
        emits: true,
        polls: false,
    },
    // Follows JobAccounting's own log: a chain of followers.
    Follower {
        name: "WorkflowAnalytics",
        upstream: "JobAccounting",
        emits: false,
        polls: true,
    },
    Follower {
        name: "WorkflowMirror",
        upstream: "WorkflowTracker",
        emits: true,
        polls: true,
    },
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// One follower step in the README's recipe; returns how many notifications it processed,
/// or None when the claim was busy (`wait => false`).
fn follow(
    client: &mut Client,
    run: &str,
    follower: Follower,
    process: i32,
) -> Result<Option<usize>, postgres::Error> {
    let (name, upstream) = (
        format!("{run}{}", follower.name),
        format!("{run}{}", follower.upstream),
    );
    let step = FollowerStep {
        follower: &name,
        upstream: &upstream,
        max: 20,
        wait: !follower.polls,
        isolation: IsolationLevel::ReadCommitted,
        read_model: Some(("soak_read_model", process)),
        emit: follower.emits.then_some("biomero.soak:Processed"),
    };
    Ok(step.run(client)?.map(|processed| processed.len()))
}

/// Resident memory of one process from /proc/<pid>/status, in kB: `field` is `VmRSS`
/// (everything resident, including shared buffers the process has touched) or `RssAnon`
/// (its private memory, where a leak shows). None when the process is gone.
fn resident_kb(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The postmaster's pid and those of all its children (backends and auxiliary processes).
fn server_pids(data_directory: &str) -> Vec<i32> {
    let postmaster: i32 = std::fs::read_to_string(format!("{data_directory}/postmaster.pid"))
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|line| line.trim().parse().ok())
        })
        .expect("postmaster.pid names the postmaster");
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<i32>().ok());
        if parent == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

#[derive(Clone, Copy)]
struct Memory {
    at: Duration,
    sessions_anon_kb: u64,
    sessions_rss_kb: u64,
    sessions_shmem_kb: u64,
    server_anon_kb: u64,
    server_rss_kb: u64,
    server_processes: usize,
}

fn sample(started: Instant, session_pids: &[i32], data_directory: &str) -> Memory {
    let sum = |pids: &[i32], field: &str| -> u64 {
        pids.iter().filter_map(|pid| resident_kb(*pid, field)).sum()
    };
    let server = server_pids(data_directory);
    Memory {
        at: started.elapsed(),
        sessions_anon_kb: sum(session_pids, "RssAnon"),
        sessions_rss_kb: sum(session_pids, "VmRSS"),
        sessions_shmem_kb: sum(session_pids, "RssShmem"),
        server_anon_kb: sum(&server, "RssAnon"),
        server_rss_kb: sum(&server, "VmRSS"),
        server_processes: server.len(),
    }
}

#[test]
fn soak_64_sessions_of_writers_and_competing_followers() {
    let seconds = env_number("BIOMERO_SOAK_SECONDS", 60);
    let sessions = env_number("BIOMERO_SOAK_SESSIONS", 64) as usize;
    let writers = sessions * 3 / 8;
    let follower_sessions = sessions - writers;
    let duration = Duration::from_secs(seconds);
    let run = format!("{}_", unique_name("Soak"));
    let mut admin = connect();
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS soak_read_model ( \
             follower text NOT NULL, upstream text NOT NULL, \
             notification_id bigint NOT NULL, process int NOT NULL)",
        )
        .unwrap();
    let data_directory = test_server().data_directory;

    let stop_writing = Arc::new(AtomicBool::new(false));
    let stop_following = Arc::new(AtomicBool::new(false));
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let committed: Arc<Vec<AtomicUsize>> =
        Arc::new(UPSTREAMS.iter().map(|_| AtomicUsize::new(0)).collect());
    let (transactions, rollbacks, busy) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let pids: Arc<Mutex<Vec<i32>>> = Arc::default();

    let writer_threads: Vec<_> = (0..writers)
        .map(|writer| {
            let upstream = format!("{run}{}", UPSTREAMS[writer % UPSTREAMS.len()]);
            let (stop, unexpected, committed) =
                (stop_writing.clone(), unexpected.clone(), committed.clone());
            let (transactions, rollbacks, pids) =
                (transactions.clone(), rollbacks.clone(), pids.clone());
            thread::spawn(move || {
                // A lock that stays held fails the run instead of hanging it.
                let mut client = session("60s");
                pids.lock().unwrap().push(backend_pid(&mut client));
                let mut rng = rand::thread_rng();
                let aggregate = random_uuid();
                let mut version = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let size = rng.gen_range(1..=5i64);
                    let roll_back = rng.gen_bool(0.1);
                    let attempt = (|| -> Result<(), postgres::Error> {
                        let mut tx = client.transaction()?;
                        let ids = append_versions(
                            &mut tx,
                            &upstream,
                            &aggregate,
                            version..version + size,
                            "biomero.eventsourcing:WorkflowRun.TaskAdded",
                            |_| b"{}".to_vec(),
                        )?;
                        assert_eq!(ids.len() as i64, size);
                        assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1));
                        if roll_back {
                            tx.rollback()
                        } else {
                            tx.commit()
                        }
                    })();
                    transactions.fetch_add(1, Ordering::Relaxed);
                    match attempt {
                        Ok(()) if roll_back => {
                            rollbacks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(()) => {
                            version += size;
                            committed[writer % UPSTREAMS.len()]
                                .fetch_add(size as usize, Ordering::SeqCst);
                        }
                        Err(error) => {
                            unexpected
                                .lock()
                                .unwrap()
                                .push(format!("writer: {}", describe(&error)));
                            // A lost server fails the run once, not once per retry.
                            if client.is_closed() {
                                break;
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(rng.gen_range(0..20)));
                }
            })
        })
        .collect();

    let processed: Arc<Vec<AtomicUsize>> =
        Arc::new(FOLLOWERS.iter().map(|_| AtomicUsize::new(0)).collect());
    let follower_threads: Vec<_> = (0..follower_sessions)
        .map(|process| {
            let which = process % FOLLOWERS.len();
            let follower = FOLLOWERS[which];
            let (stop, unexpected, busy, processed, pids, run) = (
                stop_following.clone(),
                unexpected.clone(),
                busy.clone(),
                processed.clone(),
                pids.clone(),
                run.clone(),
            );
            thread::spawn(move || {
                // A lock that stays held fails the run instead of hanging it.
                let mut client = session("60s");
                pids.lock().unwrap().push(backend_pid(&mut client));
                let mut rng = rand::thread_rng();
                while !stop.load(Ordering::SeqCst) {
                    match follow(&mut client, &run, follower, process as i32) {
                        Ok(Some(0)) => thread::sleep(Duration::from_millis(10)),
                        Ok(Some(count)) => {
                            processed[which].fetch_add(count, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(rng.gen_range(1..10)));
                        }
                        Err(error) => {
                            unexpected.lock().unwrap().push(format!(
                                "{}: {}",
                                follower.name,
                                describe(&error)
                            ));
                            if client.is_closed() {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Memory: at a sixth of the run (sessions warmed up), halfway, and at the end.
    let started = Instant::now();
    while pids.lock().unwrap().len() < sessions {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sessions did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let session_pids = pids.lock().unwrap().clone();
    let mut samples = Vec::new();
    for at in [duration / 6, duration / 2, duration] {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
        samples.push(sample(started, &session_pids, &data_directory));
        let errors = unexpected.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "{} unexpected errors, the first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
    }
    stop_writing.store(true, Ordering::SeqCst);
    for writer in writer_threads {
        writer.join().unwrap();
    }
    let written = started.elapsed();

    // The followers drain: every position reaches its upstream's head.
    let mut client = connect();
    let lag = |client: &mut Client| -> i64 {
        FOLLOWERS
            .iter()
            .map(|follower| {
                let (name, upstream) = (
                    format!("{run}{}", follower.name),
                    format!("{run}{}", follower.upstream),
                );
                client
                    .query_one(
                        "SELECT coalesce(biomero.max_notification_id($2), 0) \
                         - coalesce(biomero.max_tracking_id($1, $2), 0)",
                        &[&name, &upstream],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while lag(&mut client) > 0 {
        assert!(Instant::now() < deadline, "the followers did not catch up");
        thread::sleep(Duration::from_millis(50));
    }
    // One more round: JobAccounting's last commits may have given WorkflowAnalytics work.
    thread::sleep(Duration::from_millis(200));
    while lag(&mut client) > 0 {
        assert!(Instant::now() < deadline, "the followers did not catch up");
        thread::sleep(Duration::from_millis(50));
    }
    stop_following.store(true, Ordering::SeqCst);
    for follower in follower_threads {
        follower.join().unwrap();
    }
    let elapsed = started.elapsed();

    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    let (applications, events) = assert_store_invariants(&mut client);
    // Every committed event is stored: each upstream's head is what its writers committed.
    let mut heads = BTreeMap::new();
    for (index, upstream) in UPSTREAMS.iter().enumerate() {
        let name = format!("{run}{upstream}");
        let head = notification_head(&mut client, &name);
        assert_eq!(
            head as usize,
            committed[index].load(Ordering::SeqCst),
            "{upstream}: stored vs committed"
        );
        heads.insert(upstream.to_string(), head);
    }
    // Exactly once: per follower, each upstream notification in the read model once, the
    // position at the head, and (for those that emit) one event per notification.
    let mut report = Vec::new();
    for follower in FOLLOWERS {
        let (name, upstream) = (
            format!("{run}{}", follower.name),
            format!("{run}{}", follower.upstream),
        );
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT notification_id), \
                 coalesce(min(notification_id), 0), coalesce(max(notification_id), 0), \
                 count(DISTINCT process) \
                 FROM soak_read_model WHERE follower = $1 AND upstream = $2",
                &[&name, &upstream],
            )
            .unwrap();
        let (rows, distinct, min, max, processes): (i64, i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let head = notification_head(&mut client, &upstream);
        let position = follower_position(&mut client, &name, &upstream);
        assert!(head > 0, "{}: nothing to follow", follower.name);
        assert_eq!(
            (rows, distinct, min, max, position),
            (head, head, 1, head, head),
            "{}: processed notifications (rows, distinct, min, max, position) vs head",
            follower.name
        );
        if follower.emits {
            let emitted: (i64, i64) = client
                .query_one(
                    "SELECT count(*), count(DISTINCT state) FROM biomero.events \
                     WHERE application_name = $1",
                    &[&name],
                )
                .map(|row| (row.get(0), row.get(1)))
                .unwrap();
            assert_eq!(
                emitted,
                (head, head),
                "{}: one event per notification",
                follower.name
            );
        }
        report.push(format!(
            "{} {rows}/{head} by {processes} processes",
            follower.name
        ));
    }

    // Memory: the sessions' private memory does not keep growing.
    for memory in &samples {
        eprintln!(
            "soak: memory at {:>6.1?}: session backends RssAnon {} kB, VmRSS {} kB (of it \
             shared buffers {} kB); all {} server processes RssAnon {} kB, VmRSS {} kB",
            memory.at,
            memory.sessions_anon_kb,
            memory.sessions_rss_kb,
            memory.sessions_shmem_kb,
            memory.server_processes,
            memory.server_anon_kb,
            memory.server_rss_kb
        );
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let growth_kb = last.sessions_anon_kb as i64 - first.sessions_anon_kb as i64;
    let growth = growth_kb as f64 / first.sessions_anon_kb as f64;
    eprintln!(
        "soak: {sessions} sessions ({writers} writers, {follower_sessions} follower processes \
         of {} followers) for {written:.1?} (+{:.1?} to drain): {} transactions, {} rolled \
         back, {} events committed ({heads:?}), processed: {}; {} busy claims skipped; \
         0 errors, 0 duplicates, positions = heads; {events} events in {applications} \
         applications on the server; session backends' RssAnon {} kB -> {} kB ({:+.1}%)",
        FOLLOWERS.len(),
        elapsed - written,
        transactions.load(Ordering::Relaxed),
        rollbacks.load(Ordering::Relaxed),
        heads.values().sum::<i64>(),
        report.join(", "),
        busy.load(Ordering::Relaxed),
        first.sessions_anon_kb,
        last.sessions_anon_kb,
        growth * 100.0,
    );
    assert!(
        growth_kb < 64 * 1024 || growth < 0.5,
        "the sessions' private memory grew by {growth_kb} kB ({:.0}%)",
        growth * 100.0
    );
}
