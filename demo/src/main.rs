//! Several "SLURM client" sessions create workflows while several processes per follower
//! track them through biomero_tracking; prints progress and a summary.
//!
//! Usage: biomero_demo POSTGRES_URL [CLIENTS] [WORKFLOWS_PER_CLIENT] [PROCESSES_PER_FOLLOWER]

use postgres::{Client, NoTls};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LEADER: &str = "WorkflowTracker";
const FOLLOWERS: [&str; 4] = [
    "JobAccounting",
    "JobProgress",
    "WorkflowProgress",
    "WorkflowAnalytics",
];
const TOPIC: &str = "biomero.eventsourcing";

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|error| panic!("connect to {url}: {error}"))
}

fn uuid(rng: &mut impl Rng) -> String {
    uuid::Uuid::from_u128(rng.gen()).to_string()
}

struct Command {
    ids: Vec<String>,
    versions: Vec<i64>,
    topics: Vec<String>,
    states: Vec<Vec<u8>>,
}

impl Command {
    fn new() -> Self {
        Command {
            ids: vec![],
            versions: vec![],
            topics: vec![],
            states: vec![],
        }
    }
    fn event(&mut self, id: &str, version: i64, topic: &str, state: serde_json::Value) {
        self.ids.push(id.to_string());
        self.versions.push(version);
        self.topics.push(format!("{TOPIC}:{topic}"));
        self.states.push(state.to_string().into_bytes());
    }
    /// One call, one transaction: the command's events are stored together or not at all.
    fn record(self, client: &mut Client) -> Result<usize, postgres::Error> {
        client.query_one(
            "SELECT biomero.record_events($1, $2::text[]::uuid[], $3, $4, $5)",
            &[
                &LEADER,
                &self.ids,
                &self.versions,
                &self.topics,
                &self.states,
            ],
        )?;
        Ok(self.ids.len())
    }
}

/// A workflow as BIOMERO runs it: initiated, two tasks created and run, completed.
fn run_workflow(
    client: &mut Client,
    rng: &mut impl Rng,
    user: i64,
) -> Result<usize, postgres::Error> {
    let workflow = uuid(rng);
    let mut stored = 0;
    let mut command = Command::new();
    command.event(
        &workflow,
        0,
        "WorkflowRun.WorkflowInitiated",
        serde_json::json!({
        "name": "cellpose segmentation", "description": "demo", "user": user, "group": 3}),
    );
    stored += command.record(client)?;
    let mut workflow_version = 1;
    for task_name in ["convert", "segment"] {
        let task = uuid(rng);
        let mut command = Command::new();
        command.event(
            &task,
            0,
            "Task.TaskCreated",
            serde_json::json!({
            "workflow_id": workflow, "task_name": task_name, "task_version": "1.0",
            "input_data": {}, "params": {}}),
        );
        command.event(
            &workflow,
            workflow_version,
            "WorkflowRun.TaskAdded",
            serde_json::json!({"task_id": task}),
        );
        workflow_version += 1;
        stored += command.record(client)?;
        let mut command = Command::new();
        command.event(
            &task,
            1,
            "Task.JobIdAdded",
            serde_json::json!({"job_id": rng.gen_range(1000..9999)}),
        );
        command.event(&task, 2, "Task.TaskStarted", serde_json::json!({}));
        command.event(
            &task,
            3,
            "Task.StatusUpdated",
            serde_json::json!({"status": "RUNNING"}),
        );
        command.event(
            &task,
            4,
            "Task.ProgressUpdated",
            serde_json::json!({"progress": "50%"}),
        );
        command.event(
            &task,
            5,
            "Task.TaskCompleted",
            serde_json::json!({"result": {"stdout": "ok"}}),
        );
        stored += command.record(client)?;
    }
    let mut command = Command::new();
    command.event(
        &workflow,
        workflow_version,
        "WorkflowRun.WorkflowStarted",
        serde_json::json!({}),
    );
    command.event(
        &workflow,
        workflow_version + 1,
        "WorkflowRun.WorkflowCompleted",
        serde_json::json!({}),
    );
    stored += command.record(client)?;
    Ok(stored)
}

/// One follower step: claim, read the next notification, write the read model, record the
/// position, commit. Returns false when there was nothing new.
fn follow_once(client: &mut Client, follower: &str, process: i32) -> Result<bool, postgres::Error> {
    let mut tx = client.transaction()?;
    let position: i64 = tx
        .query_one("SELECT biomero.claim($1, $2)", &[&follower, &LEADER])?
        .get(0);
    let Some(next) = tx.query_opt(
        "SELECT notification_id, topic FROM biomero.select_notifications($1, $2, 1, \
         inclusive_of_start => false)",
        &[&LEADER, &position],
    )?
    else {
        tx.commit()?;
        return Ok(false);
    };
    let (notification_id, topic): (i64, String) = (next.get(0), next.get(1));
    tx.execute(
        "INSERT INTO demo_read_model (follower, notification_id, topic, process) \
         VALUES ($1, $2, $3, $4)",
        &[&follower, &notification_id, &topic, &process],
    )?;
    tx.query_one(
        "SELECT biomero.record_tracking($1, $2, $3)",
        &[&follower, &LEADER, &notification_id],
    )?;
    tx.commit()?;
    Ok(true)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: biomero_demo POSTGRES_URL [CLIENTS] [WORKFLOWS] [PROCESSES]")
        .clone();
    let number =
        |index: usize, default: usize| args.get(index).map_or(default, |a| a.parse().unwrap());
    let (clients, workflows, processes) = (number(2, 6), number(3, 25), number(4, 3));

    let mut admin = connect(&url);
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS demo_read_model; \
             CREATE TABLE demo_read_model (follower text, notification_id bigint, topic text, \
                 process int, processed_at timestamptz DEFAULT clock_timestamp())",
        )
        .unwrap();
    println!(
        "demo: {clients} SLURM client sessions x {workflows} workflows; {} followers x {processes} \
         processes each, all on one database",
        FOLLOWERS.len()
    );

    let started = Instant::now();
    let appended = Arc::new(AtomicU64::new(0));
    let clients_done = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();

    let client_threads: Vec<_> = (0..clients as i64)
        .map(|user| {
            let (url, appended, errors) = (url.clone(), appended.clone(), errors.clone());
            thread::spawn(move || {
                let mut client = connect(&url);
                let mut rng = rand::thread_rng();
                for _ in 0..workflows {
                    match run_workflow(&mut client, &mut rng, user) {
                        Ok(events) => {
                            appended.fetch_add(events as u64, Ordering::Relaxed);
                        }
                        Err(error) => errors.lock().unwrap().push(error.to_string()),
                    }
                }
            })
        })
        .collect();

    let follower_threads: Vec<_> = FOLLOWERS
        .iter()
        .flat_map(|follower| (0..processes as i32).map(move |process| (*follower, process)))
        .map(|(follower, process)| {
            let (url, clients_done, errors) = (url.clone(), clients_done.clone(), errors.clone());
            thread::spawn(move || {
                let mut client = connect(&url);
                loop {
                    let done = clients_done.load(Ordering::SeqCst);
                    match follow_once(&mut client, follower, process) {
                        Ok(true) => {}
                        Ok(false) if done => break,
                        Ok(false) => thread::sleep(Duration::from_millis(5)),
                        Err(error) => errors.lock().unwrap().push(format!("{follower}: {error}")),
                    }
                }
            })
        })
        .collect();

    let mut progress = connect(&url);
    let report = |progress: &mut Client| {
        let rows = progress
            .query(
                "SELECT f, coalesce(biomero.max_tracking_id(f, $1), 0) \
                 FROM unnest($2::text[]) AS f",
                &[&LEADER, &FOLLOWERS.to_vec()],
            )
            .unwrap();
        let positions: Vec<String> = rows
            .iter()
            .map(|row| format!("{} {}", row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect();
        println!(
            "[{:>5.1}s] events appended {:>5} | processed: {}",
            started.elapsed().as_secs_f64(),
            appended.load(Ordering::Relaxed),
            positions.join(", ")
        );
    };
    while !client_threads.iter().all(|t| t.is_finished()) {
        report(&mut progress);
        thread::sleep(Duration::from_secs(1));
    }
    for thread in client_threads {
        thread.join().unwrap();
    }
    clients_done.store(true, Ordering::SeqCst);
    while !follower_threads.iter().all(|t| t.is_finished()) {
        report(&mut progress);
        thread::sleep(Duration::from_millis(500));
    }
    for thread in follower_threads {
        thread.join().unwrap();
    }
    report(&mut progress);
    let elapsed = started.elapsed();

    let head: i64 = progress
        .query_one(
            "SELECT coalesce(biomero.max_notification_id($1), 0)",
            &[&LEADER],
        )
        .unwrap()
        .get(0);
    println!("\nsummary after {:.1}s", elapsed.as_secs_f64());
    println!(
        "  events stored by {LEADER}: {head} (appended by clients: {})",
        appended.load(Ordering::Relaxed)
    );
    let mut duplicates_total = 0;
    for follower in FOLLOWERS {
        let row = progress
            .query_one(
                "SELECT count(*), count(DISTINCT notification_id), count(DISTINCT process), \
                 coalesce(biomero.max_tracking_id($1, $2), 0) \
                 FROM demo_read_model WHERE follower = $1",
                &[&follower, &LEADER],
            )
            .unwrap();
        let (rows, distinct, processes_used, position): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        duplicates_total += rows - distinct;
        println!(
            "  {follower:<18} processed {distinct:>5} notifications ({} duplicates) across {processes_used} \
             processes; position {position} of {head}",
            rows - distinct
        );
    }
    let errors = errors.lock().unwrap();
    println!("  duplicates: {duplicates_total}");
    println!("  errors: {}", errors.len());
    for error in errors.iter().take(5) {
        println!("    {error}");
    }
    let summary: serde_json::Value = progress
        .query_one("SELECT biomero.summary()::text", &[])
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    println!("  biomero.summary(): {summary}");
    if !errors.is_empty() || duplicates_total != 0 {
        std::process::exit(1);
    }
}
