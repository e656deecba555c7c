"""Exactly-once processing for followers run by several processes at once.

Every process of a system pulls the *shared* notification log, so two processes can pull
the same notification. :class:`ClaimingFollower` processes each notification in a
transaction of its own (:class:`~biomero_tracking.datastore.Processing`) that first claims
the (follower, upstream) pair with ``biomero.claim``. The claim is held to commit, so the
processors of one follower take turns; the position it returns is the one the previous
holder committed. A notification above it is processed for real: the policy runs with a
session joined to the transaction by savepoints (also what the application's scoped session
returns meanwhile), then the follower's new events and its position are recorded with one
``biomero.record_events`` call, and everything commits once.

A notification at or below the position was processed by another process. By default
(:attr:`ClaimingFollower.replay_processed_elsewhere`) it is replayed: the policy runs as
usual, then its database writes are rolled back and nothing is recorded. So a follower that
keeps state in memory builds it from every notification committed after it started, in
order, whichever process won each one, exactly as a single process would.

An upstream in concurrent append mode may commit an id above one still in flight: a pull
reads no further than below it. A runner prompts a follower when its leader commits, and
may not prompt again, so a pull that ends below ids already handed out waits (up to
:attr:`ClaimingFollower.horizon_wait` seconds) until the appends holding them have ended,
and pulls once more.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import ProgrammingError
from eventsourcing.system import ProcessApplication as _LibraryProcessApplication

from biomero_tracking.recorders import BiomeroProcessRecorder

if TYPE_CHECKING:
    from eventsourcing.application import NotificationLog
    from eventsourcing.domain import DomainEventProtocol
    from eventsourcing.persistence import Recording, Tracking
    from sqlalchemy.orm import Session

    from biomero_tracking.datastore import Processing

logger = logging.getLogger(__name__)


class _PositionMovedBack(Exception):  # noqa: N818 - a signal, not an error
    """A claim found the position below what this process knows was processed: the
    follower was reset (its reset table dropped). The pull starts again after it."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


class ClaimingFollower:
    """Mixin for eventsourcing followers (``ProcessApplication`` and ``Follower``
    subclasses): put it first among the bases.

    With a recorder of another persistence module (for example ``eventsourcing.popo`` in
    unit tests) it leaves processing to the library unchanged.
    """

    #: Replay notifications that another process processed into this process's policy,
    #: with their database writes rolled back, so that state the follower keeps in memory
    #: is complete. Costs one rolled-back transaction per notification per other process.
    #: Set it to False on followers whose policies act outside the database (send mail,
    #: call services), which a replay would repeat, or that keep no state in memory.
    replay_processed_elsewhere: ClassVar[bool] = True

    #: How long (seconds) a pull of an upstream in concurrent mode waits for the appends
    #: in flight when it ended (a committed id above one of them is not readable yet).
    #: After that the next prompt catches up; a warning says so.
    horizon_wait: ClassVar[float] = 10.0

    recorder: Any
    processing_lock: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per upstream application: the highest position known to be committed by some
        # processor (positions only move forward, so a notification at or below it needs
        # no claim), and, when replaying, the last notification this process's policy has
        # seen (where its next pull starts).
        self._processed_positions: dict[str, int] = {}
        self._seen_positions: dict[str, int] = {}
        if self._claims:
            # It records positions under a claim only: a recorded one is an error.
            self.recorder.tolerate_recorded_positions = False

    @property
    def _claims(self) -> bool:
        return isinstance(self.recorder, BiomeroProcessRecorder)

    @property
    def processing_session(self) -> Session:
        """The session of the notification being processed: a policy reads and writes its
        read model with it. With a scoped session it is also what the scoped session
        returns while the policy runs. Its commits, rollbacks and closes stay inside the
        processing transaction."""
        processing: Processing | None = (
            self.recorder.datastore.current_processing() if self._claims else None
        )
        session = None if processing is None else processing.session
        if session is None:
            msg = "processing_session is only available while a policy runs"
            raise ProgrammingError(msg)
        return session

    def follow(self, name: str, log: NotificationLog) -> None:
        super().follow(name, log)  # type: ignore[misc]
        if self._claims and self.replay_processed_elsewhere:
            # What this process's policy will see starts here: what is processed now.
            self._seen_positions[name] = self.recorder.max_tracking_id(name) or 0

    def pull_and_process(
        self, leader_name: str, start: int | None = None, stop: int | None = None
    ) -> None:
        self._pull(leader_name, start, stop)
        if stop is None and self._claims and self._wait_for_ids_in_flight(leader_name):
            self._pull(leader_name, None, None)

    def _pull(self, leader_name: str, start: int | None, stop: int | None) -> None:
        if start is None and leader_name in self._seen_positions:
            # From where this process's policy left off, not from the shared position:
            # what other processes processed meanwhile is replayed, not skipped.
            start = self._seen_positions[leader_name]
        while True:
            try:
                super().pull_and_process(leader_name, start=start, stop=stop)  # type: ignore[misc]
                return
            except _PositionMovedBack as moved:
                # Positions only move back by a reset: what lies above the new position is
                # unprocessed, and is processed in order, from there, by whoever claims it.
                logger.warning(
                    "%s: its position on %r was reset to %d; processing again from there",
                    type(self).__name__,
                    leader_name,
                    moved.position,
                )
                self._processed_positions[leader_name] = moved.position
                if leader_name in self._seen_positions:
                    self._seen_positions[leader_name] = moved.position
                start = moved.position

    def _wait_for_ids_in_flight(self, leader_name: str) -> bool:
        """Waits until the upstream's horizon reaches every id handed out when the pull
        ended; True when it moved past what the pull could read (pull again)."""
        target = self.recorder.last_taken_id(leader_name)
        horizon = self.recorder.horizon(leader_name)
        if target is None or horizon is None or horizon >= target:
            return False
        deadline = time.monotonic() + self.horizon_wait
        pause = 0.005
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
            horizon = self.recorder.horizon(leader_name)
            if horizon is None or horizon >= target:
                return True
        logger.warning(
            "%s: notifications of %r up to %d were still in flight after %.1f s (see "
            "biomero.appends_in_flight); the next prompt processes what commits of them",
            type(self).__name__,
            leader_name,
            target,
            self.horizon_wait,
        )
        return True

    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        if not self._claims:
            super().process_event(domain_event, tracking)  # type: ignore[misc]
            return
        upstream = tracking.application_name
        notification_id = tracking.notification_id
        replaying = self.replay_processed_elsewhere
        with self.processing_lock:
            if replaying and notification_id <= self._seen_positions.get(upstream, 0):
                return  # this process's policy has seen it already
            if notification_id <= self._processed_positions.get(upstream, 0):
                if replaying:
                    self._replay(domain_event, tracking)
                return
            self._process(domain_event, tracking)

    def _process(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        upstream = tracking.application_name
        processing_event: ProcessingEvent[Any] = ProcessingEvent(tracking=tracking)
        recordings: list[Recording[Any]] = []
        with self.recorder.datastore.processing_transaction() as processing:
            position = self.recorder.claim(upstream)
            known = max(
                self._processed_positions.get(upstream, 0), self._seen_positions.get(upstream, 0)
            )
            if position < known:
                processing.discard()
                raise _PositionMovedBack(position)
            if tracking.notification_id <= position:
                # Processed by another process (or earlier by this one).
                self._remember(upstream, position)
                processing.discard()
                if self.replay_processed_elsewhere:
                    self._replay_in(processing, domain_event, tracking)
                return
            with processing.policy_session():
                self.policy(domain_event, processing_event)  # type: ignore[attr-defined]
            recordings = self._record(processing_event)  # type: ignore[attr-defined]
            self._take_snapshots(processing_event)  # type: ignore[attr-defined]
        self._remember(upstream, tracking.notification_id)
        self._seen(upstream, tracking.notification_id)
        self.notify(processing_event.events)  # type: ignore[attr-defined]
        self._notify(recordings)  # type: ignore[attr-defined]

    def _replay(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        with self.recorder.datastore.processing_transaction() as processing:
            processing.discard()
            self._replay_in(processing, domain_event, tracking)

    def _replay_in(
        self, processing: Processing, domain_event: DomainEventProtocol[Any], tracking: Tracking
    ) -> None:
        """Runs the policy in a processing transaction that will be rolled back; its new
        events are dropped."""
        try:
            with processing.policy_session():
                self.policy(domain_event, ProcessingEvent(tracking=tracking))  # type: ignore[attr-defined]
        except Exception:
            # The notification was processed for real elsewhere: the error is logged, not
            # raised into the command that prompted this pull, and the pull goes on.
            logger.exception(
                "%s: the replay of notification %d of %r (processed by another process) "
                "failed; its database writes were rolled back",
                type(self).__name__,
                tracking.notification_id,
                tracking.application_name,
            )
        self._seen(tracking.application_name, tracking.notification_id)

    def _remember(self, upstream: str, position: int) -> None:
        if position > self._processed_positions.get(upstream, 0):
            self._processed_positions[upstream] = position

    def _seen(self, upstream: str, notification_id: int) -> None:
        if upstream in self._seen_positions:
            self._seen_positions[upstream] = max(self._seen_positions[upstream], notification_id)


class ProcessApplication(ClaimingFollower, _LibraryProcessApplication[Any]):
    """``eventsourcing.system.ProcessApplication`` that processes each notification
    exactly once across processes (see :class:`ClaimingFollower`)."""
