"""A pytest plugin for BIOMERO's own unit tests (the ``tests/unit`` of its source
distribution), run by tests/test_biomero_suite.py: every test gets a database of its own,
made from a template (with the extension, or without it for the stock stack), and dropped
after it. BIOMERO's fixtures read its URL from ``BIOMERO_SUITE_URL`` (the only change the
harness makes to BIOMERO's tests is pointing them there, and at the stack's
``PERSISTENCE_MODULE``)."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def _admin(statement: str) -> None:
    connection = psycopg2.connect(os.environ["BIOMERO_SUITE_ADMIN_URL"])
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def biomero_suite_database() -> Iterator[None]:
    # A plugin's autouse fixture is set up before the test modules' own, which read the URL.
    name = f"biomero_suite_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{os.environ["BIOMERO_SUITE_TEMPLATE"]}"')
    parts = urlsplit(os.environ["BIOMERO_SUITE_ADMIN_URL"])
    os.environ["BIOMERO_SUITE_URL"] = urlunsplit(
        (parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment)
    )
    yield
    from biomero.database import EngineManager

    EngineManager.close_engine()
    _admin(f'DROP DATABASE "{name}" WITH (FORCE)')
