"""The claiming follower, in one process: skipping what another processor did, waiting for
one in flight, read-model writes committed with the tracking position (URL and scoped
session), and what is refused."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import support
from eventsourcing.persistence import DataError, IntegrityError, ProgrammingError
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from things import Thing, Tracker

import biomero_tracking

CLAIM_LOCK_KIND = 0x6202  # the extension's advisory lock kind of a claim


def _apps(env: dict[str, str], policy: Any) -> tuple[type[Tracker], type]:
    leader = type(support.unique_name("Leader"), (Tracker,), {})
    follower = type(
        support.unique_name("Follower"), (biomero_tracking.ProcessApplication,), {"policy": policy}
    )
    return leader, follower


def _url_env() -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "biomero_tracking", "SQLALCHEMY_URL": support.url()}


@pytest.fixture
def read_model() -> Any:
    table = support.unique_name("read_model")
    with support.admin() as cursor:
        cursor.execute(f"CREATE TABLE {table} (notification_id bigint PRIMARY KEY, label text)")
    yield table
    with support.admin() as cursor:
        cursor.execute(f"DROP TABLE {table}")


def _rows(table: str) -> list[int]:
    with support.admin() as cursor:
        cursor.execute(f"SELECT notification_id FROM {table} ORDER BY 1")  # noqa: S608
        return [row[0] for row in cursor.fetchall()]


def test_a_second_processor_skips_what_the_first_processed() -> None:
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        calls.append((self.label, processing_event.tracking.notification_id))

    leader_class, follower_class = _apps(_url_env(), policy)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    for n in range(5):
        leader.create(f"thing {n}")

    first.pull_and_process(leader.name)
    second.pull_and_process(leader.name)  # no error, no second processing
    leader.create("thing 5")
    second.pull_and_process(leader.name)
    first.pull_and_process(leader.name)

    assert calls == [("first", n) for n in range(1, 6)] + [("second", 6)]
    assert first.recorder.max_tracking_id(leader.name) == 6
    for app in (leader, first, second):
        app.close()


def test_a_processor_waits_for_the_one_in_flight_then_skips(read_model: str) -> None:
    """The first processor holds notification 1 in its policy; the second blocks on the
    claim meanwhile, then skips notification 1 without running its policy."""
    holding, release = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        calls.append((self.label, notification_id))
        self.processing_session.execute(
            text(f"INSERT INTO {read_model} VALUES (:n, :label)"),  # noqa: S608
            {"n": notification_id, "label": self.label},
        )
        if self.label == "first" and notification_id == 1:
            holding.set()
            assert release.wait(30)

    leader_class, follower_class = _apps(_url_env(), policy)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    for n in range(3):
        leader.create(f"thing {n}")

    errors: list[BaseException] = []

    def run(follower: Any) -> None:
        try:
            follower.pull_and_process(leader.name)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    thread1 = threading.Thread(target=run, args=(first,))
    thread1.start()
    assert holding.wait(30)
    thread2 = threading.Thread(target=run, args=(second,))
    thread2.start()
    # The second processor is waiting for the claim.
    deadline = time.monotonic() + 30
    waiting = 0
    while time.monotonic() < deadline and not waiting:
        with support.admin() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND objsubid = %s AND NOT granted",
                (CLAIM_LOCK_KIND,),
            )
            waiting = cursor.fetchone()[0]
        time.sleep(0.05)
    assert waiting == 1
    release.set()
    thread1.join(30)
    thread2.join(30)

    assert errors == []
    # Each notification once; the rest may go to either processor after the first commit.
    assert calls[0] == ("first", 1)
    assert sorted(n for _, n in calls) == [1, 2, 3]
    assert _rows(read_model) == [1, 2, 3]
    assert second.recorder.max_tracking_id(leader.name) == 3
    for app in (leader, first, second):
        app.close()


def test_read_model_writes_commit_with_the_position_or_not_at_all(read_model: str) -> None:
    failing = {3}

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        self.processing_session.execute(
            text(f"INSERT INTO {read_model} VALUES (:n, 'x')"),  # noqa: S608
            {"n": notification_id},
        )
        if notification_id in failing:
            msg = "policy failed"
            raise RuntimeError(msg)

    leader_class, follower_class = _apps(_url_env(), policy)
    leader, follower = leader_class(env=_url_env()), follower_class(env=_url_env())
    follower.follow(leader.name, leader.notification_log)
    for n in range(4):
        leader.create(f"thing {n}")

    with pytest.raises(RuntimeError, match="policy failed"):
        follower.pull_and_process(leader.name)
    assert _rows(read_model) == [1, 2]
    assert follower.recorder.max_tracking_id(leader.name) == 2

    failing.clear()
    follower.pull_and_process(leader.name)
    assert _rows(read_model) == [1, 2, 3, 4]
    assert follower.recorder.max_tracking_id(leader.name) == 4
    leader.close()
    follower.close()


def test_a_policy_that_commits_is_refused(read_model: str) -> None:
    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        self.processing_session.commit()

    leader_class, follower_class = _apps(_url_env(), policy)
    leader, follower = leader_class(env=_url_env()), follower_class(env=_url_env())
    follower.follow(leader.name, leader.notification_log)
    leader.create("thing")
    with pytest.raises(ProgrammingError, match="ended the processing transaction"):
        follower.pull_and_process(leader.name)
    assert follower.recorder.max_tracking_id(leader.name) is None
    leader.close()
    follower.close()


# --- The application's scoped session (BIOMERO's configuration) -----------------------

SCOPED: scoped_session[Session] | None = None


def get_scoped_session() -> scoped_session[Session]:
    assert SCOPED is not None
    return SCOPED


@pytest.fixture
def scoped() -> Any:
    global SCOPED
    engine = create_engine(support.url())
    SCOPED = scoped_session(sessionmaker(bind=engine))
    env = {
        "PERSISTENCE_MODULE": "biomero_tracking",
        "SQLALCHEMY_SCOPED_SESSION_TOPIC": f"{__name__}:get_scoped_session",
    }
    yield env
    SCOPED.remove()
    engine.dispose()
    SCOPED = None


def test_scoped_session_processing_commits_the_command_then_each_notification(
    scoped: dict[str, str], read_model: str
) -> None:
    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        # BIOMERO's views write with the scoped session, and no longer commit.
        get_scoped_session().execute(
            text(f"INSERT INTO {read_model} VALUES (:n, :label)"),  # noqa: S608
            {"n": processing_event.tracking.notification_id, "label": domain_event.label},
        )

    leader_class, follower_class = _apps(scoped, policy)
    leader, follower = leader_class(env=scoped), follower_class(env=scoped)
    follower.follow(leader.name, leader.notification_log)

    # A command saves without committing: the application owns the unit of work.
    leader.create("a")
    assert leader.recorder.max_notification_id() == 1
    with support.admin() as cursor:
        cursor.execute("SELECT biomero.max_notification_id(%s)", (leader.name,))
        assert cursor.fetchone() == (None,)

    # Processing commits the command's pending work first, then each notification with
    # its read-model rows and position.
    follower.pull_and_process(leader.name)
    with support.admin() as cursor:
        cursor.execute("SELECT biomero.max_notification_id(%s)", (leader.name,))
        assert cursor.fetchone() == (1,)
    assert _rows(read_model) == [1]
    assert follower.recorder.max_tracking_id(leader.name) == 1

    # A duplicate aggregate version raises the library's IntegrityError and rolls the
    # session back, which stays usable.
    thing_id = leader.create("b")
    get_scoped_session().commit()
    stale: Thing = leader.repository.get(thing_id)
    leader.rename(thing_id, "b1")
    stale.rename("b2")
    with pytest.raises(IntegrityError, match="already has version 2 of aggregate"):
        leader.save(stale)
    assert leader.repository.get(thing_id).label == "b"  # the rename was rolled back too
    leader.close()
    follower.close()


def test_scoped_session_policy_that_commits_is_refused(
    scoped: dict[str, str], read_model: str
) -> None:
    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        get_scoped_session().commit()  # what BIOMERO's views do today

    leader_class, follower_class = _apps(scoped, policy)
    leader, follower = leader_class(env=scoped), follower_class(env=scoped)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    with pytest.raises(ProgrammingError, match="ended the processing transaction"):
        follower.pull_and_process(leader.name)
    assert follower.recorder.max_tracking_id(leader.name) is None
    leader.close()
    follower.close()


# --- Elsewhere ---------------------------------------------------------------------------


def test_other_persistence_modules_are_left_to_the_library() -> None:
    calls: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        calls.append(processing_event.tracking.notification_id)

    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    leader_class, follower_class = _apps(env, policy)
    leader, follower = leader_class(env=env), follower_class(env=env)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    leader.create("b")
    follower.pull_and_process(leader.name)
    assert calls == [1, 2]
    with pytest.raises(ProgrammingError, match="only available while a policy runs"):
        follower.processing_session  # noqa: B018


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
    support.recreate_database("no_extension", extension=False)
    env = {"PERSISTENCE_MODULE": "biomero_tracking", "SQLALCHEMY_URL": support.url("no_extension")}
    leader_class, _ = _apps(env, None)
    try:
        with pytest.raises(ProgrammingError, match="has no biomero_tracking extension"):
            leader_class(env=env)
    finally:
        support.drop_database("no_extension")
