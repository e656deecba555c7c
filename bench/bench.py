"""Benchmark of biomero_tracking against the ways users append and follow today.

Run through scripts/bench.sh, which starts a throwaway cluster (with the library in
shared_preload_libraries, which concurrent append mode needs) and passes its URL. Every
scenario runs against that one server in one run, so ratios between approaches are taken
under the same conditions; absolute figures are for this run only.

Drivers:
- pgbench (prepared protocol, per-transaction logs) for appends and reads;
- multiprocessing psycopg2 drivers for the follower loops, because the naive loop's
  duplicate-key errors must be counted rather than abort a client, and for the wake-up
  probe and its listeners, which need the id each commit returned and when it returned.

Each measured point is split into rounds and the variants that are compared run in
alternating order within each round (A B C, C B A, ...), so a drift of the shared VM's disk
or CPU during a point affects all variants alike.
"""

import argparse
import json
import multiprocessing
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import time
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path

import psycopg2

from variants import (
    BATCH_CONCURRENT,
    BATCH_SERIALIZED,
    CLAIM,
    CONCURRENT,
    LOCK,
    LOCK_QUIET,
    NAIVE,
    SERIALIZED,
    SERIALIZED_QUIET,
    UNORDERED,
    WAKE_CONCURRENT,
    WAKE_SERIALIZED,
    plain_select,
    select_notifications,
)

TOPIC = "biomero.eventsourcing:Task.StatusUpdated"
# A BIOMERO-sized event state: JSON of a StatusUpdated event, stored as bytea.
STATE_JSON = (
    '{"originator_id":"6f1c2d3e-5a4b-4c3d-8e2f-1a2b3c4d5e6f","originator_version":3,'
    '"timestamp":"2026-01-01T00:00:00.000000+00:00","status":"RUNNING","job_id":"4242"}'
)
STATE_HEX = "\\x" + STATE_JSON.encode().hex()
APPS = 8
# Writers of the wake-up scenario: pgbench clients plus the probe.
WAKEUP_WRITERS = 16
LISTENERS = 4


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Configuration


class Config:
    def __init__(self, quick):
        self.quick = quick
        if quick:
            self.seconds = float(os.environ.get("BENCH_SECONDS", 2))
            self.rounds = 1
            self.clients = [1, 4, 16, 64]
            self.batch_clients = {10: [1, 16], 100: [1, 16]}
            self.follower_processes = [1, 4, 16]
            self.read_clients = [1, 4]
            self.read_events = 20_000
            self.follower_events = 50_000
            self.growth_levels = [0, 20_000, 100_000]
            self.growth_seconds = self.seconds
        else:
            self.seconds = float(os.environ.get("BENCH_SECONDS", 12))
            self.rounds = 4
            self.clients = [1, 4, 16, 64]
            # Batches of 10 at two client counts only, to keep the full run near 28 minutes.
            self.batch_clients = {10: [1, 16], 100: [1, 4, 16, 64]}
            self.follower_processes = [1, 4, 16]
            self.read_clients = [1, 4]
            self.read_events = 100_000
            self.follower_events = 200_000
            self.growth_levels = [0, 1_000_000, 10_000_000]
            self.growth_seconds = 2 * self.seconds
        only = os.environ.get("BENCH_ONLY")
        self.only = set(only.split(",")) if only else None

    def wants(self, group):
        return self.only is None or group in self.only


# --------------------------------------------------------------------------------------------
# Database access


class Db:
    def __init__(self, url):
        self.url = url
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def run(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            if cur.description is not None:
                return cur.fetchall()
            return None

    def one(self, sql, args=None):
        rows = self.run(sql, args)
        return rows[0][0] if rows else None


def events_table_ddl(name):
    """The events table eventsourcing 9.5's PostgreSQL recorder creates for one application."""
    return (
        f"DROP TABLE IF EXISTS {name};"
        f"CREATE TABLE {name} (originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
        f" topic text, state bytea, notification_id bigserial,"
        f" PRIMARY KEY (originator_id, originator_version))"
        " WITH (autovacuum_enabled = true, autovacuum_vacuum_threshold = 100000000,"
        " autovacuum_vacuum_scale_factor = 0.5, autovacuum_analyze_threshold = 1000,"
        " autovacuum_analyze_scale_factor = 0.01);"
        f"CREATE UNIQUE INDEX {name}_notification_id_idx ON {name} (notification_id);"
    )


# The composite type eventsourcing's recorder inserts its events through (unnest of an array).
STORED_EVENT_DDL = (
    "DROP TYPE IF EXISTS stored_event_uuid CASCADE;"
    "CREATE TYPE stored_event_uuid AS (originator_id uuid, originator_version bigint,"
    " topic text, state bytea);"
)


def bulk_load(db, application, first, last):
    """Stores events first..last of `application` directly (superuser), 10 per aggregate."""
    db.run(
        "INSERT INTO biomero.events (application_name, notification_id, originator_id,"
        " originator_version, topic, state)"
        " SELECT %(app)s, g, md5(%(app)s || '/' || (g / 10))::uuid, g %% 10, %(topic)s,"
        " %(state)s::bytea FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g",
        {"app": application, "first": first, "last": last, "topic": TOPIC, "state": STATE_HEX},
    )


def parallel_load(url, application, first, last, connections=2, chunk=500_000):
    """bulk_load in chunks over `connections` sessions (one per core)."""
    import threading

    chunks = [(start, min(start + chunk - 1, last)) for start in range(first, last + 1, chunk)]
    lock = threading.Lock()

    def work():
        db = Db(url)
        while True:
            with lock:
                if not chunks:
                    break
                start, end = chunks.pop(0)
            bulk_load(db, application, start, end)
        db.conn.close()

    threads = [threading.Thread(target=work) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bulk_load_plain(db, table, count):
    db.run(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state)"
        " SELECT md5('plain/' || (g / 10))::uuid, g %% 10, %(topic)s, %(state)s::bytea"
        " FROM generate_series(1, %(count)s) AS g ORDER BY g",
        {"count": count, "topic": TOPIC, "state": STATE_HEX},
    )


def settle(db, tables=None):
    """VACUUM (ANALYZE) and CHECKPOINT, so that no background work carries into a point."""
    db.run("VACUUM (ANALYZE)" + (" " + ", ".join(tables) if tables else ""))
    db.run("CHECKPOINT")


# --------------------------------------------------------------------------------------------
# pgbench


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


class Point:
    """Accumulates the rounds of one (variant, clients) point."""

    def __init__(self, group, variant, clients, events_per_transaction, **extra):
        self.group = group
        self.variant = variant
        self.clients = clients
        self.events_per_transaction = events_per_transaction
        self.transactions = 0
        self.busy_seconds = 0.0
        self.latencies_us = []
        self.errors = 0
        self.failures = []
        self.extra = extra

    def add(self, transactions, seconds, latencies_us, errors=0):
        self.transactions += transactions
        self.busy_seconds += seconds
        self.latencies_us.extend(latencies_us)
        self.errors += errors

    def result(self):
        values = sorted(self.latencies_us)
        tps = self.transactions / self.busy_seconds if self.busy_seconds else 0.0
        row = {
            "group": self.group,
            "variant": self.variant,
            "clients": self.clients,
            "transactions": self.transactions,
            "seconds": round(self.busy_seconds, 3),
            "tps": round(tps, 1),
            "events_per_s": round(tps * self.events_per_transaction, 1),
            "events_per_transaction": self.events_per_transaction,
            "p50_ms": round(percentile(values, 0.50) / 1000, 3) if values else None,
            "p99_ms": round(percentile(values, 0.99) / 1000, 3) if values else None,
            "mean_ms": round(sum(values) / len(values) / 1000, 3) if values else None,
            "errors": self.errors,
        }
        if self.failures:
            row["failures"] = self.failures[:5]
        row.update(self.extra)
        return row


class Pgbench:
    def __init__(self, executable, url, workdir, config):
        self.executable = executable
        self.url = url
        self.workdir = workdir
        self.config = config
        self.scripts = workdir / "scripts"
        self.logs = workdir / "logs"
        self.scripts.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.counter = 0

    def script(self, name, text):
        path = self.scripts / f"{name}.sql"
        path.write_text(text)
        return path

    def run(self, point, script, seconds, options=""):
        """One pgbench run of `script` added to `point`."""
        self.counter += 1
        prefix = self.logs / f"run{self.counter}"
        clients = point.clients
        # One thread per client: pgbench prepares a pipeline's statements with blocking calls
        # before its first run, and a client waiting there to prepare the INSERT into a table
        # another client has locked would stall that client when they share a thread.
        command = [
            self.executable,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(max(1, int(round(seconds)))),
            "-D",
            f"topic={TOPIC}",
            "-D",
            f"state={STATE_HEX}",
            "--log",
            f"--log-prefix={prefix}",
            "-f",
            str(script),
            self.url,
        ]
        env = dict(os.environ)
        env["PGOPTIONS"] = options
        started = time.monotonic()
        completed = subprocess.run(command, capture_output=True, text=True, env=env)
        output = completed.stdout + completed.stderr
        latencies = []
        failed = 0
        for log_file in sorted(self.logs.glob(f"run{self.counter}.*")):
            with open(log_file) as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) >= 3 and fields[2].isdigit():
                        latencies.append(int(fields[2]))
                    elif len(fields) >= 3:
                        failed += 1
            log_file.unlink()
        processed = re.search(r"number of transactions actually processed: (\d+)", output)
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
        if completed.returncode != 0 or not processed or not tps:
            message = " | ".join(line for line in output.splitlines() if "error" in line.lower())[
                :500
            ]
            point.failures.append(message or f"pgbench exit {completed.returncode}")
            point.errors += 1
            log(f"  pgbench failed for {point.group}/{point.variant}/{clients}: {message}")
            return
        transactions = int(processed.group(1))
        rate = float(tps.group(1))
        busy = transactions / rate if rate else time.monotonic() - started
        point.add(transactions, busy, latencies, failed)


def measure(pgbench, variants, clients, config, group, seconds=None):
    """Runs each variant at `clients` in rounds of alternating order; returns result rows.

    variants: list of (name, script_path, events_per_transaction, pgoptions, extra dict).
    """
    seconds = seconds or config.seconds
    per_round = seconds / config.rounds
    points = [
        Point(group, name, clients, per_tx, **extra)
        for name, _script, per_tx, _options, extra in variants
    ]
    order = list(range(len(variants)))
    for round_index in range(config.rounds):
        sequence = order if round_index % 2 == 0 else list(reversed(order))
        for index in sequence:
            _name, script, _per_tx, options, _extra = variants[index]
            pgbench.run(points[index], script, per_round, options)
    rows = [point.result() for point in points]
    for row in rows:
        log(
            f"  {group:9} {row['variant']:36} c={clients:<3} {row['events_per_s']:>10.1f} ev/s"
            f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms"
            + (f"  errors {row['errors']}" if row["errors"] else "")
        )
    return rows


# --------------------------------------------------------------------------------------------
# Scenario scripts


def per_app(apps, body):
    """A pgbench script running body(i) for application i = client_id % apps."""
    if apps == 1:
        return body(0) + "\n"
    lines = [f"\\set app :client_id % {apps}"]
    for i in range(apps):
        lines.append(("\\if" if i == 0 else "\\elif") + f" :app = {i}")
        lines.append(body(i))
    lines.append("\\endif")
    return "\n".join(lines) + "\n"


# biomero applications: app<i> in serialized mode (the default), conc<i> in concurrent mode.
def serialized_app(i):
    return f"app{i}"


def concurrent_app(i):
    return f"conc{i}"


def record_events_sql(application, size):
    """record_event for one event, record_events for a batch (arrays built server-side)."""

    def body(i):
        if size == 1:
            return (
                f"SELECT biomero.record_event('{application(i)}', gen_random_uuid(), 0,"
                " :topic::text, :state::bytea);"
            )
        return (
            f"SELECT biomero.record_events('{application(i)}',"
            f" ARRAY(SELECT gen_random_uuid() FROM generate_series(1, {size})),"
            f" array_fill(0::bigint, ARRAY[{size}]),"
            f" array_fill(:topic::text, ARRAY[{size}]),"
            f" array_fill(:state::bytea, ARRAY[{size}]));"
        )

    return body


def eventsourcing_sql(size, notify=True):
    """What eventsourcing 9.5's PostgreSQL recorder sends per append (postgres.py,
    PostgresApplicationRecorder.insert_events): in one pipeline BEGIN, SET LOCAL lock_timeout,
    LOCK TABLE … IN EXCLUSIVE MODE, NOTIFY <table>, the INSERT of an array of its composite
    type RETURNING notification_id, and a sync; then COMMIT. With notify=False the same
    without the NOTIFY, to show what NOTIFY costs."""

    def body(i):
        table = f"lock_{serialized_app(i)}_events"
        row = "ROW(gen_random_uuid(), 0, :topic::text, :state::bytea)::stored_event_uuid"
        events = (
            f"ARRAY[{row}]" if size == 1 else f"ARRAY(SELECT {row} FROM generate_series(1, {size}))"
        )
        return "\n".join(
            [
                "\\startpipeline",
                "BEGIN;",
                "SET LOCAL lock_timeout = '0s';",
                f"LOCK TABLE {table} IN EXCLUSIVE MODE;",
                *([f"NOTIFY {table};"] if notify else []),
                f"INSERT INTO {table} AS t (originator_id, originator_version, topic, state)"
                f" SELECT originator_id, originator_version, topic, state FROM unnest({events})"
                " RETURNING notification_id;",
                "\\endpipeline",
                "COMMIT;",
            ]
        )

    return body


def unordered_sql(size):
    """The same table's INSERT alone: no lock, no NOTIFY, no order for readers."""

    def body(i):
        table = f"free_{serialized_app(i)}_events"
        rows = (
            " VALUES (gen_random_uuid(), 0, :topic::text, :state::bytea)"
            if size == 1
            else " SELECT gen_random_uuid(), 0, :topic::text, :state::bytea"
            f" FROM generate_series(1, {size})"
        )
        return (
            f"INSERT INTO {table} (originator_id, originator_version, topic, state)"
            + rows
            + " RETURNING notification_id;"
        )

    return body


def reset_append_tables(db):
    for i in range(APPS):
        db.run(f"TRUNCATE lock_{serialized_app(i)}_events, free_{serialized_app(i)}_events")
    db.run(
        "DELETE FROM biomero.events WHERE application_name LIKE 'app%'"
        " OR application_name LIKE 'conc%'"
    )
    settle(db)


# Variant names, shared with report.py.
SERIALIZED = SERIALIZED
SERIALIZED_QUIET = SERIALIZED_QUIET
CONCURRENT = CONCURRENT
BATCH_SERIALIZED = BATCH_SERIALIZED
BATCH_CONCURRENT = BATCH_CONCURRENT
LOCK = LOCK
LOCK_QUIET = LOCK_QUIET
UNORDERED = UNORDERED


# --------------------------------------------------------------------------------------------
# Scenarios


def create_append_tables(db):
    db.run(STORED_EVENT_DDL)
    for i in range(APPS):
        db.run(events_table_ddl(f"lock_{serialized_app(i)}_events"))
        db.run(events_table_ddl(f"free_{serialized_app(i)}_events"))
        db.run("SELECT biomero.set_append_mode(%s, 'concurrent')", (concurrent_app(i),))


def scenario_appends(db, pgbench, config, results):
    for apps in (1, APPS):
        group = f"append{apps}"
        if not config.wants(group):
            continue
        log(f"single-event appends, {apps} application(s)")
        serialized = pgbench.script(
            f"{group}_serialized", per_app(apps, record_events_sql(serialized_app, 1))
        )
        variants = [
            (SERIALIZED, serialized, 1, "", {"notify": "on"}),
            (SERIALIZED_QUIET, serialized, 1, "-c biomero.notify=off", {"notify": "off"}),
            (
                CONCURRENT,
                pgbench.script(
                    f"{group}_concurrent", per_app(apps, record_events_sql(concurrent_app, 1))
                ),
                1,
                "",
                {},
            ),
            (LOCK, pgbench.script(f"{group}_lock", per_app(apps, eventsourcing_sql(1))), 1, "", {}),
            (
                LOCK_QUIET,
                pgbench.script(
                    f"{group}_lock_quiet", per_app(apps, eventsourcing_sql(1, notify=False))
                ),
                1,
                "",
                {},
            ),
            (
                UNORDERED,
                pgbench.script(f"{group}_unordered", per_app(apps, unordered_sql(1))),
                1,
                "",
                {},
            ),
        ]
        reset_append_tables(db)
        for clients in config.clients:
            results["points"].extend(measure(pgbench, variants, clients, config, group))

    for size in (10, 100):
        group = f"batch{size}"
        if not config.wants(group):
            continue
        log(f"batch appends of {size} events, 1 application")
        variants = [
            (
                BATCH_SERIALIZED,
                pgbench.script(
                    f"{group}_serialized", per_app(1, record_events_sql(serialized_app, size))
                ),
                size,
                "",
                {},
            ),
            (
                BATCH_CONCURRENT,
                pgbench.script(
                    f"{group}_concurrent", per_app(1, record_events_sql(concurrent_app, size))
                ),
                size,
                "",
                {},
            ),
            (
                LOCK,
                pgbench.script(f"{group}_lock", per_app(1, eventsourcing_sql(size))),
                size,
                "",
                {},
            ),
            (
                UNORDERED,
                pgbench.script(f"{group}_unordered", per_app(1, unordered_sql(size))),
                size,
                "",
                {},
            ),
        ]
        reset_append_tables(db)
        for clients in config.batch_clients[size]:
            results["points"].extend(measure(pgbench, variants, clients, config, group))
    reset_append_tables(db)


# Wake-up latency --------------------------------------------------------------------------------


def listener_worker(url, application, barrier, stop, queue):
    """LISTENs and records, per notification of `application`, when it arrived and the last
    id it announces."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("LISTEN biomero_events")
    arrivals = []
    barrier.wait()
    while not stop.is_set():
        if not select.select([conn], [], [], 0.05)[0]:
            continue
        conn.poll()
        arrived = time.monotonic()
        while conn.notifies:
            payload = json.loads(conn.notifies.pop(0).payload)
            if payload["application_name"] == application:
                arrivals.append((arrived, payload["last"]))
    conn.close()
    queue.put(("listener", arrivals))


def probe_worker(url, application, seconds, barrier, queue):
    """Appends one event at a time and records each id with when its commit returned."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    state = psycopg2.Binary(STATE_JSON.encode())
    commits = []
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cur.execute(
            "SELECT biomero.record_event(%s, gen_random_uuid(), 0, %s, %s)",
            (application, TOPIC, state),
        )
        notification_id = cur.fetchone()[0]
        commits.append((notification_id, time.monotonic()))
    conn.close()
    queue.put(("probe", commits))


def wakeup_latencies(commits, arrivals):
    """Per committed id, seconds from its commit returning to the first notification whose
    last id covers it (negative: the listener heard before the writer's answer came back).
    Returns (latencies, ids never covered)."""
    times = [arrived for arrived, _ in arrivals]
    covered = list(accumulate((last for _, last in arrivals), max))
    latencies = []
    missed = 0
    for notification_id, committed in commits:
        index = bisect_left(covered, notification_id)
        if index == len(covered):
            missed += 1
        else:
            latencies.append(times[index] - committed)
    return latencies, missed


def run_wakeup_round(url, pgbench, point, script, application, seconds, wake):
    """pgbench writers and the probe append to `application` while the listeners listen."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(LISTENERS + 2)
    stop = context.Event()
    queue = context.Queue()
    workers = [
        context.Process(target=listener_worker, args=(url, application, barrier, stop, queue))
        for _ in range(LISTENERS)
    ]
    workers.append(
        context.Process(target=probe_worker, args=(url, application, seconds, barrier, queue))
    )
    for worker in workers:
        worker.start()
    barrier.wait()
    pgbench.run(point, script, seconds)
    messages = [queue.get(timeout=seconds + 60)]
    # The last commits' notifications are on their way (the publisher wakes within a
    # millisecond); a second is ample.
    time.sleep(1.0)
    stop.set()
    messages += [queue.get(timeout=60) for _ in range(LISTENERS)]
    for worker in workers:
        worker.join()
    commits = next(body for kind, body in messages if kind == "probe")
    for kind, arrivals in messages:
        if kind == "listener":
            latencies, missed = wakeup_latencies(commits, arrivals)
            wake["latencies"].extend(latencies)
            wake["missed"] += missed
            wake["notifications"] += len(arrivals)
    wake["probe_appends"] += len(commits)


def scenario_wakeup(db, url, pgbench, config, results):
    if not config.wants("wakeup"):
        return
    log(f"wake-up latency: {WAKEUP_WRITERS} writers to 1 application, {LISTENERS} listeners")
    modes = [
        (WAKE_SERIALIZED, serialized_app),
        (WAKE_CONCURRENT, concurrent_app),
    ]
    points = {}
    wakes = {}
    scripts = {}
    for variant, application in modes:
        # pgbench runs all writers but the probe.
        points[variant] = Point(
            "wakeup", variant, WAKEUP_WRITERS - 1, 1, writers=WAKEUP_WRITERS, listeners=LISTENERS
        )
        wakes[variant] = {"latencies": [], "missed": 0, "notifications": 0, "probe_appends": 0}
        scripts[variant] = pgbench.script(
            f"wakeup_{application(0)}", per_app(1, record_events_sql(application, 1))
        )
    reset_append_tables(db)
    order = list(range(len(modes)))
    for round_index in range(config.rounds):
        sequence = order if round_index % 2 == 0 else list(reversed(order))
        for index in sequence:
            variant, application = modes[index]
            run_wakeup_round(
                url,
                pgbench,
                points[variant],
                scripts[variant],
                application(0),
                config.seconds / config.rounds,
                wakes[variant],
            )
    for variant, _application in modes:
        point = points[variant]
        wake = wakes[variant]
        values = sorted(wake["latencies"])
        point.extra.update(
            {
                "wake_p50_ms": round(percentile(values, 0.50) * 1000, 3) if values else None,
                "wake_p99_ms": round(percentile(values, 0.99) * 1000, 3) if values else None,
                "wake_max_ms": round(values[-1] * 1000, 3) if values else None,
                "wake_samples": len(values),
                "wake_missed": wake["missed"],
                "notifications_per_listener": wake["notifications"] // LISTENERS,
                "probe_appends": wake["probe_appends"],
            }
        )
        row = point.result()
        results["points"].append(row)
        log(
            f"  wakeup    {variant:44} writers {row['events_per_s']:>8.1f} ev/s"
            f"  wake-up p50 {row['wake_p50_ms']} ms  p99 {row['wake_p99_ms']} ms"
            f"  samples {row['wake_samples']}  missed {row['wake_missed']}"
        )
    reset_append_tables(db)


# Reads --------------------------------------------------------------------------------------


def scenario_reads(db, pgbench, config, results):
    if not config.wants("read"):
        return
    count = config.read_events
    log(f"reads: 1,000-row pages of {count:,} stored events, per append mode")
    readers = [("serialized", "reader"), ("concurrent", "reader_conc")]
    for _mode, application in readers:
        db.run("DELETE FROM biomero.events WHERE application_name = %s", (application,))
        bulk_load(db, application, 1, count)
    # Switched after the load, so that its counter starts above the loaded ids; one append
    # of its own, so that its reads take the shared-memory path of a live application.
    db.run("SELECT biomero.set_append_mode('reader_conc', 'concurrent')")
    db.run(
        "SELECT biomero.record_event('reader_conc', gen_random_uuid(), 0, %s, %s)",
        (TOPIC, psycopg2.Binary(STATE_JSON.encode())),
    )
    settle(db, ["biomero.events"])
    setter = f"\\set start random(1, {count - 1000})\n"
    variants = []
    for mode, application in readers:
        variants += [
            (
                select_notifications(mode),
                pgbench.script(
                    f"read_select_notifications_{mode}",
                    setter + f"SELECT * FROM biomero.select_notifications('{application}',"
                    " :start, 1000);\n",
                ),
                1000,
                "",
                {"mode": mode},
            ),
            (
                plain_select(mode),
                pgbench.script(
                    f"read_plain_{mode}",
                    setter + "SELECT notification_id, originator_id, originator_version, topic,"
                    f" state FROM biomero.events WHERE application_name = '{application}'"
                    " AND notification_id >= :start ORDER BY notification_id LIMIT 1000;\n",
                ),
                1000,
                "",
                {"mode": mode},
            ),
        ]
    for clients in config.read_clients:
        results["points"].extend(measure(pgbench, variants, clients, config, "read"))
    for _mode, application in readers:
        db.run("DELETE FROM biomero.events WHERE application_name = %s", (application,))


# Follower loops -------------------------------------------------------------------------------

FOLLOWER = "ReadModel"
UPSTREAM = "Upstream"


def follower_worker(url, kind, seconds, barrier, queue):
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    latencies = []
    processed = 0
    errors = 0
    idle = 0
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            if kind == "claim":
                cur.execute("SELECT biomero.claim(%s, %s)", (FOLLOWER, UPSTREAM))
                position = cur.fetchone()[0]
                cur.execute(
                    "SELECT notification_id, topic, state FROM biomero.select_notifications("
                    "%s, %s, 1, inclusive_of_start => false)",
                    (UPSTREAM, position),
                )
            else:
                cur.execute(
                    "SELECT coalesce(max(notification_id), 0) FROM naive_tracking"
                    " WHERE application_name = %s",
                    (UPSTREAM,),
                )
                position = cur.fetchone()[0]
                cur.execute(
                    "SELECT notification_id, topic, state FROM naive_upstream_events"
                    " WHERE notification_id > %s ORDER BY notification_id LIMIT 1",
                    (position,),
                )
            row = cur.fetchone()
            if row is None:
                conn.rollback()
                idle += 1
                continue
            notification_id, topic, _state = row
            cur.execute(
                "INSERT INTO read_model (follower, notification_id, topic) VALUES (%s, %s, %s)",
                (kind, notification_id, topic),
            )
            if kind == "claim":
                cur.execute(
                    "SELECT biomero.record_tracking(%s, %s, %s)",
                    (FOLLOWER, UPSTREAM, notification_id),
                )
            else:
                cur.execute(
                    "INSERT INTO naive_tracking (application_name, notification_id)"
                    " VALUES (%s, %s)",
                    (UPSTREAM, notification_id),
                )
            conn.commit()
            processed += 1
            latencies.append(int((time.perf_counter() - started) * 1_000_000))
        except psycopg2.errors.UniqueViolation:
            conn.rollback()
            errors += 1
        except psycopg2.Error as error:
            conn.rollback()
            errors += 1
            queue.put(("error", str(error).strip()[:200]))
    conn.close()
    queue.put(("done", processed, errors, idle, latencies))


def run_follower_point(url, kind, processes, seconds, point):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    queue = context.Queue()
    workers = [
        context.Process(target=follower_worker, args=(url, kind, seconds, barrier, queue))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    done = 0
    processed = 0
    errors = 0
    latencies = []
    while done < processes:
        message = queue.get(timeout=seconds + 120)
        if message[0] == "error":
            if len(point.failures) < 5:
                point.failures.append(message[1])
            continue
        done += 1
        processed += message[1]
        errors += message[2]
        latencies.extend(message[4])
    for worker in workers:
        worker.join()
    # Every process runs for `seconds` after the common start.
    point.add(processed, seconds, latencies, errors)


def scenario_followers(db, url, config, results):
    if not config.wants("follower"):
        return
    count = config.follower_events
    log(f"follower loops over {count:,} stored upstream events")
    db.run("DELETE FROM biomero.events WHERE application_name = %s", (UPSTREAM,))
    bulk_load(db, UPSTREAM, 1, count)
    db.run(events_table_ddl("naive_upstream_events"))
    bulk_load_plain(db, "naive_upstream_events", count)
    db.run("DROP TABLE IF EXISTS naive_tracking, read_model")
    # eventsourcing 9.2/9.3's multi-row tracking table.
    db.run(
        "CREATE TABLE naive_tracking (application_name text NOT NULL,"
        " notification_id bigint NOT NULL, PRIMARY KEY (application_name, notification_id))"
    )
    db.run(
        "CREATE TABLE read_model (id bigserial PRIMARY KEY, follower text NOT NULL,"
        " notification_id bigint NOT NULL, topic text NOT NULL,"
        " processed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    settle(db)
    for processes in config.follower_processes:
        points = {
            "claim": Point("follower", CLAIM, processes, 1),
            "naive": Point("follower", NAIVE, processes, 1),
        }
        order = ["claim", "naive"]
        for round_index in range(config.rounds):
            sequence = order if round_index % 2 == 0 else list(reversed(order))
            for kind in sequence:
                db.run("DELETE FROM biomero.tracking WHERE application_name = %s", (FOLLOWER,))
                db.run("TRUNCATE naive_tracking, read_model")
                run_follower_point(
                    url, kind, processes, config.seconds / config.rounds, points[kind]
                )
                duplicates = db.one(
                    "SELECT count(*) FROM (SELECT notification_id FROM read_model"
                    " GROUP BY notification_id HAVING count(*) > 1) AS d"
                )
                skipped = db.one(
                    "SELECT coalesce(max(notification_id), 0) - count(DISTINCT notification_id)"
                    " FROM read_model"
                )
                extra = points[kind].extra
                extra["duplicates"] = extra.get("duplicates", 0) + duplicates
                extra["skipped"] = extra.get("skipped", 0) + skipped
        for kind in order:
            row = points[kind].result()
            results["points"].append(row)
            log(
                f"  follower  {row['variant']:36} p={processes:<3}"
                f" {row['events_per_s']:>10.1f} ev/s"
                f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  errors {row['errors']}"
                f"  duplicates {row['duplicates']}  skipped {row['skipped']}"
            )
    db.run("DELETE FROM biomero.events WHERE application_name = %s", (UPSTREAM,))
    db.run("DELETE FROM biomero.tracking WHERE application_name = %s", (FOLLOWER,))
    db.run("DROP TABLE IF EXISTS naive_tracking, read_model, naive_upstream_events")


# Growth ---------------------------------------------------------------------------------------

GROWN = "grown"


def scenario_growth(db, pgbench, config, results):
    if not config.wants("growth"):
        return
    db.run(events_table_ddl("growth_control_events"))
    append_variants = [
        (
            "record_event",
            pgbench.script(
                "growth_record_event",
                f"SELECT biomero.record_event('{GROWN}', gen_random_uuid(), 0, :topic::text,"
                " :state::bytea);\n",
            ),
            1,
            "",
            {},
        ),
        (
            "control: unordered INSERT",
            pgbench.script(
                "growth_control",
                "INSERT INTO growth_control_events"
                " (originator_id, originator_version, topic, state)"
                " VALUES (gen_random_uuid(), 0, :topic::text, :state::bytea)"
                " RETURNING notification_id;\n",
            ),
            1,
            "",
            {},
        ),
    ]
    loaded = 0
    for level in config.growth_levels:
        head = db.one(
            "SELECT coalesce(max(notification_id), 0) FROM biomero.events"
            " WHERE application_name = %s",
            (GROWN,),
        )
        if level > loaded:
            log(f"growth: bulk-loading {level - loaded:,} events (store of {level:,})")
            started = time.monotonic()
            parallel_load(db.url, GROWN, head + 1, head + level - loaded)
            loaded = level
            results["meta"].setdefault("load_seconds", {})[str(level)] = round(
                time.monotonic() - started, 1
            )
        db.run("TRUNCATE growth_control_events")
        started = time.monotonic()
        settle(db)
        stored = db.one("SELECT count(*) FROM biomero.events WHERE application_name = %s", (GROWN,))
        size = db.one("SELECT pg_size_pretty(pg_total_relation_size('biomero.events'))")
        log(
            f"growth: {stored:,} events stored ({size} with indexes;"
            f" vacuum+checkpoint {time.monotonic() - started:.0f} s)"
        )
        # A short unmeasured warm-up, then the append latency.
        measure(pgbench, append_variants, 1, config, "warm-up", seconds=2 * config.rounds)
        rows = measure(pgbench, append_variants, 1, config, "growth", seconds=config.growth_seconds)
        head = db.one(
            "SELECT coalesce(max(notification_id), 0) FROM biomero.events"
            " WHERE application_name = %s",
            (GROWN,),
        )
        if head < 2000:
            bulk_load(db, GROWN, head + 1, 2000)
            head = 2000
        # Statistics that know the application's rows (at 0 it holds only what the append step
        # wrote), so that both readers get the index plan at every size.
        db.run("ANALYZE biomero.events")
        setter = f"\\set start random(1, {head - 1000})\n"
        read_variants = [
            (
                "select_notifications page",
                pgbench.script(
                    f"growth_page_{level}",
                    setter
                    + f"SELECT * FROM biomero.select_notifications('{GROWN}', :start, 1000);\n",
                ),
                1000,
                "",
                {},
            ),
            (
                "plain SELECT page",
                pgbench.script(
                    f"growth_plain_{level}",
                    setter
                    + "SELECT notification_id, originator_id, originator_version, topic, state"
                    f" FROM biomero.events WHERE application_name = '{GROWN}'"
                    " AND notification_id >= :start ORDER BY notification_id LIMIT 1000;\n",
                ),
                1000,
                "",
                {},
            ),
        ]
        rows += measure(pgbench, read_variants, 1, config, "growth", seconds=config.growth_seconds)
        for row in rows:
            row["stored"] = level
            row["stored_actual"] = stored
        results["points"].extend(rows)
    db.run("DROP TABLE IF EXISTS growth_control_events")


# --------------------------------------------------------------------------------------------
# Machine and server description


SETTINGS = [
    "server_version",
    "shared_buffers",
    "max_connections",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "commit_delay",
    "work_mem",
    "effective_cache_size",
    "autovacuum",
    "jit",
    "default_transaction_isolation",
    "shared_preload_libraries",
    "max_worker_processes",
    "biomero.notify",
]


def describe_server(db):
    # Loads the library in this session, so that its settings (biomero.notify) exist.
    db.run("SELECT biomero.max_notification_id('bench')")
    settings = {}
    for name in SETTINGS:
        try:
            settings[name] = db.one("SELECT current_setting(%s)", (name,))
        except psycopg2.Error:
            settings[name] = None
    changed = db.run(
        "SELECT name, current_setting(name) FROM pg_settings"
        " WHERE source NOT IN ('default', 'override', 'client', 'session')"
        " ORDER BY name"
    )
    return settings, {name: value for name, value in changed}


def describe_machine(pgbench):
    memory = None
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = None
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory": memory,
        "cpu": cpu,
        "kernel": platform.release(),
        "os": subprocess.run(
            ["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"], capture_output=True, text=True
        ).stdout.strip(),
        "pgbench": subprocess.run(
            [pgbench, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "python": platform.python_version(),
        "psycopg2": psycopg2.__version__.split()[0],
    }


# --------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pgbench", required=True, help="the server's pgbench")
    parser.add_argument("--library-info", default="{}")
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()

    config = Config(os.environ.get("BENCH_QUICK") == "1")
    out = Path(arguments.out)
    workdir = out.parent / (out.stem + ".work")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    db = Db(arguments.url)
    setup_sql = os.environ.get("BENCH_SETUP_SQL")
    if setup_sql:
        # For trying a change to the extension's SQL objects on the throwaway cluster.
        log(f"running {setup_sql} in the benchmark database")
        db.run(Path(setup_sql).read_text())
    extension_version = db.one(
        "SELECT extversion FROM pg_extension WHERE extname = 'biomero_tracking'"
    )
    settings, changed = describe_server(db)
    results = {
        "meta": {
            "quick": config.quick,
            "seconds_per_point": config.seconds,
            "rounds": config.rounds,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": describe_machine(arguments.pgbench),
            "settings": settings,
            "changed_settings": changed,
            "library": json.loads(arguments.library_info),
            "extension_version": extension_version,
            "setup_sql": setup_sql,
            "state_bytes": len(STATE_JSON),
            "topic": TOPIC,
            "read_events": config.read_events,
            "follower_events": config.follower_events,
        },
        "points": [],
    }
    log("server settings:")
    for name, value in settings.items():
        log(f"  {name} = {value}")
    log(
        "settings changed from PostgreSQL's defaults: "
        + ", ".join(f"{name}={value}" for name, value in changed.items())
    )
    started = time.monotonic()
    pgbench = Pgbench(arguments.pgbench, arguments.url, workdir, config)

    def save():
        results["meta"]["elapsed_seconds"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(results, indent=1))

    create_append_tables(db)
    scenario_appends(db, pgbench, config, results)
    save()
    scenario_wakeup(db, arguments.url, pgbench, config, results)
    save()
    scenario_followers(db, arguments.url, config, results)
    save()
    scenario_reads(db, pgbench, config, results)
    save()
    scenario_growth(db, pgbench, config, results)
    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save()
    log(f"results written to {out} ({results['meta']['elapsed_seconds']:.0f} s)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
