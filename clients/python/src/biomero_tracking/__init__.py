"""eventsourcing persistence on the biomero_tracking PostgreSQL extension.

Set ``PERSISTENCE_MODULE=biomero_tracking`` and either ``SQLALCHEMY_URL`` or
``SQLALCHEMY_SCOPED_SESSION_TOPIC``; derive followers from :class:`ProcessApplication`
(or add :class:`ClaimingFollower` to your own follower class) so that processes running the
same follower process every notification exactly once.
"""

from importlib.metadata import version

from biomero_tracking.datastore import Datastore, Processing
from biomero_tracking.factory import BiomeroFactory
from biomero_tracking.follower import ClaimingFollower, ProcessApplication
from biomero_tracking.recorders import (
    NOTIFY_CHANNEL,
    BiomeroAggregateRecorder,
    BiomeroApplicationRecorder,
    BiomeroProcessRecorder,
    BiomeroSubscription,
    BiomeroTrackingRecorder,
)

# eventsourcing looks for exactly one infrastructure factory class in this module.
Factory = BiomeroFactory

__all__ = [
    "NOTIFY_CHANNEL",
    "BiomeroAggregateRecorder",
    "BiomeroApplicationRecorder",
    "BiomeroFactory",
    "BiomeroProcessRecorder",
    "BiomeroSubscription",
    "BiomeroTrackingRecorder",
    "ClaimingFollower",
    "Datastore",
    "Factory",
    "ProcessApplication",
    "Processing",
]

__version__ = version("biomero-tracking")
