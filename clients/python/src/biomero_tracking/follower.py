"""Exactly-once processing for followers run by several processes at once.

Every process of a system pulls the *shared* notification log after the *shared* tracking
position, so two processes can pull the same notification. :class:`ClaimingFollower`
processes each notification in a transaction of its own that first claims the
(follower, upstream) pair with ``biomero.claim``. The claim is held to commit, so the
processors of one follower take turns; the position it returns is the one the previous
holder committed. A notification at or below it was processed elsewhere and is skipped
before the policy runs. Otherwise the policy runs, its read-model writes go into the same
transaction, and the follower's new events and its tracking position are recorded with one
``biomero.record_events`` call before the commit. Nothing is processed twice and no
tracking IntegrityError reaches the application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import ProgrammingError
from eventsourcing.system import ProcessApplication as _LibraryProcessApplication

from biomero_tracking.recorders import BiomeroProcessRecorder

if TYPE_CHECKING:
    from eventsourcing.domain import DomainEventProtocol
    from eventsourcing.persistence import Recording, Tracking
    from sqlalchemy.orm import Session


class ClaimingFollower:
    """Mixin for eventsourcing followers (``ProcessApplication``, ``Follower``,
    ``EventSourcedProjection`` subclasses): put it first among the bases.

    With a recorder of another persistence module (for example ``eventsourcing.popo`` in
    unit tests) it leaves processing to the library unchanged.
    """

    recorder: Any
    processing_lock: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Highest upstream position known to be processed, per upstream application.
        # Positions only move forward, so a notification at or below it is skipped
        # without a round trip.
        self._processed_positions: dict[str, int] = {}

    @property
    def processing_session(self) -> Session:
        """The session of the notification being processed: a policy does its read-model
        reads and writes with it (with a scoped session this is the scoped session). It
        must not commit, roll back or close it."""
        recorder = self.recorder
        session = (
            recorder.datastore.current_session()
            if isinstance(recorder, BiomeroProcessRecorder)
            else None
        )
        if session is None:
            msg = "processing_session is only available while a policy runs"
            raise ProgrammingError(msg)
        return session

    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        recorder = self.recorder
        if not isinstance(recorder, BiomeroProcessRecorder):
            super().process_event(domain_event, tracking)  # type: ignore[misc]
            return
        upstream = tracking.application_name
        with self.processing_lock:
            if tracking.notification_id <= self._processed_positions.get(upstream, 0):
                return
            processing_event: ProcessingEvent[Any] = ProcessingEvent(tracking=tracking)
            recordings: list[Recording[Any]] = []
            with recorder.datastore.processing_transaction() as session:
                position = recorder.claim(session, upstream)
                if tracking.notification_id <= position:
                    # Already processed by another process (or earlier by this one).
                    self._remember(upstream, position)
                    return
                transaction = session.get_transaction()
                self.policy(domain_event, processing_event)  # type: ignore[attr-defined]
                if session.get_transaction() is not transaction:
                    msg = (
                        f"the policy of {type(self).__name__} ended the processing "
                        "transaction (a commit, rollback or close inside a policy): that "
                        "releases the claim before the tracking position is recorded; "
                        "leave committing to biomero_tracking"
                    )
                    raise ProgrammingError(msg)
                recordings = self._record(processing_event)  # type: ignore[attr-defined]
                self._take_snapshots(processing_event)  # type: ignore[attr-defined]
            self._remember(upstream, tracking.notification_id)
            self.notify(processing_event.events)  # type: ignore[attr-defined]
            self._notify(recordings)  # type: ignore[attr-defined]

    def _remember(self, upstream: str, position: int) -> None:
        if position > self._processed_positions.get(upstream, 0):
            self._processed_positions[upstream] = position


class ProcessApplication(ClaimingFollower, _LibraryProcessApplication[Any]):
    """``eventsourcing.system.ProcessApplication`` that processes each notification
    exactly once across processes (see :class:`ClaimingFollower`)."""
