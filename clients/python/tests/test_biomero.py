"""BIOMERO's own code (2.8.3, and the pre-release 2.9.0b15), from the package registry, on
one database shared by four OS processes, each running 44 workflow commands at the same
time as the others.

Three runs, each against its own database:

1. the stock stack (eventsourcing-sqlalchemy 1.0.1, BIOMERO unpatched), the control: it
   must show the race;
2. ``PERSISTENCE_MODULE=biomero_tracking`` with only the patch's first line (BIOMERO's
   followers still derive from eventsourcing's ProcessApplication): no command may raise
   and no leader event may be stored twice;
3. the shipped patch (both lines): no command raises, the leader stores exactly the events
   the commands imply, every (follower, notification) is processed for real exactly once,
   every position is the head, and every read-model table equals, row by row, what one
   process replaying the same leader events builds.

Each worker (tests/helpers/biomero_worker.py) runs BIOMERO's ``initialize_analytics_system()`` on a
real SlurmClient and drives ``client.workflowTracker``; the patch is applied to a copy of
the installed package (tests/helpers/biomero_patch.py) that the worker imports first.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import support
from biomero_patch import RELEASES, biomero_copy, release_site
from biomero_runs import (
    AUDIT_DDL,
    FOLLOWERS,
    PROCESSES,
    TIMEOUT,
    WORKFLOWS_PER_PROCESS,
    leader_events,
    positions,
    read_models,
    reference_read_models,
    run_processes,
    start_worker,
    wrong_rows,
)

COMMANDS_PER_WORKFLOW = 11
EVENTS_PER_COMMAND = {"add_task_to_workflow": 2}  # every other command saves one event

PATCHED = ("biomero/slurm_client.py", "biomero/views.py")
FIRST_LINE_ONLY = ("biomero/slurm_client.py",)


@pytest.fixture(scope="module", params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def biomero_copies(tmp_path_factory: pytest.TempPathFactory, release: str) -> dict[str, Path]:
    """BIOMERO ``release`` as released, and two copies: patched, and patched without the line
    that changes the followers' base class."""
    root = tmp_path_factory.mktemp("biomero")
    return {
        "stock": release_site(release),
        "patched": biomero_copy(root / "patched", PATCHED, release),
        "first-line": biomero_copy(root / "first-line", FIRST_LINE_ONLY, release),
    }


def processing_figures(database: str, head: int) -> tuple[int, int, int]:
    """(duplicate processings, (follower, notification) pairs never processed, processes
    that processed something for real)."""
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT follower, notification_id, count(*) FROM biomero_test_processed "
            "GROUP BY follower, notification_id"
        )
        counts = {(follower, n): c for follower, n, c in cursor.fetchall()}
        cursor.execute("SELECT count(DISTINCT pid) FROM biomero_test_processed")
        processors = int(cursor.fetchone()[0])
    duplicates = sum(c - 1 for c in counts.values())
    missing = sum((follower, n) not in counts for follower in FOLLOWERS for n in range(1, head + 1))
    return duplicates, missing, processors


def biomero_run(copies: dict[str, Path], variant: str, stack: str, label: str) -> dict[str, Any]:
    """Runs the four processes on a database of their own; returns the figures."""
    with support.scratch_database("biomero_run", extension=stack == "biomero_tracking") as database:
        with support.admin(database) as cursor:
            cursor.execute(AUDIT_DDL)
        started = time.monotonic()
        results = run_processes(copies[variant], stack, support.url(database))
        seconds = time.monotonic() - started
        events = leader_events(database, stack)
        head = len(events) if stack == "biomero_tracking" else None
        if head is None:
            with support.admin(database) as cursor:
                cursor.execute("SELECT coalesce(max(id), 0) FROM workflowtracker_events")
                head = int(cursor.fetchone()[0])
        duplicates, missing, processors = processing_figures(database, head)
        actual = read_models(database)
        found_positions = positions(database, stack)
    expected = reference_read_models(copies["patched"], events)
    wrong, total_rows = wrong_rows(actual, expected)
    errors = [error for result in results for error in result["errors"]]
    figures: dict[str, Any] = {
        "label": label,
        "commands": sum(r["commands"] for r in results),
        "planned": PROCESSES * WORKFLOWS_PER_PROCESS * COMMANDS_PER_WORKFLOW,
        "skipped": sum(r["skipped"] for r in results),
        "raised": len(errors),
        "errors": errors,
        "events": len(events),
        "implied": sum(EVENTS_PER_COMMAND.get(name, 1) for r in results for name in r["succeeded"]),
        "initiated": sum(topic.endswith("WorkflowInitiated") for _, _, topic, _ in events),
        "initiated_ok": sum(r["succeeded"].count("initiate_workflow") for r in results),
        "head": head,
        "duplicates": duplicates,
        "missing": missing,
        "processors": processors,
        "positions": found_positions,
        "wrong": wrong,
        "rows": total_rows,
        "unknown_workflow": sum(r["logged"]["unknown_workflow"] for r in results),
        "retries": sum(r["logged"]["retries"] for r in results),
        "unclaimed": [r["logged"]["unclaimed"] for r in results],
        "unclaimed_names_base": all(r["logged"]["unclaimed_names_base"] for r in results),
        "replay_failures": sum(r["logged"]["replay_failures"] for r in results),
        "seconds": round(seconds, 1),
    }
    report(figures, results)
    return figures


def report(figures: dict[str, Any], results: list[dict[str, Any]]) -> None:
    line = (
        f"BIOMERO {figures['label']}: {PROCESSES} processes, {figures['commands']} "
        f"commands ({figures['skipped']} skipped), {figures['raised']} raised, "
        f"{figures['events']} leader events stored where the successful commands imply "
        f"{figures['implied']} ({figures['initiated']} WorkflowInitiated for "
        f"{figures['initiated_ok']} successful initiate_workflow), "
        f"{figures['duplicates']} duplicate processings, {figures['missing']} "
        f"(follower, notification) pairs never processed, {figures['wrong']} of "
        f"{figures['rows']} read-model rows wrong, positions {figures['positions']} "
        f"(head {figures['head']}), {figures['unknown_workflow']} 'unknown workflow' "
        f"warnings, {figures['retries']} BIOMERO retries, {figures['seconds']}s"
    )
    support.SCENARIO_FIGURES.append(line)
    print("\n" + line)
    for kind, count in Counter(e.split(": ", 1)[1] for e in figures["errors"]).most_common(4):
        print(f"    {count} x {kind}")
    for result in results:
        for kind, count in result["logged"]["by_kind"][:3]:
            print(f"    [{result['index']}] logged {count} x {kind}")


def test_stock_stack_shows_the_race(biomero_copies: dict[str, Path], release: str) -> None:
    figures = biomero_run(
        biomero_copies, "stock", "eventsourcing_sqlalchemy", f"{release} [stock stack]"
    )
    assert figures["commands"] + figures["skipped"] == figures["planned"]
    raced = (
        figures["raised"]
        + (figures["events"] - figures["implied"])
        + figures["duplicates"]
        + figures["wrong"]
    )
    assert raced > 0, "the control run did not show the race"


def test_library_followers_on_biomero_tracking_raise_nothing(
    biomero_copies: dict[str, Path], release: str
) -> None:
    figures = biomero_run(
        biomero_copies,
        "first-line",
        "biomero_tracking",
        f"{release} [biomero_tracking, library followers (patch without the base-class line)]",
    )
    assert figures["commands"] == figures["planned"]
    assert figures["errors"] == []
    assert figures["events"] == figures["implied"]
    assert figures["initiated"] == PROCESSES * WORKFLOWS_PER_PROCESS
    # Processing is at least once here: where a policy ran again for a notification
    # another process had recorded, its follower warned, once per process, naming the
    # claiming base class.
    if figures["duplicates"]:
        assert any(figures["unclaimed"])
    for warned in figures["unclaimed"]:
        assert len(warned) == len(set(warned))
        assert set(warned) <= set(FOLLOWERS)
    assert figures["unclaimed_names_base"]


def test_patched_biomero_processes_every_notification_exactly_once(
    biomero_copies: dict[str, Path], release: str
) -> None:
    figures = biomero_run(
        biomero_copies, "patched", "biomero_tracking", f"{release} [biomero_tracking, patched]"
    )
    assert figures["commands"] == figures["planned"]
    assert figures["errors"] == []
    assert figures["events"] == figures["implied"] == figures["head"]
    assert figures["initiated"] == PROCESSES * WORKFLOWS_PER_PROCESS
    assert figures["duplicates"] == 0
    assert figures["missing"] == 0
    assert figures["positions"] == dict.fromkeys(FOLLOWERS, figures["head"])
    assert figures["wrong"] == 0
    assert figures["rows"] > 0
    assert figures["unknown_workflow"] == 0
    assert figures["replay_failures"] == 0
    # Processing was shared: more than one process processed notifications for real.
    assert figures["processors"] > 1


def _reset(site: Path, url: str, **env: str) -> dict[str, Any]:
    worker = start_worker(site, "biomero_tracking", url, 0, "reset", **env)
    try:
        out, err = worker.communicate("", timeout=TIMEOUT)
    finally:
        support.kill_unfinished([worker])
    assert worker.returncode == 0, f"BIOMERO's reset failed:\n{err}"
    return support.last_json(out)


def test_patched_biomero_resets_and_rebuilds_its_views_exactly_once(
    biomero_copies: dict[str, Path], release: str
) -> None:
    """What ``SlurmClient(init_slurm=True)`` does to the analytics, BIOMERO's own reset
    path, after four processes ran their commands: the views' tables and their followers'
    tracking tables (here reset tables) are dropped in one transaction, and the views are
    rebuilt from the log, first all of it, then from an ``analytics_rebuild_start_time``
    cutoff that BIOMERO finds in ``workflowtracker_events`` (here the module's view).

    BIOMERO passes the first id it means as ``start`` to ``pull_and_process``, which in
    eventsourcing 9.5 is exclusive (on the stock stack too): the rebuild processes the
    notifications after it. Each is processed exactly once, and the tables equal what one
    process builds from those notifications alone."""
    site = biomero_copies["patched"]
    with support.scratch_database("biomero_reset", extension=True) as database:
        with support.admin(database) as cursor:
            cursor.execute(AUDIT_DDL)
        url = support.url(database)
        results = run_processes(site, "biomero_tracking", url)
        assert [error for result in results for error in result["errors"]] == []
        events = leader_events(database, "biomero_tracking")
        head = len(events)
        with support.admin(database) as cursor:
            # A cutoff half-way through, and where BIOMERO's query should start with it,
            # computed on the extension's table rather than the view BIOMERO reads.
            timestamp = "(convert_from(state, 'UTF8')::json->'timestamp'->>'_data_')"
            cursor.execute(
                f"SELECT {timestamp} FROM biomero.events "  # noqa: S608
                "WHERE application_name = 'WorkflowTracker' AND notification_id = %s",
                (head // 2,),
            )
            cutoff = str(cursor.fetchone()[0])
            cursor.execute(
                "SELECT min(notification_id) FROM biomero.events "  # noqa: S608
                f"WHERE application_name = 'WorkflowTracker' AND {timestamp} >= %s",
                (cutoff,),
            )
            cutoff_start = int(cursor.fetchone()[0])
        assert 1 < cutoff_start < head

        for start, env in ((1, {}), (cutoff_start, {"BIOMERO_REBUILD_START_TIME": cutoff})):
            with support.admin(database) as cursor:
                cursor.execute("DELETE FROM biomero_test_processed")
            logged = _reset(site, url, **env)["logged"]
            assert logged["rebuild_start_unknown"] == 0
            assert logged["replay_failures"] == 0
            with support.admin(database) as cursor:
                cursor.execute(
                    "SELECT follower, notification_id, count(*) FROM biomero_test_processed "
                    "GROUP BY follower, notification_id"
                )
                processed = {(f, n): c for f, n, c in cursor.fetchall()}
            expected_pairs = {(f, n) for f in FOLLOWERS for n in range(start + 1, head + 1)}
            assert set(processed) == expected_pairs, f"rebuild from {start}"
            assert set(processed.values()) == {1}, f"rebuild from {start}: processed twice"
            assert positions(database, "biomero_tracking") == dict.fromkeys(FOLLOWERS, head)
            actual = read_models(database)
            expected = reference_read_models(site, events, start)
            wrong, rows = wrong_rows(actual, expected)
            assert rows > 0
            assert wrong == 0, f"rebuild from {start}: {wrong} of {rows} rows wrong"
            print(
                f"\nBIOMERO {release} reset from notification {start} of {head}: "
                f"{len(processed)} (follower, notification) pairs processed once each, "
                f"{rows} read-model rows, 0 wrong"
            )
