"""Helpers shared by the tests: the server's URL, an administrator connection, names."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

if TYPE_CHECKING:
    from collections.abc import Iterator

REPOSITORY = Path(__file__).resolve().parents[4]


def url(database: str | None = None, driver: str | None = None) -> str:
    """The test server's URL, optionally for another database or SQLAlchemy driver."""
    parts = urlsplit(os.environ["BIOMERO_TEST_URL"])
    scheme = parts.scheme if driver is None else f"postgresql+{driver}"
    path = parts.path if database is None else f"/{database}"
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def libpq_url(database: str | None = None) -> str:
    return url(database).replace("postgresql+psycopg2://", "postgresql://")


def server_params(database: str | None = None) -> dict[str, str]:
    parts = urlsplit(url(database))
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": parts.username or "postgres",
        "dbname": parts.path.lstrip("/"),
    }


@contextmanager
def admin(database: str | None = None) -> Iterator[psycopg2.extensions.cursor]:
    """An autocommit cursor as the cluster's superuser: for fixtures and checks only
    (clients never write biomero's tables)."""
    connection = psycopg2.connect(libpq_url(database))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def create_database(prefix: str, *, extension: bool) -> str:
    """Creates a database named ``prefix`` plus a random suffix, so that runs sharing a
    server never meet (with the extension when asked); returns its name."""
    name = unique_name(prefix)
    with admin() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    if extension:
        with admin(name) as cursor:
            cursor.execute("CREATE EXTENSION biomero_tracking")
    return name


def drop_database(name: str) -> None:
    with admin() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(prefix: str, *, extension: bool) -> Iterator[str]:
    """A database of this run only (see :func:`create_database`), dropped afterwards."""
    name = create_database(prefix, extension=extension)
    try:
        yield name
    finally:
        drop_database(name)


def database_exists(name: str) -> bool:
    with admin() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        return bool(cursor.fetchone()[0])


def delete_applications(*names: str) -> None:
    """Removes the rows of the named applications (and of them as followers)."""
    with admin() as cursor:
        cursor.execute(
            "DELETE FROM biomero.events WHERE application_name = ANY (%s)", (list(names),)
        )
        cursor.execute(
            "DELETE FROM biomero.tracking WHERE application_name = ANY (%s)", (list(names),)
        )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def kill_unfinished(processes: list[subprocess.Popen[str]]) -> None:
    """Kills the worker processes still running (after a failed or timed-out run)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def last_json(out: str) -> dict[str, Any]:
    """The JSON object a worker process printed last."""
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_together(workers: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Lets worker processes start together (each prints ``ready``, then waits for ``go``),
    and returns what each printed last; kills those left after a failure."""
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if line.strip() != "ready":
                assert worker.stderr is not None
                raise AssertionError(f"worker did not start: {line!r} {worker.stderr.read()}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err
            results.append(last_json(out))
        return results
    finally:
        kill_unfinished(workers)  # none outlives a failed run


#: Lines the scenario tests report; conftest prints them in pytest's closing summary.
SCENARIO_FIGURES: list[str] = []
