"""Adoption: tables written by eventsourcing's PostgreSQL recorder (single-row and multi-row
tracking) and by eventsourcing-sqlalchemy, imported with biomero.import_eventsourcing, then
used by the same applications on biomero_tracking."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
import support
from eventsourcing.persistence import IntegrityError
from eventsourcing.system import ProcessApplication as LibraryProcessApplication
from things import Seen, Thing, Tracker

import biomero_tracking

ADOPT_SQL = support.REPOSITORY / "sql" / "adopt.sql"


def _policy(self: Any, domain_event: Any, processing_event: Any) -> None:
    processing_event.collect_events(
        Seen(domain_event.originator_id, domain_event.originator_version)
    )


def applications(prefix: str, follower_base: type) -> tuple[type[Tracker], type]:
    """A leader and a follower class named after ``prefix`` (so their tables are too)."""
    leader = type(f"{prefix}Tracker", (Tracker,), {})
    follower = type(f"{prefix}Seer", (follower_base,), {"policy": _policy})
    return leader, follower


def run_commands(leader: Tracker, follower: Any, labels: list[str]) -> list[UUID]:
    ids = [leader.create(label) for label in labels]
    for thing_id in ids[::2]:
        leader.rename(thing_id, "renamed")
    follower.pull_and_process(leader.name)
    return ids


def old_environment(stack: str) -> dict[str, str]:
    if stack == "sqlalchemy":
        return {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": support.url()}
    params = support.server_params()
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params["host"],
        "POSTGRES_PORT": params["port"],
        "POSTGRES_USER": params["user"],
        "POSTGRES_PASSWORD": "unused",
        "SINGLE_ROW_TRACKING": "f" if stack == "postgres-multi-row" else "t",
    }


NEW_ENVIRONMENT = {"PERSISTENCE_MODULE": "biomero_tracking"}


@pytest.fixture(scope="module", autouse=True)
def _own_database() -> Any:
    """These tests name their tables and applications: a database of this run keeps them
    apart from another run's on the same server."""
    with support.scratch_database("adopt", extension=True) as database:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BIOMERO_TEST_URL", support.url(database))
            yield


@pytest.fixture(scope="module", autouse=True)
def _import_function(_own_database: None) -> None:
    """Loads sql/adopt.sql unless the installed extension has it (a release before 0.2.0)."""
    with support.admin() as cursor:
        cursor.execute(
            "SELECT to_regprocedure('biomero.import_eventsourcing(text,regclass,regclass,text)')"
        )
        if cursor.fetchone()[0] is None:
            cursor.execute(ADOPT_SQL.read_text())


def drop_tables(*names: str) -> None:
    with support.admin() as cursor:
        for name in names:
            cursor.execute(f"DROP TABLE IF EXISTS public.{name}")  # noqa: S608 - fixed names


def import_application(name: str, events: str, tracking: str | None = None) -> tuple[int, int, int]:
    with support.admin() as cursor:
        cursor.execute(
            "SELECT * FROM biomero.import_eventsourcing(%s, %s::regclass, %s::regclass)",
            (name, f"public.{events}", None if tracking is None else f"public.{tracking}"),
        )
        return cursor.fetchone()


@pytest.mark.parametrize("stack", ["postgres-single-row", "postgres-multi-row", "sqlalchemy"])
def test_import_then_continue_on_biomero_tracking(stack: str) -> None:
    prefixes = {"postgres-single-row": "PgOne", "postgres-multi-row": "PgMany", "sqlalchemy": "Sa"}
    prefix = prefixes[stack]
    old_leader_class, old_follower_class = applications(prefix, LibraryProcessApplication)
    leader_table = f"{prefix.lower()}tracker_events"
    follower_events = f"{prefix.lower()}seer_events"
    follower_tracking = f"{prefix.lower()}seer_tracking"
    drop_tables(leader_table, follower_events, follower_tracking)
    support.delete_applications(old_leader_class.name, old_follower_class.name)

    # Before: the applications on the library's own tables.
    env = {**old_environment(stack), "SQLALCHEMY_URL": support.url()}
    old_leader = old_leader_class(env=env)
    old_follower = old_follower_class(env=env)
    old_follower.follow(old_leader.name, old_leader.notification_log)
    thing_ids = run_commands(old_leader, old_follower, [f"thing {n}" for n in range(6)])
    before_leader = old_leader.recorder.select_notifications(None, 100)
    before_follower = old_follower.recorder.select_notifications(None, 100)
    position = old_follower.recorder.max_tracking_id(old_leader.name)
    old_leader.close()
    old_follower.close()
    assert len(before_leader) == 9 and position == before_leader[-1].id
    with support.admin() as cursor:
        cursor.execute(  # eventsourcing 9.4+ adds a '__migration__' row to single-row tables
            f"SELECT count(*) FROM public.{follower_tracking} "  # noqa: S608
            "WHERE application_name <> '__migration__'"
        )
        tracking_rows = cursor.fetchone()[0]
    assert tracking_rows == (9 if stack == "postgres-multi-row" else 1)

    # The import, twice: the second finds everything there.
    assert import_application(old_leader.name, leader_table) == (9, 0, 0)
    assert import_application(old_follower.name, follower_events, follower_tracking) == (9, 0, 1)
    assert import_application(old_leader.name, leader_table) == (0, 9, 0)
    assert import_application(old_follower.name, follower_events, follower_tracking) == (0, 9, 0)

    # After: the same applications on biomero_tracking see the same logs and position.
    new_leader_class, new_follower_class = applications(prefix, biomero_tracking.ProcessApplication)
    env = {**NEW_ENVIRONMENT, "SQLALCHEMY_URL": support.url()}
    leader = new_leader_class(env=env)
    follower = new_follower_class(env=env)
    try:
        assert leader.recorder.select_notifications(None, 100) == before_leader
        assert follower.recorder.select_notifications(None, 100) == before_follower
        assert follower.recorder.max_tracking_id(leader.name) == position
        assert [leader.repository.get(i).label for i in thing_ids] == [
            "renamed",
            "thing 1",
            "renamed",
            "thing 3",
            "renamed",
            "thing 5",
        ]
        # New events continue the log; the follower processes only those.
        follower.follow(leader.name, leader.notification_log)
        new_id = leader.create("after")
        leader.rename(thing_ids[1], "renamed after")
        follower.pull_and_process(leader.name)
        after = leader.recorder.select_notifications(position, 10, inclusive_of_start=False)
        assert [n.id for n in after] == [position + 1, position + 2]
        assert follower.recorder.max_tracking_id(leader.name) == position + 2
        assert len(follower.recorder.select_notifications(None, 100)) == 11
        assert leader.repository.get(new_id).label == "after"
        # A duplicate aggregate version is still the library's IntegrityError.
        stale: Thing = leader.repository.get(new_id)
        leader.rename(new_id, "first")
        stale.rename("second")
        with pytest.raises(IntegrityError):
            leader.save(stale)
    finally:
        leader.close()
        follower.close()
        drop_tables(leader_table, follower_events, follower_tracking)
        support.delete_applications(leader.name, follower.name)


def test_tracking_positions_per_upstream_and_filter() -> None:
    """A multi-row table of a follower of two upstreams becomes one position each; with
    upstream_application_name only that upstream's."""
    drop_tables("legacy_events", "legacy_tracking")
    support.delete_applications("Legacy")
    with support.admin() as cursor:
        cursor.execute(
            "CREATE TABLE public.legacy_events (originator_id uuid, originator_version bigint, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        cursor.execute(
            "CREATE TABLE public.legacy_tracking (application_name text, notification_id bigint, "
            "PRIMARY KEY (application_name, notification_id))"
        )
        cursor.execute(
            "INSERT INTO public.legacy_tracking VALUES "
            "('Upstream1', 1), ('Upstream1', 2), ('Upstream1', 5), ('Upstream2', 3)"
        )
        cursor.execute(
            "SELECT * FROM biomero.import_eventsourcing('Legacy', 'public.legacy_events', "
            "'public.legacy_tracking', 'Upstream2')"
        )
        assert cursor.fetchone() == (0, 0, 1)
        cursor.execute(
            "SELECT * FROM biomero.import_eventsourcing('Legacy', 'public.legacy_events', "
            "'public.legacy_tracking')"
        )
        assert cursor.fetchone() == (0, 0, 1)
        cursor.execute(
            "SELECT upstream_application_name, notification_id FROM biomero.tracking "
            "WHERE application_name = 'Legacy' ORDER BY 1"
        )
        assert cursor.fetchall() == [("Upstream1", 5), ("Upstream2", 3)]
        # A position never moves back.
        cursor.execute("DELETE FROM public.legacy_tracking WHERE notification_id = 5")
        cursor.execute(
            "SELECT positions_advanced FROM biomero.import_eventsourcing('Legacy', "
            "'public.legacy_events', 'public.legacy_tracking')"
        )
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT biomero.max_tracking_id('Legacy', 'Upstream1')")
        assert cursor.fetchone() == (5,)
    drop_tables("legacy_events", "legacy_tracking")
    support.delete_applications("Legacy")


def test_conflicting_import_imports_nothing() -> None:
    drop_tables("first_events", "second_events")
    support.delete_applications("Conflicted")
    with support.admin() as cursor:
        for table in ("first_events", "second_events"):
            cursor.execute(
                f"CREATE TABLE public.{table} (id bigserial PRIMARY KEY, originator_id uuid, "
                "originator_version bigint, topic text, state bytea)"
            )
        cursor.execute(
            "INSERT INTO public.first_events (originator_id, originator_version, topic, state) "
            "SELECT gen_random_uuid(), 0, 'a', '\\x01' FROM generate_series(1, 3)"
        )
        cursor.execute(
            "INSERT INTO public.second_events (originator_id, originator_version, topic, state) "
            "SELECT gen_random_uuid(), 0, 'b', '\\x02' FROM generate_series(1, 5)"
        )
        cursor.execute(
            "SELECT * FROM biomero.import_eventsourcing('Conflicted', 'public.first_events')"
        )
        assert cursor.fetchone() == (3, 0, 0)
        with pytest.raises(Exception, match="3 of the 5 events in public.second_events conflict"):
            cursor.execute(
                "SELECT * FROM biomero.import_eventsourcing('Conflicted', 'public.second_events')"
            )
        cursor.execute(
            "SELECT count(*), max(notification_id) FROM biomero.events "
            "WHERE application_name = 'Conflicted'"
        )
        assert cursor.fetchone() == (3, 3)
        with pytest.raises(Exception, match="is not an eventsourcing events table"):
            cursor.execute(
                "SELECT * FROM biomero.import_eventsourcing('Conflicted', 'pg_catalog.pg_class')"
            )
    drop_tables("first_events", "second_events")
    support.delete_applications("Conflicted")
