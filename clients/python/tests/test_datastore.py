"""Connections, errors and settings: savepoints of the application, errors of the LISTEN
thread, dropped connections, originator ids, refused settings, and the tests' own
databases."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from uuid import uuid4

import psycopg2
import pytest
import support
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from things import Thing, Tracker

import biomero_tracking


def _url_with_name(application_name: str) -> str:
    """The server's URL with a connection application_name, to find its backends."""
    return f"{support.url()}?application_name={application_name}"


def _terminate(application_name: str) -> int:
    with support.admin() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        )
        return int(cursor.fetchone()[0])


SCOPED: scoped_session[Session] | None = None


def get_scoped_session() -> scoped_session[Session]:
    assert SCOPED is not None
    return SCOPED


@pytest.fixture
def scoped_name() -> Any:
    """A scoped session on an engine without pre-ping (as BIOMERO makes it), its
    connections named so that a test can drop them."""
    global SCOPED
    connection_name = support.unique_name("scoped")
    engine = create_engine(_url_with_name(connection_name))
    SCOPED = scoped_session(sessionmaker(bind=engine))
    yield connection_name
    SCOPED.remove()
    engine.dispose()
    SCOPED = None


SCOPED_ENV = {
    "PERSISTENCE_MODULE": "biomero_tracking",
    "SQLALCHEMY_SCOPED_SESSION_TOPIC": f"{__name__}:get_scoped_session",
}


@pytest.fixture
def read_model() -> Any:
    table = support.unique_name("read_model")
    with support.admin() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY)")
    yield table
    with support.admin() as cursor:
        cursor.execute(f"DROP TABLE {table}")


def test_an_error_inside_a_savepoint_keeps_the_outer_unit_of_work(
    scoped_name: str, read_model: str
) -> None:
    leader = type(support.unique_name("Leader"), (Tracker,), {})(env=SCOPED_ENV)
    session = get_scoped_session()
    thing_id = leader.create("a")
    session.commit()
    stale: Thing = leader.repository.get(thing_id)

    session.execute(text(f"INSERT INTO {read_model} VALUES (100)"))  # noqa: S608
    leader.rename(thing_id, "b")
    savepoint = session.begin_nested()
    stale.rename("c")
    with pytest.raises(IntegrityError, match="already has version 2"):
        leader.save(stale)
    assert not savepoint.is_active
    session.commit()

    with support.admin() as cursor:
        cursor.execute(f"SELECT id FROM {read_model}")  # noqa: S608
        assert cursor.fetchall() == [(100,)]
    assert leader.repository.get(thing_id).label == "b"
    leader.close()


def _wait_until_listening(connection_name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with support.admin() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND query LIKE 'LISTEN%%'",
                (connection_name,),
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("the subscription never listened")


def _next_within(subscription: Any, seconds: float) -> Any:
    """The subscription's next notification, or AssertionError when none comes in time
    (``next`` alone would wait for ever)."""
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(next(subscription)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert result, f"no notification within {seconds} s"
    return result[0]


def test_errors_of_the_listen_thread_are_the_library_s() -> None:
    connection_name = support.unique_name("listen")
    datastore = biomero_tracking.Datastore(url=_url_with_name(connection_name))
    recorder = biomero_tracking.BiomeroApplicationRecorder(
        datastore, application_name=support.unique_name("Listened")
    )
    with recorder.subscribe() as subscription:
        _wait_until_listening(connection_name)
        assert _terminate(connection_name) >= 1
        with pytest.raises(OperationalError) as raised:
            next(subscription)
    assert not isinstance(raised.value, psycopg2.Error)
    datastore.close()


def test_forged_notifications_only_wake_a_subscription() -> None:
    """Any role may NOTIFY biomero_events: a subscription takes a payload as a wake-up and
    reads the log, so forged ids, other shapes and garbage neither skip nor invent events."""
    connection_name = support.unique_name("forged")
    datastore = biomero_tracking.Datastore(url=_url_with_name(connection_name))
    application = support.unique_name("Forged")
    recorder = biomero_tracking.BiomeroApplicationRecorder(datastore, application_name=application)

    def append(state: bytes) -> int:
        event = StoredEvent(originator_id=uuid4(), originator_version=0, topic="t", state=state)
        ids = recorder.insert_events([event])
        assert ids is not None
        return ids[0]

    assert append(b"first") == 1
    with recorder.subscribe() as subscription:
        assert _next_within(subscription, 30).id == 1
        _wait_until_listening(connection_name)
        with support.admin() as cursor:
            for payload in (
                json.dumps({"application_name": application, "first": 1000, "last": 1000}),
                json.dumps({"application_name": application, "first": 1, "last": 1}),
                json.dumps(["not", "an", "object"]),
                "not json at all",
            ):
                cursor.execute("SELECT pg_notify('biomero_events', %s)", (payload,))
        assert append(b"second") == 2
        second = _next_within(subscription, 30)
        assert (second.id, second.state) == (2, b"second")
        assert append(b"third") == 3
        third = _next_within(subscription, 30)
        assert (third.id, third.state) == (3, b"third")
    datastore.close()


def test_a_subscription_gets_a_commit_made_long_after_its_id_was_taken() -> None:
    """In concurrent mode the horizon publisher announces commits. It stays while an id is
    in flight, however long past its idle timeout, so a subscription (which waits for a
    wake-up without a timeout) gets the commit."""
    with support.admin() as cursor:
        cursor.execute("ALTER SYSTEM SET biomero.publisher_idle_timeout = '300ms'")
        cursor.execute("SELECT pg_reload_conf()")
    connection_name = support.unique_name("late")
    datastore = biomero_tracking.Datastore(url=_url_with_name(connection_name))
    application = support.unique_name("Late")
    recorder = biomero_tracking.BiomeroApplicationRecorder(datastore, application_name=application)
    holder = psycopg2.connect(support.libpq_url())
    try:
        with support.admin() as cursor:
            cursor.execute("SELECT biomero.set_append_mode(%s, 'concurrent')", (application,))
        with holder.cursor() as cursor:
            cursor.execute(
                "SELECT biomero.record_event(%s, gen_random_uuid(), 0, 't', '\\x01')",
                (application,),
            )
            held_id = cursor.fetchone()[0]
        with recorder.subscribe() as subscription:
            _wait_until_listening(connection_name)
            time.sleep(3)  # ten idle timeouts of the publisher, with the id in flight
            holder.commit()
            assert _next_within(subscription, 10).id == held_id
    finally:
        holder.close()
        datastore.close()
        with support.admin() as cursor:
            cursor.execute("ALTER SYSTEM RESET biomero.publisher_idle_timeout")
            cursor.execute("SELECT pg_reload_conf()")


def test_a_dropped_connection_is_replaced_url() -> None:
    connection_name = support.unique_name("dropped")
    datastore = biomero_tracking.Datastore(url=_url_with_name(connection_name))
    recorder = biomero_tracking.BiomeroApplicationRecorder(
        datastore, application_name=support.unique_name("Dropped")
    )
    assert recorder.max_notification_id() is None
    assert _terminate(connection_name) == 1
    assert recorder.max_notification_id() is None
    datastore.close()


def test_a_dropped_connection_is_replaced_scoped_follower(scoped_name: str) -> None:
    """The application's engine has no pre-ping; the follower's first statements after
    the server dropped its connections are tried again on new ones."""
    calls: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        calls.append(processing_event.tracking.notification_id)

    url_env = {"PERSISTENCE_MODULE": "biomero_tracking", "SQLALCHEMY_URL": support.url()}
    leader = type(support.unique_name("Leader"), (Tracker,), {})(env=url_env)
    follower_class = type(
        support.unique_name("Follower"), (biomero_tracking.ProcessApplication,), {"policy": policy}
    )
    follower = follower_class(env=SCOPED_ENV)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    follower.pull_and_process(leader.name)
    get_scoped_session().commit()
    assert _terminate(scoped_name) >= 1
    leader.create("b")
    follower.pull_and_process(leader.name)
    assert calls == [1, 2]
    assert follower.recorder.max_tracking_id(leader.name) == 2
    leader.close()
    follower.close()


def test_text_originator_ids_are_refused_at_start() -> None:
    env = {
        "PERSISTENCE_MODULE": "biomero_tracking",
        "SQLALCHEMY_URL": support.url(),
        "ORIGINATOR_ID_TYPE": "text",
    }
    with pytest.raises(ProgrammingError, match="stores originator ids as uuid"):
        type(support.unique_name("Leader"), (Tracker,), {})(env=env)


def test_an_originator_id_that_is_no_uuid_is_named() -> None:
    datastore = biomero_tracking.Datastore(url=support.url())
    recorder = biomero_tracking.BiomeroApplicationRecorder(
        datastore, application_name=support.unique_name("Ids")
    )
    event = StoredEvent(originator_id="order-17", originator_version=1, topic="t", state=b"{}")
    with pytest.raises(ProgrammingError, match="'order-17' is not one"):
        recorder.insert_events([event])
    with pytest.raises(ProgrammingError, match="'order-17' is not one"):
        recorder.select_events("order-17")
    # A UUID given as text is a UUID.
    uuid_text = str(uuid4())
    recorder.insert_events([StoredEvent(uuid_text, 1, "t", b"{}")])
    assert [e.originator_version for e in recorder.select_events(uuid_text)] == [1]
    datastore.close()


def test_sqlalchemy_schema_is_refused_not_ignored() -> None:
    env = {
        "PERSISTENCE_MODULE": "biomero_tracking",
        "SQLALCHEMY_URL": support.url(),
        "SQLALCHEMY_SCHEMA": "tenant_a",
    }
    with pytest.raises(ProgrammingError, match="SQLALCHEMY_SCHEMA='tenant_a' does not apply"):
        type(support.unique_name("Leader"), (Tracker,), {})(env=env)


def test_bad_input_is_a_data_error() -> None:
    datastore = biomero_tracking.Datastore(url=support.url())
    recorder = biomero_tracking.BiomeroApplicationRecorder(
        datastore, application_name=support.unique_name("Bad")
    )
    with pytest.raises(DataError, match='"limit" must be >= 0'):
        recorder.select_notifications(None, -1)
    empty_name = biomero_tracking.BiomeroApplicationRecorder(datastore, application_name="")
    with pytest.raises(DataError, match="application_name must not be empty"):
        empty_name.max_notification_id()
    datastore.close()


def test_a_database_without_the_extension_is_named() -> None:
    with support.scratch_database("no_extension", extension=False) as database:
        env = {"PERSISTENCE_MODULE": "biomero_tracking", "SQLALCHEMY_URL": support.url(database)}
        leader_class = type(support.unique_name("Leader"), (Tracker,), {})
        with pytest.raises(ProgrammingError, match="has no biomero_tracking extension"):
            leader_class(env=env)


def test_runs_sharing_a_server_keep_their_own_databases() -> None:
    """Another run of the suite on the same server, start to finish, while this one's
    database exists, leaves it alone."""
    with support.scratch_database("no_extension", extension=False) as ours:
        with support.scratch_database("no_extension", extension=False) as theirs:
            assert theirs != ours
        assert support.database_exists(ours)
    assert not support.database_exists(ours)


def test_the_version_is_the_package_s() -> None:
    from importlib.metadata import version

    assert biomero_tracking.__version__ == version("biomero-tracking")
