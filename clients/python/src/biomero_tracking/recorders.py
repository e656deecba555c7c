"""The eventsourcing recorders, each statement a call of one biomero_tracking SQL function.

Nothing here writes a table, takes a table lock or assigns a notification id: appends go
through ``biomero.record_events`` (one round trip for a whole batch with its tracking
position), tracking through ``biomero.record_tracking``, and the follower's claim through
``biomero.claim``. Reads go through ``biomero.select_*`` and ``biomero.max_*``.
"""

from __future__ import annotations

import json
import logging
import select
from threading import Thread
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from sqlalchemy import text

from biomero_tracking.datastore import persistence_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    from biomero_tracking.datastore import Datastore

logger = logging.getLogger(__name__)

#: The channel biomero_tracking notifies at the commit of every append.
NOTIFY_CHANNEL = "biomero_events"

_RECORD_EVENTS = text(
    "SELECT biomero.record_events(:application_name, CAST(:originator_ids AS uuid[]), "
    "CAST(:originator_versions AS bigint[]), CAST(:topics AS text[]), "
    "CAST(:states AS bytea[]), :upstream_application_name, :upstream_notification_id)"
)
_SELECT_EVENTS = text(
    "SELECT originator_id, originator_version, topic, state "
    "FROM biomero.select_events(:application_name, CAST(:originator_id AS uuid), "
    ":gt, :lte, :desc, :limit)"
)
_SELECT_NOTIFICATIONS = text(
    "SELECT notification_id, originator_id, originator_version, topic, state "
    "FROM biomero.select_notifications(:application_name, :start, :limit, :stop, "
    "CAST(:topics AS text[]), :inclusive_of_start)"
)
_MAX_NOTIFICATION_ID = text("SELECT biomero.max_notification_id(:application_name)")
_RECORD_TRACKING = text(
    "SELECT biomero.record_tracking(:application_name, :upstream_application_name, "
    ":notification_id)"
)
_MAX_TRACKING_ID = text(
    "SELECT biomero.max_tracking_id(:application_name, :upstream_application_name)"
)
_CLAIM = text("SELECT biomero.claim(:application_name, :upstream_application_name)")
_LAST_TAKEN_ID = text("SELECT biomero.last_taken_id(:application_name)")
_HORIZON = text("SELECT horizon FROM biomero.append_state(:application_name)")
_RESET_TABLE = text("SELECT format('CREATE TABLE %I ()', :relation)")
_RESET_TABLE_NAME = text("SELECT biomero.reset_table_name(:follower)")
_VIEW_NAME = text("SELECT CAST(:relation AS text)")
_EVENTS_VIEW = text(
    "SELECT format('CREATE VIEW %I AS SELECT notification_id AS id, originator_id, "
    "originator_version, topic, state FROM biomero.select_notifications(%L, NULL, %s)', "
    ":relation, :application_name, 9223372036854775807)"
)


def _uuid(value: Any) -> UUID:
    # psycopg returns uuid.UUID; psycopg2 returns str unless its UUID adapter is registered.
    return value if isinstance(value, UUID) else UUID(str(value))


def _originator_id_text(originator_id: UUID | str) -> str:
    """The id as the extension stores it (uuid); refuses other ids before any SQL."""
    if isinstance(originator_id, UUID):
        return str(originator_id)
    try:
        return str(UUID(originator_id))
    except (TypeError, ValueError, AttributeError):
        msg = (
            f"biomero_tracking stores originator ids as UUIDs; {originator_id!r} is not one "
            "(aggregates with text ids need another persistence module)"
        )
        raise ProgrammingError(msg) from None


def _bytes(value: Any) -> bytes:
    # psycopg2 returns bytea as memoryview.
    return value if isinstance(value, bytes) else bytes(value)


class BiomeroRecorder:
    """Base of the recorders: a datastore and the application the rows belong to."""

    def __init__(self, datastore: Datastore, *, application_name: str) -> None:
        self.datastore = datastore
        self.application_name = application_name

    def create_table(self) -> None:
        """The tables belong to the extension; this only checks that it is installed."""
        self.datastore.check_extension()

    def _run(self, statement: Any, **params: Any) -> Sequence[Any]:
        return self.datastore.run(statement, params)

    def _scalar(self, statement: Any, **params: Any) -> Any:
        rows = self.datastore.run(statement, params)
        return rows[0][0] if rows else None

    def _optional_int(self, statement: Any, **params: Any) -> int | None:
        value = self._scalar(statement, **params)
        return None if value is None else int(value)


class BiomeroAggregateRecorder(BiomeroRecorder, AggregateRecorder):
    """Stores and selects one application's aggregate events (or snapshots)."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert_events(stored_events, **kwargs)
        return None

    def _insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        tracking: Tracking | None = None,
        commit_at_once: bool = False,
        **_: Any,
    ) -> list[int] | None:
        """One call of biomero.record_events; None when the tracking position was
        already recorded (nothing written)."""
        if not stored_events and tracking is None:
            return []
        params: dict[str, Any] = {
            "application_name": self.application_name,
            "originator_ids": [_originator_id_text(e.originator_id) for e in stored_events],
            "originator_versions": [e.originator_version for e in stored_events],
            "topics": [e.topic for e in stored_events],
            "states": [e.state for e in stored_events],
            "upstream_application_name": None,
            "upstream_notification_id": None,
        }
        if tracking is not None:
            params["upstream_application_name"] = tracking.application_name
            params["upstream_notification_id"] = tracking.notification_id
        run = self.datastore.run_and_commit if commit_at_once else self.datastore.run
        rows = run(_RECORD_EVENTS, params)
        ids = rows[0][0] if rows else None
        return None if ids is None else list(ids)

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        rows = self._run(
            _SELECT_EVENTS,
            application_name=self.application_name,
            originator_id=_originator_id_text(originator_id),
            gt=gt,
            lte=lte,
            desc=desc,
            limit=limit,
        )
        return [
            StoredEvent(
                originator_id=_uuid(row[0]),
                originator_version=row[1],
                topic=row[2],
                state=_bytes(row[3]),
            )
            for row in rows
        ]


class BiomeroApplicationRecorder(BiomeroAggregateRecorder, ApplicationRecorder):
    """Also the application's notification log: ids assigned by the extension, gapless
    and in commit order."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # A plain application recorder records no tracking position.
        kwargs.pop("tracking", None)
        return self._insert_events(stored_events, **kwargs)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        rows = self._run(
            _SELECT_NOTIFICATIONS,
            application_name=self.application_name,
            start=start,
            limit=limit,
            stop=stop,
            topics=list(topics),
            inclusive_of_start=inclusive_of_start,
        )
        return [
            Notification(
                id=row[0],
                originator_id=_uuid(row[1]),
                originator_version=row[2],
                topic=row[3],
                state=_bytes(row[4]),
            )
            for row in rows
        ]

    def max_notification_id(self) -> int | None:
        return self._optional_int(_MAX_NOTIFICATION_ID, application_name=self.application_name)

    @property
    def events_table_name(self) -> str:
        """eventsourcing-sqlalchemy's name for the application's events table. Here it is a
        read-only view of the application's notification log (``id``, ``originator_id``,
        ``originator_version``, ``topic``, ``state``), for SQL written against that table
        (BIOMERO's analytics rebuild finds its start there); ``create_table`` creates it."""
        return f"{self.application_name.lower()}_events"

    def create_table(self) -> None:
        super().create_table()
        try:
            self.datastore.create_unless_present(
                _VIEW_NAME,
                _EVENTS_VIEW,
                {"relation": self.events_table_name, "application_name": self.application_name},
                view=True,
                comment=f"The notification log of {self.application_name} (biomero_tracking), "
                "read-only, as eventsourcing-sqlalchemy's events table shows it.",
            )
        except PersistenceError as error:
            # Only SQL written against eventsourcing-sqlalchemy's table needs it.
            logger.warning(
                "biomero_tracking: no view %s of %r's events (%s)",
                self.events_table_name,
                self.application_name,
                error,
            )

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return BiomeroSubscription(recorder=self, gt=gt, topics=topics)


class BiomeroTrackingRecorder(BiomeroRecorder, TrackingRecorder):
    """Positions of a follower (this recorder's application) in its upstream logs: one
    row per upstream, moved forward only."""

    def insert_tracking(self, tracking: Tracking) -> None:
        advanced = self._scalar(
            _RECORD_TRACKING,
            application_name=self.application_name,
            upstream_application_name=tracking.application_name,
            notification_id=tracking.notification_id,
        )
        if not advanced:
            raise IntegrityError(_already_tracked(self.application_name, tracking))

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._optional_int(
            _MAX_TRACKING_ID,
            application_name=self.application_name,
            upstream_application_name=application_name,
        )

    def last_taken_id(self, upstream_application_name: str) -> int | None:
        """The highest id of a concurrent upstream handed out so far, that the horizon can
        reach while this session goes on; None when the upstream is serialized with
        nothing in flight."""
        return self._optional_int(_LAST_TAKEN_ID, application_name=upstream_application_name)

    def horizon(self, upstream_application_name: str) -> int | None:
        """The upstream's horizon now: readers read up to it (None: no bound)."""
        return self._optional_int(_HORIZON, application_name=upstream_application_name)

    def claim(self, upstream_application_name: str) -> int:
        """Claims (follower, upstream) until the end of this thread's processing
        transaction, waiting for another holder to finish, and returns the last processed
        id (0 when none), as committed by any previous holder."""
        if self.datastore.current_processing() is None:
            msg = "a claim is taken inside a processing transaction"
            raise ProgrammingError(msg)
        position = self._optional_int(
            _CLAIM,
            application_name=self.application_name,
            upstream_application_name=upstream_application_name,
        )
        assert position is not None, "claim with wait returns a position"
        return position


class BiomeroProcessRecorder(BiomeroTrackingRecorder, BiomeroApplicationRecorder, ProcessRecorder):
    """A follower's own events recorded together with its tracking position, in one call.

    ``tolerate_recorded_positions`` (the factory sets it; a claiming follower clears it)
    is for followers derived from eventsourcing's own ``ProcessApplication``, which
    process notifications outside a claim, in the application's session:

    - their pull starts by committing what that session holds, as a claiming follower's
      does: the policy runs in the same session, and one that rolls it back (BIOMERO's
      retry decorator does, on a conflict) would otherwise discard the pending events of
      the command that prompted the pull, after the follower had read them;
    - when another process has already recorded the position, the follower's record
      stores nothing and returns no ids instead of raising ``IntegrityError`` into that
      command; a warning says so once per follower;
    - the record is committed at once, so that its lock on the position is not held
      until the application commits.
    """

    def __init__(
        self,
        datastore: Datastore,
        *,
        application_name: str,
        tolerate_recorded_positions: bool = False,
    ) -> None:
        super().__init__(datastore, application_name=application_name)
        self.tolerate_recorded_positions = tolerate_recorded_positions
        self._warned = False

    def create_table(self) -> None:
        # A follower's own events are read through the library; its events_table_name is
        # its reset table.
        self.datastore.check_extension()

    @property
    def tracking_table_name(self) -> str:
        """What eventsourcing-sqlalchemy's callers drop to reset this follower (BIOMERO's
        ``init_slurm`` drops it with the read-model tables, then processes the log again):
        the follower's reset table, created in the current schema when it is not there.
        Dropping it forgets every position of the follower in the dropping transaction (the
        dropping role needs EXECUTE on ``biomero_internal.forget_positions``)."""
        return self.datastore.create_unless_present(
            _RESET_TABLE_NAME,
            _RESET_TABLE,
            {"follower": self.application_name},
            view=False,
            comment=f"Dropping this table forgets every position of follower "
            f"{self.application_name} (biomero_tracking): its read model starts over.",
        )

    @property
    def events_table_name(self) -> str:
        """The reset table too: a follower's committed events are never dropped (readers
        may have read them), so resetting its read model is all a drop can do."""
        return self.tracking_table_name

    def max_tracking_id(self, application_name: str) -> int | None:
        if self.tolerate_recorded_positions:
            # eventsourcing's pull_and_process asks this first, before its policy runs
            # (runners that hand new events straight to the policy never ask: there only
            # a claiming follower is safe).
            self.datastore.commit_pending()
        return super().max_tracking_id(application_name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        unclaimed = (
            self.tolerate_recorded_positions
            and tracking is not None
            and self.datastore.current_processing() is None
        )
        ids = self._insert_events(stored_events, commit_at_once=unclaimed, **kwargs)
        if ids is None:
            assert tracking is not None
            if not unclaimed:
                raise IntegrityError(_already_tracked(self.application_name, tracking))
            self._warn_unclaimed(tracking)
        return ids

    def _warn_unclaimed(self, tracking: Tracking) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "%s; its policy ran for it again in this process, and nothing was recorded. "
            "Followers derived from eventsourcing's ProcessApplication process "
            "notifications at least once across processes; derive %r from "
            "biomero_tracking.ProcessApplication to process each exactly once. "
            "(Logged once per follower.)",
            _already_tracked(self.application_name, tracking),
            self.application_name,
        )


def _is_database_error(error: BaseException) -> bool:
    """A DB-API error of psycopg2 or psycopg, or SQLAlchemy's wrapper of one."""
    return any(
        cls.__name__ in ("Error", "DBAPIError")
        and cls.__module__.split(".")[0] in ("psycopg2", "psycopg", "sqlalchemy")
        for cls in type(error).__mro__
    )


def _already_tracked(follower: str, tracking: Tracking) -> str:
    return (
        f"follower {follower!r} has already recorded notification "
        f"{tracking.notification_id} of {tracking.application_name!r} (or a later one)"
    )


class BiomeroSubscription(ListenNotifySubscription[BiomeroApplicationRecorder]):
    """Yields the application's notifications after ``gt``, then new ones as the
    extension announces their commit on the ``biomero_events`` channel."""

    def __init__(
        self,
        recorder: BiomeroApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._listen_thread = Thread(target=self._listen, daemon=True)
        self._listen_thread.start()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._listen_thread.join()

    def _listen(self) -> None:
        try:
            connection = self._recorder.datastore.engine.raw_connection()
            try:
                dbapi: Any = connection.driver_connection
                dbapi.autocommit = True
                cursor = dbapi.cursor()
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
                cursor.close()
                # A notification may have been missed before LISTEN took effect.
                self._has_been_notified.set()
                if hasattr(dbapi, "notifies") and callable(dbapi.notifies):
                    self._listen_psycopg(dbapi)
                else:
                    self._listen_psycopg2(dbapi)
            finally:
                connection.invalidate()
        except BaseException as error:  # noqa: BLE001 - handed to the iterating thread
            if self._thread_error is None:
                # The iterating thread raises it: as the library's exception, like the
                # recorder's own errors, when it comes from the driver.
                self._thread_error = (
                    persistence_error(error) if _is_database_error(error) else error
                )
            self.stop()

    def _is_for_us(self, payload: str) -> bool:
        try:
            return bool(
                json.loads(payload).get("application_name") == self._recorder.application_name
            )
        except (ValueError, AttributeError):
            return True

    def _listen_psycopg2(self, dbapi: Any) -> None:
        while not self._has_been_stopped:
            if select.select([dbapi], [], [], 0.1)[0]:
                dbapi.poll()
                while dbapi.notifies:
                    if self._is_for_us(dbapi.notifies.pop(0).payload):
                        self._has_been_notified.set()

    def _listen_psycopg(self, dbapi: Any) -> None:
        while not self._has_been_stopped:
            for notify in dbapi.notifies(timeout=0.1):
                if self._is_for_us(notify.payload):
                    self._has_been_notified.set()
