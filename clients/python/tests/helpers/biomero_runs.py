"""Runs of BIOMERO's own code in OS processes (tests/helpers/biomero_worker.py), and what
they leave in the database: the leader's events, the read models, the followers' positions,
and the read models one process builds from the same events, to compare with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import support

FOLLOWERS = ("JobAccounting", "JobProgress", "WorkflowProgress", "WorkflowAnalytics")
#: BIOMERO's read-model tables and their primary keys.
READ_MODELS = {
    "biomero_job_view": "slurm_job_id",
    "biomero_job_progress_view": "slurm_job_id",
    "biomero_workflow_progress_view": "workflow_id",
    "biomero_task_execution": "task_id",
}
WORKER = Path(__file__).parent / "biomero_worker.py"
#: The workers' audit of policy runs (see tests/helpers/biomero_worker.py).
AUDIT_DDL = (
    "CREATE TABLE biomero_test_processed (follower text NOT NULL, "
    "notification_id bigint NOT NULL, pid integer NOT NULL)"
)
TIMEOUT = 180
PROCESSES = 4
WORKFLOWS_PER_PROCESS = 4


def start_worker(
    site: Path, stack: str, url: str, index: int, workflows: str, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), stack, url, str(index), workflows],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join([str(site), str(WORKER.parent)]),
        },
    )


def run_processes(
    site: Path,
    stack: str,
    url: str,
    processes: int = PROCESSES,
    workflows: int = WORKFLOWS_PER_PROCESS,
    **env: str,
) -> list[dict[str, Any]]:
    # A first process alone builds the system once (BIOMERO creates its view tables then,
    # the stock stack its own tables), so that the concurrent ones race on processing only.
    warm_up = start_worker(site, stack, url, 99, "0", **env)
    try:
        out, err = warm_up.communicate("go\n", timeout=TIMEOUT)
    finally:
        support.kill_unfinished([warm_up])
    assert warm_up.returncode == 0, f"BIOMERO could not start:\n{err}"
    assert support.last_json(out)["biomero"].startswith(str(site)), "imported another BIOMERO"

    workers = [start_worker(site, stack, url, i, str(workflows), **env) for i in range(processes)]
    return support.run_together(workers, TIMEOUT)


def leader_events(database: str, stack: str) -> list[tuple[str, int, str, bytes]]:
    query = (
        "SELECT originator_id::text, originator_version, topic, state FROM biomero.events "
        "WHERE application_name = 'WorkflowTracker' ORDER BY notification_id"
        if stack == "biomero_tracking"
        else "SELECT originator_id::text, originator_version, topic, state "
        "FROM workflowtracker_events ORDER BY id"
    )
    with support.admin(database) as cursor:
        cursor.execute(query)
        return [(row[0], row[1], row[2], bytes(row[3])) for row in cursor.fetchall()]


def read_models(database: str) -> dict[str, dict[Any, tuple[Any, ...]]]:
    tables: dict[str, dict[Any, tuple[Any, ...]]] = {}
    with support.admin(database) as cursor:
        for table, key in READ_MODELS.items():
            cursor.execute(f"SELECT * FROM {table} ORDER BY {key}")  # noqa: S608
            columns = [column.name for column in cursor.description]
            position = columns.index(key)
            tables[table] = {row[position]: tuple(row) for row in cursor.fetchall()}
    return tables


def reference_read_models(
    site: Path, events: list[tuple[str, int, str, bytes]], start: int | None = None
) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """What BIOMERO's four views build in one process from the same leader events (from
    ``start`` as ``pull_and_process`` takes it, with every event in the log)."""
    with support.scratch_database("biomero_reference", extension=True) as database:
        with support.admin(database) as cursor:
            cursor.execute(AUDIT_DDL)
            cursor.execute(
                "SELECT biomero.record_events('WorkflowTracker', %s::uuid[], %s::bigint[], "
                "%s::text[], %s::bytea[])",
                (
                    [e[0] for e in events],
                    [e[1] for e in events],
                    [e[2] for e in events],
                    [psycopg2.Binary(e[3]) for e in events],
                ),
            )
        mode = "reference" if start is None else f"reference:{start}"
        worker = start_worker(site, "biomero_tracking", support.url(database), 0, mode)
        try:
            out, err = worker.communicate("", timeout=TIMEOUT)
        finally:
            support.kill_unfinished([worker])
        assert worker.returncode == 0, err
        return read_models(database)


def wrong_rows(
    actual: dict[str, dict[Any, tuple[Any, ...]]],
    expected: dict[str, dict[Any, tuple[Any, ...]]],
) -> tuple[int, int]:
    """(rows missing, extra or different, rows expected), over the four tables."""
    wrong = 0
    for table, rows in expected.items():
        keys = set(rows) | set(actual[table])
        wrong += sum(actual[table].get(key) != rows.get(key) for key in keys)
    return wrong, sum(len(rows) for rows in expected.values())


def positions(database: str, stack: str, suffix: str = "") -> dict[str, int | None]:
    """Each follower's position after WorkflowTracker, as ``stack`` stores it (in the stock
    tracking tables named with ``suffix``, for renamed ones)."""
    found: dict[str, int | None] = {}
    with support.admin(database) as cursor:
        for follower in FOLLOWERS:
            if stack == "biomero_tracking":
                cursor.execute(
                    "SELECT notification_id FROM biomero.tracking WHERE application_name = %s "
                    "AND upstream_application_name = 'WorkflowTracker'",
                    (follower,),
                )
            else:
                cursor.execute(
                    f"SELECT max(notification_id) FROM {follower.lower()}_tracking{suffix} "  # noqa: S608
                    "WHERE application_name = 'WorkflowTracker'"
                )
            row = cursor.fetchone()
            found[follower] = None if row is None else row[0]
    return found
