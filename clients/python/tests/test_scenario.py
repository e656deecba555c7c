"""BIOMERO's multi-process race, on biomero_tracking and on stock eventsourcing-sqlalchemy.

Four OS processes share one database. Each builds its own system — the WorkflowTracker
leader and the four view followers, run by a SingleThreadedRunner on a scoped session, as a
BIOMERO SlurmClient does — and runs 44 commands (4 workflows of 11) at the same time as
the others, without retries.

On biomero_tracking — with the scoped session, and again from SQLALCHEMY_URL alone with
policies writing through ``processing_session`` — the test asserts: no command raised,
every command's events are stored once, every follower processed every notification
exactly once and its read model is right, and every tracking position equals the head.
The same scenario on stock eventsourcing-sqlalchemy (its own tables, another database of
the same cluster) must show the race — commands that raised or notifications processed
more than once — so the scenario is known to be able to see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import support

PROCESSES = 4
WORKFLOWS_PER_PROCESS = 4
COMMANDS_PER_WORKFLOW = 11
EVENTS_PER_COMMAND = {"add_task_to_workflow": 2}  # every other command saves one event
FOLLOWERS = ("JobAccounting", "JobProgress", "WorkflowProgress", "WorkflowAnalytics")
WORKER = Path(__file__).parent / "helpers" / "scenario_worker.py"
TIMEOUT = 300


def _worker(stack: str, url: str, index: int, workflows: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), stack, url, str(index), str(workflows)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(WORKER.parent)},
    )


def run_processes(stack: str, url: str) -> list[dict[str, Any]]:
    # A first process alone builds the system once (the stock stack creates its tables
    # then), so that the concurrent ones race on processing only.
    warm_up = _worker(stack, url, 99, 0)
    try:
        out, err = warm_up.communicate("go\n", timeout=TIMEOUT)
    finally:
        support.kill_unfinished([warm_up])
    assert warm_up.returncode == 0, err

    workers = [_worker(stack, url, index, WORKFLOWS_PER_PROCESS) for index in range(PROCESSES)]
    return support.run_together(workers, TIMEOUT)


def prepare(prefix: str, *, extension: bool) -> str:
    """A database of this run (dropped at the end of the module) with the read models."""
    database = support.create_database(prefix, extension=extension)
    DATABASES.append(database)
    import scenario_views

    with support.admin(database) as cursor:
        cursor.execute(scenario_views.READ_MODEL_DDL)
    return database


DATABASES: list[str] = []


def expected_events(results: list[dict[str, Any]]) -> int:
    return sum(
        EVENTS_PER_COMMAND.get(name, 1) for result in results for name in result["succeeded"]
    )


def read_model_faults(database: str) -> int:
    """Rows missing or wrong in the four read models, against what the commands did."""
    faults = 0
    with support.admin(database) as cursor:
        for index in range(PROCESSES):
            for number in range(WORKFLOWS_PER_PROCESS):
                user, group = 100 + index, 10 + number % 3
                fails = number % 4 == 3
                job_id = 1000 * (index + 1) + number
                task_name = f"task-{number % 2}"
                final = "FAILED" if fails else "COMPLETED"
                cursor.execute(
                    'SELECT "user", "group" FROM biomero_job_view WHERE slurm_job_id = %s',
                    (job_id,),
                )
                faults += cursor.fetchall() != [(user, group)]
                cursor.execute(
                    "SELECT status, progress FROM biomero_job_progress_view "
                    "WHERE slurm_job_id = %s",
                    (job_id,),
                )
                faults += cursor.fetchall() != [(final, "50%")]
                cursor.execute(
                    'SELECT status, progress, "user", "group", task '
                    "FROM biomero_workflow_progress_view WHERE name = %s",
                    (f"wf-{index}-{number}",),
                )
                expected = ("FAILED", "50%") if fails else ("DONE", "100%")
                faults += cursor.fetchall() != [(*expected, user, group, task_name)]
                cursor.execute(
                    "SELECT e.status, e.user_id, e.group_id, e.end_time IS NOT NULL, "
                    "e.error_type FROM biomero_task_execution e "
                    "JOIN scenario_jp_task t USING (task_id) WHERE t.slurm_job_id = %s",
                    (job_id,),
                )
                error = "exit code 1" if fails else None
                faults += cursor.fetchall() != [(final, user, group, True, error)]
    return faults


def processing_figures(database: str, head: int) -> tuple[int, int, dict[str, int]]:
    """(duplicate processings, (follower, notification) pairs never processed, distinct
    notifications processed per follower)."""
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM scenario_processed "
            "GROUP BY follower, notification_id) AS c"
        )
        duplicates = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT follower, count(DISTINCT notification_id) FROM scenario_processed "
            "GROUP BY follower"
        )
        processed = dict(cursor.fetchall())
    missing = sum(head - processed.get(follower, 0) for follower in FOLLOWERS)
    return duplicates, missing, processed


def report(stack: str, figures: dict[str, Any]) -> None:
    line = (
        f"scenario [{stack}]: {figures['processes']} processes, {figures['commands']} commands, "
        f"{figures['errors']} raised, {figures['events']} leader events stored "
        f"(all commands done once: {figures['all_events']}; the successful ones imply "
        f"{figures['expected_events']}), "
        f"{figures['initiated']} WorkflowInitiated for {figures['workflows']} workflows, "
        f"{figures['duplicates']} duplicate processings, {figures['missing']} unprocessed "
        f"(follower, notification) pairs, {figures['faults']} wrong read-model rows, "
        f"positions {figures['positions']} (head {figures['head']}), "
        f"{figures['seconds']}s"
    )
    support.SCENARIO_FIGURES.append(line)
    print("\n" + line)
    kinds = Counter(error.split(": ", 1)[1] for error in figures["all_errors"])
    for kind, count in kinds.most_common(5):
        print(f"    {count} x {kind}")


def scenario_figures(
    database: str,
    results: list[dict[str, Any]],
    events: int,
    head: int,
    initiated: int,
    positions: dict[str, int],
    duplicates: int,
    missing: int,
) -> dict[str, Any]:
    """What a scenario run did, as report() prints it and the tests check it."""
    errors = [error for result in results for error in result["errors"]]
    return {
        "processes": PROCESSES,
        "commands": sum(result["commands"] for result in results),
        "errors": len(errors),
        "events": events,
        "expected_events": expected_events(results),
        "all_events": PROCESSES * WORKFLOWS_PER_PROCESS * (COMMANDS_PER_WORKFLOW + 1),
        "initiated": initiated,
        "workflows": PROCESSES * WORKFLOWS_PER_PROCESS,
        "duplicates": duplicates,
        "missing": missing,
        "faults": read_model_faults(database),
        "positions": positions,
        "head": head,
        "seconds": max(result["seconds"] for result in results),
        "all_errors": errors,
    }


@pytest.mark.parametrize(
    ("stack", "configuration"),
    [("biomero", "scoped session"), ("biomero-url", "SQLALCHEMY_URL")],
)
def test_biomero_tracking_processes_every_notification_exactly_once(
    stack: str, configuration: str
) -> None:
    database = prepare(f"scenario_{stack.replace('-', '_')}", extension=True)
    results = run_processes(stack, support.url(database))
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(max(notification_id), 0), count(*) FILTER "
            "(WHERE topic LIKE '%WorkflowInitiated') FROM biomero.events "
            "WHERE application_name = 'WorkflowTracker'"
        )
        events, head, initiated = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM (SELECT originator_id FROM biomero.events "
            "WHERE application_name = 'WorkflowTracker' GROUP BY originator_id "
            "HAVING max(originator_version) + 1 <> count(*)) AS broken"
        )
        broken_sequences = cursor.fetchone()[0]
        cursor.execute(
            "SELECT application_name, notification_id FROM biomero.tracking "
            "WHERE upstream_application_name = 'WorkflowTracker'"
        )
        positions = dict(cursor.fetchall())
    duplicates, missing, processed = processing_figures(database, head)
    figures = scenario_figures(
        database, results, events, head, initiated, positions, duplicates, missing
    )
    errors = figures["all_errors"]
    report(f"biomero_tracking, {configuration}", figures)

    assert figures["commands"] == PROCESSES * WORKFLOWS_PER_PROCESS * COMMANDS_PER_WORKFLOW
    assert errors == []
    assert events == figures["expected_events"] == head
    assert events == figures["all_events"]
    assert initiated == figures["workflows"]
    assert broken_sequences == 0
    assert duplicates == 0
    assert processed == {follower: head for follower in FOLLOWERS}
    assert missing == 0
    assert figures["faults"] == 0
    assert positions == {follower: head for follower in FOLLOWERS}
    # Processing was shared: more than one process won notifications of some follower.
    with support.admin(database) as cursor:
        cursor.execute("SELECT count(DISTINCT pid) FROM scenario_processed")
        assert cursor.fetchone()[0] > 1


def test_stock_eventsourcing_sqlalchemy_shows_the_race() -> None:
    database = prepare("scenario_stock", extension=False)
    results = run_processes("stock", support.url(database))
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(max(id), 0), count(*) FILTER "
            "(WHERE topic LIKE '%WorkflowInitiated') FROM workflowtracker_events"
        )
        events, head, initiated = cursor.fetchone()
        positions = {}
        for follower in FOLLOWERS:
            cursor.execute(
                f"SELECT max(notification_id) FROM {follower.lower()}_tracking "  # noqa: S608
                "WHERE application_name = 'WorkflowTracker'"
            )
            positions[follower] = cursor.fetchone()[0]
    duplicates, missing, _ = processing_figures(database, head)
    figures = scenario_figures(
        database, results, events, head, initiated, positions, duplicates, missing
    )
    report("stock eventsourcing-sqlalchemy, scoped session", figures)
    assert figures["errors"] > 0 or duplicates > 0, "the scenario did not see the race"


@pytest.fixture(scope="module", autouse=True)
def _drop_databases() -> Any:
    yield
    for database in DATABASES:
        support.drop_database(database)
