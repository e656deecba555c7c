"""The claiming follower, in one OS process (several follower instances stand for several
processes): skipping or replaying what another processor did, waiting for one in flight,
policies that commit or close the session, replay into in-memory state, and followers
derived from eventsourcing's own ProcessApplication."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg2
import pytest
import support
from eventsourcing.persistence import IntegrityError, ProgrammingError
from eventsourcing.system import ProcessApplication as LibraryProcessApplication
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from things import Seen, Thing, Tracker

import biomero_tracking


def _apps(
    policy: Any, *, base: type = biomero_tracking.ProcessApplication, **attributes: Any
) -> tuple[type[Tracker], type]:
    leader = type(support.unique_name("Leader"), (Tracker,), {})
    follower = type(support.unique_name("Follower"), (base,), {"policy": policy, **attributes})
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


def _rows(table: str) -> list[tuple[int, str]]:
    with support.admin() as cursor:
        cursor.execute(f"SELECT notification_id, label FROM {table} ORDER BY 1")  # noqa: S608
        return [tuple(row) for row in cursor.fetchall()]


def _insert(session: Any, table: str, notification_id: int, label: str) -> None:
    # An upsert, as read models write (BIOMERO's views merge): a replay meets the row
    # that the real processing committed.
    session.execute(
        text(
            f"INSERT INTO {table} VALUES (:n, :label) "  # noqa: S608
            "ON CONFLICT (notification_id) DO UPDATE SET label = excluded.label"
        ),
        {"n": notification_id, "label": label},
    )


def _claims_held() -> int:
    with support.admin() as cursor:
        cursor.execute("SELECT count(*) FROM biomero.locks WHERE kind = 'claim' AND granted")
        return int(cursor.fetchone()[0])


def _event_count(application_name: str) -> int:
    with support.admin() as cursor:
        cursor.execute(
            "SELECT count(*) FROM biomero.events WHERE application_name = %s",
            (application_name,),
        )
        return int(cursor.fetchone()[0])


def _close(*apps: Any) -> None:
    for app in apps:
        app.close()


# --- Claims: each notification processed for real once ------------------------------


def test_a_second_processor_replays_what_the_first_processed(read_model: str) -> None:
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        calls.append((self.label, notification_id))
        _insert(self.processing_session, read_model, notification_id, self.label)

    leader_class, follower_class = _apps(policy)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    for n in range(5):
        leader.create(f"thing {n}")

    first.pull_and_process(leader.name)
    second.pull_and_process(leader.name)  # replays 1..5: no error, nothing written
    leader.create("thing 5")
    second.pull_and_process(leader.name)
    first.pull_and_process(leader.name)  # replays 6

    # Every process's policy saw every notification, in order...
    assert [n for label, n in calls if label == "first"] == [1, 2, 3, 4, 5, 6]
    assert [n for label, n in calls if label == "second"] == [1, 2, 3, 4, 5, 6]
    # ...and each was processed for real once: the replays' writes were rolled back.
    assert _rows(read_model) == [(n, "first") for n in range(1, 6)] + [(6, "second")]
    assert first.recorder.max_tracking_id(leader.name) == 6
    _close(leader, first, second)


def test_a_reset_follower_is_processed_again_in_order_by_a_running_processor(
    read_model: str,
) -> None:
    """Dropping the follower's reset table (with its read model, as BIOMERO's init_slurm
    does) forgets its position; a processor that was running and knows a higher one
    processes everything again from the start, in order, rather than only what is new."""
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        calls.append((self.label, notification_id))
        _insert(self.processing_session, read_model, notification_id, self.label)

    leader_class, follower_class = _apps(policy)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    for n in range(5):
        leader.create(f"thing {n}")
    first.pull_and_process(leader.name)
    second.pull_and_process(leader.name)  # replays 1..5
    reset_table = first.recorder.tracking_table_name
    assert first.recorder.events_table_name == reset_table
    with support.admin() as cursor:
        cursor.execute(f"DROP TABLE {reset_table}; DELETE FROM {read_model}")  # noqa: S608
    assert first.recorder.max_tracking_id(leader.name) is None
    calls.clear()

    leader.create("thing 5")
    second.pull_and_process(leader.name)
    assert calls == [("second", n) for n in range(1, 7)]
    assert _rows(read_model) == [(n, "second") for n in range(1, 7)]
    first.pull_and_process(leader.name)  # replays 6 only: it had seen 1..5
    assert calls[6:] == [("first", 6)]
    assert _rows(read_model) == [(n, "second") for n in range(1, 7)]
    assert first.recorder.max_tracking_id(leader.name) == 6
    _close(leader, first, second)


def test_without_replay_a_second_processor_skips_what_the_first_processed() -> None:
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        calls.append((self.label, processing_event.tracking.notification_id))

    leader_class, follower_class = _apps(policy, replay_processed_elsewhere=False)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    for n in range(5):
        leader.create(f"thing {n}")

    first.pull_and_process(leader.name)
    second.pull_and_process(leader.name)
    leader.create("thing 5")
    second.pull_and_process(leader.name)
    first.pull_and_process(leader.name)

    assert calls == [("first", n) for n in range(1, 6)] + [("second", 6)]
    assert first.recorder.max_tracking_id(leader.name) == 6
    _close(leader, first, second)


def test_a_processor_waits_for_the_one_in_flight_then_skips(read_model: str) -> None:
    """The first processor holds notification 1 in its policy; the second blocks on the
    claim meanwhile, then skips notification 1 without running its policy."""
    holding, release = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        calls.append((self.label, notification_id))
        _insert(self.processing_session, read_model, notification_id, self.label)
        if self.label == "first" and notification_id == 1:
            holding.set()
            assert release.wait(30)

    leader_class, follower_class = _apps(policy, replay_processed_elsewhere=False)
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
    # The second processor is blocked in its claim.
    deadline = time.monotonic() + 30
    waiting = 0
    while time.monotonic() < deadline and not waiting:
        with support.admin() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND query LIKE '%%biomero.claim(%%'"
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
    assert [n for n, _ in _rows(read_model)] == [1, 2, 3]
    assert second.recorder.max_tracking_id(leader.name) == 3
    _close(leader, first, second)


def test_a_follower_of_a_concurrent_upstream_waits_for_an_id_in_flight_below() -> None:
    """A leader in concurrent mode commits id 2 while id 1 is in flight in another
    session; the prompted pull reads nothing yet. It waits for the append in flight, which
    rolls back, and processes 2: nothing else would prompt it again."""
    processed: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        processed.append(processing_event.tracking.notification_id)

    leader_class, follower_class = _apps(policy)
    leader = leader_class(env=_url_env())
    follower = follower_class(env=_url_env())
    follower.follow(leader.name, leader.notification_log)
    with support.admin() as cursor:
        cursor.execute("SELECT biomero.set_append_mode(%s, 'concurrent')", (leader.name,))
    holder = psycopg2.connect(support.libpq_url())
    try:
        with holder.cursor() as cursor:
            cursor.execute(
                "SELECT biomero.record_event(%s, gen_random_uuid(), 0, 't', '')", (leader.name,)
            )
            assert cursor.fetchone()[0] == 1
        leader.create("above the one in flight")
        rollback = threading.Timer(0.5, holder.rollback)
        rollback.start()
        started = time.monotonic()
        follower.pull_and_process(leader.name)
        waited = time.monotonic() - started
        rollback.join()
    finally:
        holder.close()
    assert processed == [2]
    assert waited >= 0.4
    assert follower.recorder.max_tracking_id(leader.name) == 2
    _close(leader, follower)


def test_read_model_writes_commit_with_the_position_or_not_at_all(read_model: str) -> None:
    failing = {3}

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        _insert(self.processing_session, read_model, notification_id, "x")
        if notification_id in failing:
            msg = "policy failed"
            raise RuntimeError(msg)

    leader_class, follower_class = _apps(policy)
    leader, follower = leader_class(env=_url_env()), follower_class(env=_url_env())
    follower.follow(leader.name, leader.notification_log)
    for n in range(4):
        leader.create(f"thing {n}")

    with pytest.raises(RuntimeError, match="policy failed"):
        follower.pull_and_process(leader.name)
    assert [n for n, _ in _rows(read_model)] == [1, 2]
    assert follower.recorder.max_tracking_id(leader.name) == 2

    failing.clear()
    follower.pull_and_process(leader.name)
    assert [n for n, _ in _rows(read_model)] == [1, 2, 3, 4]
    assert follower.recorder.max_tracking_id(leader.name) == 4
    _close(leader, follower)


# --- Policies that commit, roll back or close the session ---------------------------


def test_a_policy_that_commits_then_fails_leaves_nothing_behind(read_model: str) -> None:
    attempts: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        attempts.append(processing_event.tracking.notification_id)
        session = self.processing_session
        _insert(session, read_model, processing_event.tracking.notification_id, "x")
        session.commit()
        session.close()
        assert _claims_held() == 1  # the commit did not release the claim
        if len(attempts) <= 2:
            msg = "policy failed after committing"
            raise RuntimeError(msg)

    leader_class, follower_class = _apps(policy)
    leader, follower = leader_class(env=_url_env()), follower_class(env=_url_env())
    follower.follow(leader.name, leader.notification_log)
    leader.create("thing")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="failed after committing"):
            follower.pull_and_process(leader.name)
        assert _rows(read_model) == []
        assert follower.recorder.max_tracking_id(leader.name) is None
    follower.pull_and_process(leader.name)
    assert _rows(read_model) == [(1, "x")]
    assert follower.recorder.max_tracking_id(leader.name) == 1
    _close(leader, follower)


# The application's scoped session (BIOMERO's configuration).

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
        _insert(
            get_scoped_session(),
            read_model,
            processing_event.tracking.notification_id,
            domain_event.label,
        )

    leader_class, follower_class = _apps(policy)
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
    assert _rows(read_model) == [(1, "a")]
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
    _close(leader, follower)


def test_scoped_policy_commits_and_closes_stay_inside_the_processing_transaction(
    scoped: dict[str, str], read_model: str
) -> None:
    """BIOMERO's views: ``with EngineManager.get_session() as session: session.merge(...);
    session.commit()`` (a commit and a close of the registry's session), then
    ``EngineManager.commit()``. The claim holds throughout; a policy that fails after
    committing leaves no row and no position, however often it is retried."""
    attempts: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        attempts.append(notification_id)
        with get_scoped_session()() as session:
            _insert(session, read_model, notification_id, domain_event.label)
            session.commit()
        get_scoped_session().commit()
        assert _claims_held() == 1
        if len(attempts) <= 2:
            msg = "policy failed after committing"
            raise RuntimeError(msg)

    leader_class, follower_class = _apps(policy)
    leader, follower = leader_class(env=scoped), follower_class(env=scoped)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="failed after committing"):
            follower.pull_and_process(leader.name)
        assert _rows(read_model) == []
        assert follower.recorder.max_tracking_id(leader.name) is None
    follower.pull_and_process(leader.name)
    assert attempts == [1, 1, 1]
    assert _rows(read_model) == [(1, "a")]
    assert follower.recorder.max_tracking_id(leader.name) == 1
    # Afterwards the scoped session is the application's again, outside any processing.
    assert get_scoped_session()().get_bind() is get_scoped_session().get_bind()
    _close(leader, follower)


def test_scoped_policy_that_removes_the_session_stays_inside(
    scoped: dict[str, str], read_model: str
) -> None:
    """``scoped_session.remove()`` inside a policy (BIOMERO's rollback fallback) does not
    hand the policy a session of its own outside the processing transaction."""

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        get_scoped_session().remove()
        _insert(get_scoped_session(), read_model, 1, "after remove")
        get_scoped_session().commit()
        msg = "policy failed"
        raise RuntimeError(msg)

    leader_class, follower_class = _apps(policy)
    leader, follower = leader_class(env=scoped), follower_class(env=scoped)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    with pytest.raises(RuntimeError, match="policy failed"):
        follower.pull_and_process(leader.name)
    assert _rows(read_model) == []
    _close(leader, follower)


# --- Replay: in-memory state is what one process would have -------------------------


def _memory_policy(read_model: str) -> Any:
    """A policy that keeps state in memory (the last label of each thing), as BIOMERO's
    views do, and writes a read-model row from it, collecting a follower event too."""

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        notification_id = processing_event.tracking.notification_id
        thing_id = domain_event.originator_id
        if isinstance(domain_event, Thing.Created):
            label = f"created {domain_event.label}"
        else:
            label = f"{self.labels.get(thing_id, '?')} -> {domain_event.label}"
        self.labels[thing_id] = domain_event.label
        self.seen.append(notification_id)
        _insert(self.processing_session, read_model, notification_id, label)
        processing_event.collect_events(Seen(thing_id, domain_event.originator_version))

    return policy


def _memory_followers(read_model: str, **attributes: Any) -> tuple[Any, Any, Any]:
    leader_class, follower_class = _apps(_memory_policy(read_model), **attributes)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    for follower in (first, second):
        follower.labels, follower.seen = {}, []
        follower.follow(leader.name, leader.notification_log)
    return leader, first, second


def test_replay_gives_each_process_the_state_one_process_would_have(read_model: str) -> None:
    leader, first, second = _memory_followers(read_model)
    thing_id = leader.create("a")
    first.pull_and_process(leader.name)  # 1 for real
    leader.rename(thing_id, "b")
    second.pull_and_process(leader.name)  # replays 1, 2 for real: knows the label was "a"
    leader.rename(thing_id, "c")
    first.pull_and_process(leader.name)  # replays 2, 3 for real: knows it was "b"

    assert _rows(read_model) == [(1, "created a"), (2, "a -> b"), (3, "b -> c")]
    assert first.seen == second.seen[:2] + [3]
    assert first.labels == {thing_id: "c"}
    # Replays recorded nothing: one follower event and one position per notification.
    assert _event_count(first.name) == 3
    assert first.recorder.max_tracking_id(leader.name) == 3
    _close(leader, first, second)


def test_without_replay_in_memory_state_misses_what_others_processed(read_model: str) -> None:
    leader, first, second = _memory_followers(read_model, replay_processed_elsewhere=False)
    thing_id = leader.create("a")
    first.pull_and_process(leader.name)
    leader.rename(thing_id, "b")
    second.pull_and_process(leader.name)
    assert _rows(read_model) == [(1, "created a"), (2, "? -> b")]
    _close(leader, first, second)


def test_a_follower_replays_from_where_it_started(read_model: str) -> None:
    """Notifications processed before a follower was started are not replayed into it."""
    leader, first, _ = _memory_followers(read_model)
    leader.create("a")
    first.pull_and_process(leader.name)
    late = type(first)(env=_url_env())
    late.labels, late.seen = {}, []
    late.follow(leader.name, leader.notification_log)
    leader.create("b")
    first.pull_and_process(leader.name)
    late.pull_and_process(leader.name)
    assert first.seen == [1, 2]
    assert late.seen == [2]
    _close(leader, first, late)


def test_a_failing_replay_is_logged_not_raised(
    read_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        _insert(self.processing_session, read_model, processing_event.tracking.notification_id, "x")
        if self.label == "second":
            msg = "replay failed"
            raise RuntimeError(msg)

    leader_class, follower_class = _apps(policy)
    leader = leader_class(env=_url_env())
    first, second = follower_class(env=_url_env()), follower_class(env=_url_env())
    first.label, second.label = "first", "second"
    for follower in (first, second):
        follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    leader.create("b")
    first.pull_and_process(leader.name)
    with caplog.at_level(logging.ERROR, logger="biomero_tracking"):
        second.pull_and_process(leader.name)
    failures = [r for r in caplog.records if "replay of notification" in r.getMessage()]
    assert len(failures) == 2
    assert _rows(read_model) == [(1, "x"), (2, "x")]
    _close(leader, first, second)


# --- Followers derived from eventsourcing's own ProcessApplication --------------------


def _seen_policy(self: Any, domain_event: Any, processing_event: Any) -> None:
    self.calls.append(processing_event.tracking.notification_id)
    processing_event.collect_events(Seen(domain_event.originator_id, 0))


def test_a_library_follower_is_at_least_once_without_errors(
    scoped: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Another process recorded these notifications already: this one's policy ran for
    them again (at least once), but no IntegrityError reaches the command and no event is
    stored twice; one warning per follower names the claiming base class."""
    leader_class, follower_class = _apps(_seen_policy, base=LibraryProcessApplication)
    leader = leader_class(env=scoped)
    first, second = follower_class(env=scoped), follower_class(env=scoped)
    for follower in (first, second):
        follower.calls = []
        follower.follow(leader.name, leader.notification_log)
    for label in ("a", "b", "c"):
        leader.create(label)
    get_scoped_session().commit()
    first.pull_and_process(leader.name)
    with caplog.at_level(logging.WARNING, logger="biomero_tracking"):
        # What a second process does when it read the position before the first recorded.
        second.pull_and_process(leader.name, start=0)
        second.pull_and_process(leader.name, start=0)
    get_scoped_session().commit()

    assert first.calls == [1, 2, 3]
    assert second.calls == [1, 2, 3, 1, 2, 3]
    assert _event_count(first.name) == 3
    assert first.recorder.max_tracking_id(leader.name) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "biomero_tracking.ProcessApplication" in warnings[0]
    _close(leader, first, second)


def test_a_library_follower_s_rollback_keeps_the_command_s_events(
    scoped: dict[str, str],
) -> None:
    """BIOMERO's views retry a conflicting write after rolling the scoped session back.
    The command that prompted the pull has not committed yet: its events were committed
    before the policy ran, so the rollback takes only the policy's own work, and the
    position recorded is that of a stored notification."""

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        self.calls.append(processing_event.tracking.notification_id)
        get_scoped_session().rollback()

    leader_class, follower_class = _apps(policy, base=LibraryProcessApplication)
    leader, follower = leader_class(env=scoped), follower_class(env=scoped)
    follower.calls = []
    follower.follow(leader.name, leader.notification_log)

    leader.create("a")  # saved, not committed: the command commits after its prompt
    follower.pull_and_process(leader.name)
    get_scoped_session().commit()

    assert follower.calls == [1]
    assert _event_count(leader.name) == 1
    assert follower.recorder.max_tracking_id(leader.name) == 1
    leader.create("b")
    get_scoped_session().commit()
    follower.pull_and_process(leader.name)
    assert follower.calls == [1, 2]
    _close(leader, follower)


def test_the_recorder_contract_still_raises_for_a_recorded_position() -> None:
    datastore = biomero_tracking.Datastore(url=support.url())
    recorder = biomero_tracking.BiomeroProcessRecorder(
        datastore, application_name=support.unique_name("Contract")
    )
    from eventsourcing.persistence import Tracking

    recorder.insert_events([], tracking=Tracking("Upstream", 1))
    with pytest.raises(IntegrityError, match="has already recorded notification 1"):
        recorder.insert_events([], tracking=Tracking("Upstream", 1))
    datastore.close()


# --- Elsewhere ---------------------------------------------------------------------------


def test_other_persistence_modules_are_left_to_the_library() -> None:
    calls: list[int] = []

    def policy(self: Any, domain_event: Any, processing_event: Any) -> None:
        calls.append(processing_event.tracking.notification_id)

    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    leader_class, follower_class = _apps(policy)
    leader, follower = leader_class(env=env), follower_class(env=env)
    follower.follow(leader.name, leader.notification_log)
    leader.create("a")
    leader.create("b")
    follower.pull_and_process(leader.name)
    assert calls == [1, 2]
    with pytest.raises(ProgrammingError, match="only available while a policy runs"):
        follower.processing_session  # noqa: B018
