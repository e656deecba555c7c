"""A small domain for the adoption and follower tests: things, and a follower's record of
having seen each of their events."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Thing(Aggregate):
    class Created(Aggregate.Created):
        label: str

    @event(Created)
    def __init__(self, label: str) -> None:
        self.label = label

    class Renamed(Aggregate.Event):
        label: str

    @event(Renamed)
    def rename(self, label: str) -> None:
        self.label = label


class Seen(Aggregate):
    """The follower's own event per processed notification; its id follows from the
    notification, so processing one twice would raise IntegrityError."""

    class Created(Aggregate.Created):
        thing_id: UUID
        version: int

    @event(Created)
    def __init__(self, thing_id: UUID, version: int) -> None:
        self.thing_id = thing_id
        self.version = version

    @staticmethod
    def create_id(thing_id: UUID, version: int) -> UUID:
        return uuid5(NAMESPACE_URL, f"/seen/{thing_id}/{version}")


class Tracker(Application):
    def create(self, label: str) -> UUID:
        thing = Thing(label)
        self.save(thing)
        return thing.id

    def rename(self, thing_id: UUID, label: str) -> None:
        thing: Thing = self.repository.get(thing_id)
        thing.rename(label)
        self.save(thing)
