"""The operator's command, ``python -m biomero_tracking`` (the ``biomero-tracking`` console
script), run as a separate process against a database BIOMERO 2.8.3 wrote on stock
eventsourcing-sqlalchemy: every refusal changes nothing; adoption moves every event and
position onto the module and patches BIOMERO; BIOMERO runs on; rollback brings everything
written since back into eventsourcing-sqlalchemy's tables and unpatches; BIOMERO runs on
stock again, and its read models equal what one process builds from the whole log.

The BIOMERO the command patches is a copy of the installed one, first on PYTHONPATH, as the
workers import it: the installed package is never touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import support
from biomero_patch import biomero_copy
from biomero_runs import (
    AUDIT_DDL,
    FOLLOWERS,
    positions,
    read_models,
    reference_read_models,
    run_processes,
    wrong_rows,
)

from biomero_tracking.biomero_patch import InstalledBiomero, installed_biomero, state

PATCHED = ("biomero/slurm_client.py", "biomero/views.py")
STOCK = "eventsourcing_sqlalchemy"
TABLES = ["workflowtracker_events"] + [
    f"{f.lower()}_{kind}" for f in FOLLOWERS for kind in ("events", "tracking")
]


def operator(site: Path | str, url: str, *arguments: str, **env: str) -> tuple[int, str]:
    """Runs the command in its own interpreter with ``site`` as PYTHONPATH; (exit status,
    standard output and error)."""
    done = subprocess.run(
        [sys.executable, "-m", "biomero_tracking", "--url", url, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env, "PYTHONPATH": str(site)},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def leader_log(database: str, table: str | None) -> list[tuple[int, str, int, str, bytes]]:
    """(id, originator, version, topic, state) of WorkflowTracker's events, in the table
    eventsourcing-sqlalchemy wrote or, with None, in the module's."""
    query = (
        "SELECT notification_id, originator_id::text, originator_version, topic, state "
        "FROM biomero.events WHERE application_name = 'WorkflowTracker' ORDER BY 1"
        if table is None
        else "SELECT id, originator_id::text, originator_version, topic, state "
        f"FROM {table} ORDER BY 1"  # noqa: S608 - fixed names
    )
    with support.admin(database) as cursor:
        cursor.execute(query)
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in cursor.fetchall()]


def snapshot(database: str, site: Path) -> tuple[Any, ...]:
    """What a refused step must leave as it was: the relations of the schema, the module's
    rows, the stock tables' rows, and BIOMERO's files."""
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'v') ORDER BY 1"
        )
        relations = cursor.fetchall()
        cursor.execute("SELECT count(*), coalesce(sum(notification_id), 0) FROM biomero.events")
        events = cursor.fetchone()
        cursor.execute("SELECT * FROM biomero.tracking ORDER BY 1, 2")
        tracking = cursor.fetchall()
        counts = []
        for name, kind in relations:
            if kind == "r":
                cursor.execute(f"SELECT count(*) FROM public.{name}")  # noqa: S608
                counts.append((name, cursor.fetchone()[0]))
    files = {
        path: hashlib.sha256((site / path).read_bytes()).hexdigest()
        for path in ("biomero/slurm_client.py", "biomero/views.py")
    }
    return relations, events, tracking, counts, files


def wait_for_no_sessions(database: str) -> None:
    """A client that exited leaves its backend for a moment; adoption counts it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with support.admin(database) as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.2)
    raise AssertionError("BIOMERO's sessions did not go away")


def no_errors(results: list[dict[str, Any]]) -> None:
    assert [error for result in results for error in result["errors"]] == []


@pytest.fixture
def database() -> Iterator[str]:
    with support.scratch_database("operator", extension=True) as name:
        with support.admin(name) as cursor:
            cursor.execute(AUDIT_DDL)
        yield name


def test_adopt_run_roll_back_and_run_again(database: str, tmp_path: Path) -> None:
    site = biomero_copy(tmp_path / "biomero", ())
    biomero = InstalledBiomero(installed_biomero().version, site / "biomero")
    url = support.url(database)

    # BIOMERO on stock eventsourcing-sqlalchemy: one process, so the stock race stays out.
    no_errors(run_processes(site, "eventsourcing_sqlalchemy", url, processes=1, workflows=3))
    before = leader_log(database, "workflowtracker_events")
    before_positions = positions(database, STOCK)
    assert len(before) > 20 and set(before_positions.values()) == {before[-1][0]}
    wait_for_no_sessions(database)

    status, out = operator(site, url, "check")
    assert status == 0, out
    assert "patch not applied" in out
    assert "workflowtracker_events: eventsourcing-sqlalchemy's table, not adopted" in out

    # Refusals: each names its cause and changes nothing.
    unchanged = snapshot(database, site)
    holder = psycopg2.connect(support.libpq_url(database))
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        status, out = operator(site, url, "adopt")
    finally:
        holder.close()
    assert status == 1 and "other sessions are connected to this database" in out, out
    assert f"pid {pid} " in out and "nothing was changed" in out
    wait_for_no_sessions(database)
    assert snapshot(database, site) == unchanged

    unknown = tmp_path / "unknown" / "biomero-9.9.9.dist-info"
    unknown.mkdir(parents=True)
    (unknown / "METADATA").write_text("Metadata-Version: 2.1\nName: biomero\nVersion: 9.9.9\n")
    status, out = operator(f"{unknown.parent}{os.pathsep}{site}", url, "adopt")
    assert status == 1, out
    assert "biomero 9.9.9" in out and "patches exist for 2.8.3" in out
    assert snapshot(database, site) == unchanged

    port = support.server_params()["port"]
    closed = url.replace(f":{port}/", ":9/")
    status, out = operator(site, closed, "adopt")
    assert status == 2 and "cannot connect to" in out, out
    assert snapshot(database, site) == unchanged

    role = support.unique_name("operator_without_grants")
    with support.admin(database) as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN")
    try:
        no_grants = url.replace("postgres@", f"{role}@")
        status, out = operator(site, no_grants, "adopt")
        assert status == 1 and "the database is not ready: no EXECUTE on biomero." in out, out
        assert snapshot(database, site) == unchanged
    finally:
        with support.admin(database) as cursor:
            cursor.execute(f"DROP ROLE {role}")

    with support.admin(database) as cursor:
        cursor.execute(
            "CREATE TABLE workflowtracker_events_eventsourcing_sqlalchemy "
            "(LIKE workflowtracker_events)"
        )
    status, out = operator(site, url, "adopt")
    assert status == 1 and "a step was done by hand" in out, out
    with support.admin(database) as cursor:
        cursor.execute("DROP TABLE workflowtracker_events_eventsourcing_sqlalchemy")
    assert snapshot(database, site) == unchanged

    # Adoption: every event and position, the tables renamed, BIOMERO patched.
    status, out = operator(site, url, "adopt")
    assert status == 0, out
    assert f"WorkflowTracker: {len(before)} events imported" in out
    assert leader_log(database, None) == before
    assert positions(database, "biomero_tracking") == before_positions
    assert positions(database, STOCK, "_eventsourcing_sqlalchemy") == before_positions
    assert state(site, biomero.patch()) == "applied"
    status, out = operator(site, url, "adopt")
    assert status == 1 and "already adopted" in out, out
    status, out = operator(site, url, "patch")
    assert status == 0 and "already applied" in out, out

    # BIOMERO on the module, two processes at once.
    no_errors(run_processes(site, "biomero_tracking", url, processes=2, workflows=2))
    during = leader_log(database, None)
    assert during[: len(before)] == before and len(during) > len(before)
    assert set(positions(database, "biomero_tracking").values()) == {during[-1][0]}
    assert leader_log(database, "workflowtracker_events") == during  # the module's view
    status, out = operator(site, url, "status")
    assert status == 0, out
    for follower in FOLLOWERS:
        assert f"{follower:<20} {'WorkflowTracker':<20} {during[-1][0]:>10}" in out, out
    wait_for_no_sessions(database)

    # Rollback: everything the module stored since, in eventsourcing-sqlalchemy's tables.
    status, out = operator(site, url, "rollback")
    assert status == 0, out
    assert f"WorkflowTracker: {len(during) - len(before)} events copied back" in out
    with support.admin(database) as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r' AND relname = ANY(%s)",
            (TABLES,),
        )
        assert sorted(r[0] for r in cursor.fetchall()) == sorted(TABLES)
    assert leader_log(database, "workflowtracker_events") == during
    assert set(positions(database, STOCK).values()) == {during[-1][0]}
    assert state(site, biomero.patch()) == "not applied"
    status, out = operator(site, url, "rollback")
    assert status == 1 and "nothing to roll back" in out, out

    # BIOMERO on stock again: ids go on, and the read models are those of the whole log.
    no_errors(run_processes(site, "eventsourcing_sqlalchemy", url, processes=1, workflows=1))
    after = leader_log(database, "workflowtracker_events")
    assert after[: len(during)] == during and after[len(during)][0] == during[-1][0] + 1
    assert set(positions(database, STOCK).values()) == {after[-1][0]}
    reference_site = biomero_copy(tmp_path / "patched", PATCHED)
    expected = reference_read_models(reference_site, [row[1:] for row in after])
    wrong, rows = wrong_rows(read_models(database), expected)
    assert rows > 0 and wrong == 0, f"{wrong} of {rows} read-model rows wrong"
    print(
        f"\nadopt, run, roll back, run: {len(before)} events imported, "
        f"{len(during) - len(before)} written on the module and copied back, "
        f"{len(after) - len(during)} more on stock; {rows} read-model rows, 0 wrong"
    )
